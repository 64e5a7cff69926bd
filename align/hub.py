"""Push a finished run's ``final/`` model to the Hugging Face Hub, with a model card generated from the run's records.

    python -m align.hub outputs/runs/<date>/<time> --repo-id you/mio-tiny --dry-run   # write final/README.md only
    python -m align.hub outputs/runs/<date>/<time> --repo-id you/mio-tiny             # ... and push final/

Training never pushes anything (off by default): this is a separate, explicit step. The card is built from the run
folder's own files only: ``config.yaml`` (model, method and its hyperparameters, data, trainer settings),
``results.json`` (status, steps, the final train and held-out metrics) and each ``eval/<preset>/summary.json``.
A token comes from ``HF_TOKEN`` or ``huggingface-cli login``, as for any hub upload.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

PAPER = "https://arxiv.org/abs/2506.22578"
HEADLINE_METRICS = ("loss", "rewards/accuracies", "rewards/margins", "mi/dv", "mi/js")


def _hub_name(value: str | None) -> str | None:
    """``value`` when it names a hub repository ("org/name", not a local path), else None."""
    if not value or value.startswith((".", "/", "~")) or Path(value).expanduser().exists():
        return None
    return value if value.count("/") == 1 else None


def _read_run(run_dir: Path) -> tuple[dict, dict, dict[str, dict]]:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    summaries = {
        p.parent.name: json.loads(p.read_text()) for p in sorted((run_dir / "eval").glob("*/summary.json"))
    }
    return config, results, summaries


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} |" for a, b in rows])


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"


def model_card(run_dir: Path, repo_id: str = "<this repo>") -> str:
    """The README.md of ``run_dir``'s final model: hub metadata (front matter), what was trained and how, its
    final metrics and benchmark scores, how to load it."""
    config, results, summaries = _read_run(run_dir)
    method, model, data, trainer = config["method"], config["model"], config["dataset"], config["trainer"]
    base, dataset = _hub_name(model.get("name_or_path")), _hub_name(data.get("path"))
    meta = {
        "library_name": "transformers",
        "tags": ["mio-repro", "preference-optimization", method["name"]],
        **({"base_model": base} if base else {}),
        **({"datasets": [dataset]} if dataset else {}),
    }
    hyper = {k: v for k, v in method.items() if k != "name"}
    rows = [
        ("method", f"`{method['name']}` ({', '.join(f'{k}={v}' for k, v in hyper.items())})"),
        ("start model", f"`{model.get('name_or_path')}`"),
        ("data", f"`{data.get('path')}`" + (f" (`{data['name']}`)" if data.get("name") else "")),
        ("optimizer steps", str(results.get("steps"))),
        ("learning rate", f"{trainer.get('learning_rate')} ({trainer.get('lr_scheduler')})"),
        (
            "pairs per step",
            str(
                trainer.get("per_device_train_batch_size", 0) * trainer.get("gradient_accumulation_steps", 1)
            ),
        ),
        ("seed", str(config.get("seed"))),
        ("status", str(results.get("status"))),
    ]
    metrics = [
        (
            name,
            f"{_number((results.get('train') or {}).get(name))} / {_number((results.get('eval') or {}).get(name))}",
        )
        for name in HEADLINE_METRICS
    ]
    parts = [
        "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---",
        f"# {method['name'].upper()} preference training of {base or Path(str(model.get('name_or_path'))).name}",
        f"Trained with the MIO reproduction (mio-repro) of *The Hidden Link Between RLHF and Contrastive Learning* "
        f"([arXiv 2506.22578]({PAPER})). This card was generated from the run's own records "
        f"(`config.yaml`, `results.json`, evaluation summaries); nothing in it was typed by hand.",
        "## Training\n\n" + _table(rows, ("setting", "value")),
        "## Final metrics (train window / held-out split)\n\n"
        + _table(metrics, ("metric", "train / held-out")),
    ]
    for preset, summary in summaries.items():
        scores = [(name, _number(score)) for name, score in (summary.get("scores") or {}).items()]
        scores.append(("average", _number(summary.get("average"))))
        note = (
            " (local mini copies: pipeline checks, not benchmark results)"
            if summary.get("local_data")
            else ""
        )
        parts.append(f"## Benchmarks: `{preset}`{note}\n\n" + _table(scores, ("benchmark", "score")))
    parts.append(
        "## Use\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n```'
    )
    return "\n\n".join(parts) + "\n"


def push(run_dir: str | Path, repo_id: str, private: bool = False, dry_run: bool = False, api=None) -> Path:
    """Write ``final/README.md`` (the model card) of a completed run and, unless ``dry_run``, upload ``final/``
    to ``repo_id`` (created if missing). Returns the card's path."""
    run_dir = Path(run_dir)
    final = run_dir / "final"
    results = json.loads((run_dir / "results.json").read_text())
    if results.get("status") != "completed" or not (final / "config.json").is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no completed run with a final/ model (status {results.get('status')!r})"
        )
    card = final / "README.md"
    card.write_text(model_card(run_dir, repo_id))
    if dry_run:
        return card
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(final), repo_id=repo_id, commit_message=f"mio-repro run {run_dir.name}")
    return card


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished run folder (holds results.json and final/)")
    p.add_argument("--repo-id", required=True, help="the hub repository, e.g. you/mio-tiny")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--dry-run", action="store_true", help="write final/README.md, push nothing")
    args = p.parse_args(argv)
    card = push(args.run_dir, args.repo_id, args.private, args.dry_run)
    print(
        f"model card: {card}" + ("" if args.dry_run else f"; pushed to https://huggingface.co/{args.repo_id}")
    )


if __name__ == "__main__":
    main()
