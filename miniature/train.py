"""``make train``: one training run through the real CLI (``align/run.py``), then the numbers before and after it.

    python -m miniature.train                       # the defaults: MIO from the miniature SFT model on its pairs
    python -m miniature.train method=dpo seed=1     # any align/run.py override

The run's own evaluation (``evaluate.benchmarks``) scores the final model; this adds the starting model on the
same benchmarks (eval/'s cache makes that free after the first time), with each benchmark's parts (the miniature's
families) before and after, and, on the held-out pairs, the fraction whose
chosen answer the model finds more likely than the rejected one (summed log-probs), before and after. The reward
accuracy the run logs is 0 before training by construction (policy = reference: every reward is 0). Written to
``<run>/before_after.json`` and printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def likelihood_pair_accuracy(model_dir: str, split, pad_id: int, batch_size: int = 64) -> float:
    """Fraction of pairs of ``split`` (a tokenized Split) where log p(chosen) > log p(rejected), summed over tokens."""
    from transformers import AutoModelForCausalLM

    from align.logprobs import sequence_logps
    from align.preference_data import collate

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ds, wins = split.dataset, 0
    for start in range(0, len(ds), batch_size):
        rows = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        batch = collate(rows, pad_id)
        out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        b = len(rows)
        wins += int((out.sums[:b] > out.sums[b:]).sum())
    return wins / max(len(ds), 1)


def parts(preset_dir: str | Path) -> dict[str, dict[str, float]]:
    """Per benchmark of an evaluated preset folder (``<eval>/<preset>/``), its per-part scores (the miniature's
    families, ``exact_match_<family>``); benchmarks without parts are left out."""
    from analysis.collect import sub_scores

    preset_dir = Path(preset_dir)
    summary = json.loads((preset_dir / "summary.json").read_text())
    out = {}
    for name, entry in (summary.get("benchmarks") or {}).items():
        record = preset_dir / (entry.get("file") or f"{name}.json")
        found = sub_scores(json.loads(record.read_text())) if record.exists() else {}
        if found:
            out[name] = found
    return out


def compare(run_dir: str | Path) -> dict:
    """The starting and final model of a finished run: benchmark scores and held-out pair accuracies."""
    from align.config import register_configs
    from align.models import load_tokenizer, prepare_model_source
    from align.preference_data import load_preference_data
    from eval.config import checkpoint_slug
    from eval.harness import evaluate_checkpoint

    register_configs()
    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    results = json.loads((run_dir / "results.json").read_text())
    start_dir = prepare_model_source(cfg.model)
    final_dir = results["final_model"]
    out = {"run": str(run_dir), "start_model": start_dir, "final_model": final_dir}
    preset = cfg.evaluate.benchmarks
    if preset:
        base_dir = Path(cfg.paths.log_dir) / "eval" / checkpoint_slug(start_dir)
        base = evaluate_checkpoint(start_dir, preset, str(base_dir), tuple(cfg.evaluate.overrides))
        after = results.get("evaluation") or {}
        name = base.get("preset", preset)
        out["benchmarks"] = {
            "preset": name,
            "before": base.get("scores"),
            "after": after.get("scores"),
            "average_before": base.get("average"),
            "average_after": after.get("average"),
            "parts_before": parts(base_dir / name),
            # the run's own folder: results.json's evaluation.summary names the preset file, not benchmarks.name
            "parts_after": parts(run_dir / "eval" / name) if (run_dir / "eval" / name).exists() else {},
        }
    tokenizer = load_tokenizer(cfg.model)
    data = load_preference_data(cfg.dataset, tokenizer, cfg.seed)
    if data.eval is not None:
        out["held_out_pairs"] = {
            "n": len(data.eval.dataset),
            "likelihood_accuracy_before": likelihood_pair_accuracy(
                start_dir, data.eval, tokenizer.pad_token_id
            ),
            "likelihood_accuracy_after": likelihood_pair_accuracy(
                final_dir, data.eval, tokenizer.pad_token_id
            ),
            "reward_accuracy_after": results["eval"].get("rewards/accuracies"),
            "chosen_logp_change_per_token": results["eval"].get("displacement/chosen_per_token"),
        }
    (run_dir / "before_after.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def describe(out: dict) -> str:
    lines = [f"run: {out['run']}", f"start: {out['start_model']}"]
    bench = out.get("benchmarks")
    if bench:
        lines.append(f"benchmarks ({bench['preset']}), before -> after training:")
        for name, before in (bench["before"] or {}).items():
            after = (bench["after"] or {}).get(name)
            fmt = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
            lines.append(f"  {name:12s} {fmt(before):>6s} -> {fmt(after):>6s}")
            parts_after = (bench.get("parts_after") or {}).get(name) or {}
            for part, value in ((bench.get("parts_before") or {}).get(name) or {}).items():
                lines.append(f"    {part:10s} {fmt(value):>6s} -> {fmt(parts_after.get(part)):>6s}")
    pairs = out.get("held_out_pairs")
    if pairs:
        lines.append(
            f"held-out pairs (n={pairs['n']}): log p(chosen) > log p(rejected) "
            f"{pairs['likelihood_accuracy_before']:.3f} -> {pairs['likelihood_accuracy_after']:.3f}; "
            f"reward accuracy 0 -> {pairs['reward_accuracy_after']:.3f}; chosen log-prob "
            f"{pairs['chosen_logp_change_per_token']:+.3f} nats/token against the start"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(o.startswith(("-m", "--multirun")) for o in overrides):
        raise SystemExit("python -m miniature.train runs one job; for sweeps use align/run.py -m")
    run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")), None)
    if run_dir is None:
        from align.config import compose

        log_dir = compose(["output_dir=unused", *overrides]).paths.log_dir
        run_dir = str(Path(log_dir) / "runs" / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S"))
        overrides.append(f"hydra.run.dir={run_dir}")
    start = time.perf_counter()
    code = subprocess.run([sys.executable, str(REPO / "align" / "run.py"), *overrides], cwd=REPO).returncode
    if code:
        return code
    out = compare(run_dir)
    print(describe(out))
    print(f"({time.perf_counter() - start:.0f} s, written to {Path(run_dir) / 'before_after.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
