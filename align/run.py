"""Preference training entry point (Hydra).

    python align/run.py                                  # MIO on the tiny local model and bundled data (CPU)
    python align/run.py method=dpo trainer.max_steps=50  # another method, fewer steps
    python align/run.py -m method=mio,dpo,nca_pair       # a sweep: one run folder per job
    python align/run.py experiment=zephyr_dpo            # a recipe (conf/experiment/)

``run(cfg)`` is importable: tests and other entry points call it on a composed config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from align import distributed as dist
from align.config import CONF_DIR, REPO_ROOT, register_configs, to_container
from align.losses import get_method
from align.records import environment, read_json, write_json

log = logging.getLogger("align")

# Keys that change how a run is carried out, not what it computes.
RUNTIME_KEYS = ("output_dir", "resume", "skip_if_complete", "distributed", "evaluate")


def config_digest(resolved: dict) -> str:
    """Hash of the resolved config without runtime keys: two runs with the same digest compute the same thing."""
    return hashlib.sha256(
        json.dumps(_comparable(resolved), sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def validate(cfg: DictConfig) -> dict:
    """Fail early with the key named: missing values, unknown method. Returns the resolved config."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(
            f"config values required but missing (set them on the command line): {', '.join(missing)}"
        )
    get_method(cfg.method.name)
    resolved = to_container(cfg)
    if not resolved["output_dir"]:
        raise ValueError("output_dir is not set (outside a Hydra run, set output_dir=...)")
    return resolved


def run(cfg: DictConfig) -> dict:
    """Train one configuration into ``cfg.output_dir`` and return its results (also written to results.json).

    With ``distributed.launcher`` set, this process writes the config and starts the ranks (align/launch.py);
    otherwise it trains itself.
    """
    from align import launch

    resolved = validate(cfg)
    out = Path(cfg.output_dir)
    digest = config_digest(resolved)
    previous = _previous_results(out, digest, resolved)
    parent = cfg.distributed.launcher != "none" and not launch.in_worker()
    node0 = not parent or launch.topology(cfg.distributed)["node_rank"] == 0
    if previous is not None and cfg.skip_if_complete:
        log.info("%s: training already completed (skip_if_complete=true)", out)
        results = previous
    else:
        if dist.is_main() and node0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
            write_json(out / "env.json", environment(REPO_ROOT))
        if not parent:
            results = train_here(cfg)
        else:
            launch.launch(cfg.distributed, out / "config.yaml")
            results = read_json(out / "results.json") if node0 else {}
    if cfg.evaluate.benchmarks and dist.is_main() and node0:
        results = evaluate_final_model(cfg, results)
    return results


def evaluate_final_model(cfg: DictConfig, results: dict) -> dict:
    """Run the configured benchmark preset on ``final/`` (cached by eval/: a rerun computes nothing) and record
    its summary in results.json."""
    from eval.harness import evaluate_checkpoint

    if not results.get("final_model"):
        raise ValueError(
            "evaluate.benchmarks is set but the run saved no final model (trainer.save_final=false)"
        )
    out = Path(cfg.output_dir)
    summary = evaluate_checkpoint(
        results["final_model"], cfg.evaluate.benchmarks, str(out / "eval"), tuple(cfg.evaluate.overrides)
    )
    results = results | {
        "evaluation": {
            "preset": cfg.evaluate.benchmarks,
            "summary": str(out / "eval" / cfg.evaluate.benchmarks / "summary.json"),
            "scores": summary.get("scores"),
            "average": summary.get("average"),
        }
    }
    if results != read_json(out / "results.json"):
        write_json(out / "results.json", results)
    return results


def _previous_results(out: Path, digest: str, resolved: dict) -> dict | None:
    """The results of a completed run in ``out``; an error naming the keys if that run computed something else.

    Keys the old run's config.yaml lacks (added to the schema since, at defaults that keep old behaviour) do not
    count as differences, so a config schema that grows does not orphan finished runs."""
    results_file = out / "results.json"
    if not results_file.exists():
        return None
    previous = read_json(results_file)
    if previous.get("status") != "completed" or previous.get("config_digest") == digest:
        return previous if previous.get("status") == "completed" else None
    old_file = out / "config.yaml"
    old = OmegaConf.to_container(OmegaConf.load(old_file)) if old_file.exists() else {}
    changed = [k for k in _differences(_comparable(old), _comparable(resolved)) if k]
    if changed or not old:
        raise FileExistsError(
            f"{out} holds a completed run of a different config ({', '.join(changed[:8]) or 'no config.yaml'} "
            "differ); choose another output folder (hydra.run.dir=...)"
        )
    return previous


def _comparable(resolved: dict) -> dict:
    body = {k: v for k, v in resolved.items() if k not in RUNTIME_KEYS and k != "paths"}
    body["trainer"] = {
        k: v for k, v in body.get("trainer", {}).items() if k not in ("progress_bar", "cpu_threads")
    }
    return body


def _differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, ignoring keys present only in ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in old.keys() | new.keys()
            if k in old
            for d in _differences(old[k], new.get(k), f"{prefix}{k}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


def train_here(cfg: DictConfig) -> dict:
    """Train in this process (one of the ranks, or the only one); rank 0 writes results.json either way."""
    from align.trainer import TrainingInterrupted, train

    out = Path(cfg.output_dir)
    results_file = out / "results.json"
    start = time.time()
    base = {
        "config_digest": config_digest(to_container(cfg)),
        "method": cfg.method.name,
        "model": cfg.model.name_or_path,
        "seed": cfg.seed,
        "world_size": dist.world_size(),
    }
    try:
        results = train(cfg, out)
    except BaseException as e:
        if dist.is_main():
            write_json(
                results_file,
                base
                | {
                    "status": "interrupted" if isinstance(e, TrainingInterrupted) else "failed",
                    "error": f"{type(e).__name__}: {e}",
                    "wall_seconds": time.time() - start,
                },
            )
        raise
    results = base | {"status": "completed", "wall_seconds": time.time() - start} | results
    if dist.is_main():
        write_json(results_file, results)
        log.info(
            "done in %.1f s: eval %s",
            results["wall_seconds"],
            {k: round(v, 4) for k, v in results["eval"].items() if k in ("loss", "rewards/accuracies")},
        )
    return results


def main() -> None:
    import hydra

    register_configs()
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(run)()


if __name__ == "__main__":
    main()
