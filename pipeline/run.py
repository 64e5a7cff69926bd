"""Train one configuration, then evaluate its final model: what ``python align/run.py`` does.

``run(cfg)`` is importable (tests and other entry points call it on a composed config). Training and its folder are
``align.run_folder``; the evaluation is eval/'s (``eval.harness``), run on ``final/`` with the results cached in
``<output_dir>/eval`` and summarised in results.json. Settings that would fail after training fail before it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from align import run_folder
from align.config import ConfigValueError
from common.records import read_json, shown_path, write_json


def validate(cfg: DictConfig) -> dict:
    """The training config's checks (``align.run_folder.validate``) and the evaluation's; the resolved config."""
    resolved = run_folder.validate(cfg)
    check_evaluation(cfg)
    return resolved


def run(cfg: DictConfig) -> dict:
    """Train ``cfg`` into ``cfg.output_dir`` (or reuse a completed run of it), then evaluate its final model if
    ``evaluate.benchmarks`` is set; return the results (also in results.json)."""
    validate(cfg)
    then = (lambda results: evaluate_final_model(cfg, results)) if cfg.evaluate.benchmarks else None
    return run_folder.train_in_folder(cfg, then)


def check_evaluation(cfg: DictConfig) -> None:
    """Compose the evaluation that runs after training and apply eval/'s own checks (unsafe code, preset, overrides)
    now, so that a setting that cannot run fails before training rather than after it."""
    if not cfg.evaluate.benchmarks:
        return
    if not cfg.trainer.save_final:
        raise ConfigValueError("evaluate.benchmarks is set but trainer.save_final=false: nothing to evaluate")
    from eval.config import compose
    from eval.harness import check, preset_benchmarks

    overrides = [f"benchmarks={cfg.evaluate.benchmarks}", *cfg.evaluate.overrides]
    try:
        eval_cfg = compose(overrides)
        check(eval_cfg, preset_benchmarks(eval_cfg))
    except Exception as e:  # noqa: BLE001 - re-raised naming the training config's keys
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigValueError(
            f"evaluate.benchmarks={cfg.evaluate.benchmarks} evaluate.overrides={list(cfg.evaluate.overrides)}: "
            f"{reason}"
        ) from e


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
    # the folder as eval/ wrote it: benchmarks.name may rename it
    written = summary.get("preset") or cfg.evaluate.benchmarks
    results = results | {
        "evaluation": {
            "preset": cfg.evaluate.benchmarks,
            "summary": shown_path(out / "eval" / written / "summary.json"),
            "scores": summary.get("scores"),
            "average": summary.get("average"),
        }
    }
    if results != read_json(out / "results.json"):
        write_json(out / "results.json", results)
    return results
