"""Preference training entry point (Hydra).

    python align/run.py                                  # MIO on the tiny local model and bundled data (CPU)
    python align/run.py method=dpo trainer.max_steps=50  # another method, fewer steps
    python align/run.py -m method=mio,dpo,nca_pair       # a sweep: one run folder per job
    python align/run.py experiment=zephyr_dpo            # a recipe (conf/experiment/)

``run(cfg)`` is importable: tests and other entry points call it on a composed config.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from align import distributed as dist
from align.checkpoint import list_checkpoints
from align.config import CONF_DIR, REPO_ROOT, ConfigValueError, check_values, register_configs, to_container
from align.losses import get_method
from align.records import environment, read_json, write_json, write_text_atomic

log = logging.getLogger("align")

# Keys that change how a run is carried out, not what it computes: they may differ when a run is resumed.
RUNTIME_KEYS = ("output_dir", "resume", "skip_if_complete", "distributed", "evaluate")
RUNTIME_TRAINER_KEYS = ("progress_bar", "cpu_threads", "tensorboard", "save_steps", "save_total_limit")
# What a run writes into its folder besides config.yaml and env.json (removed when a finished run is redone).
RUN_OUTPUTS = ("checkpoints", "final", "tb", "metrics.jsonl", "results.json")
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"  # =1: errors print their full traceback (Hydra's own switch)


class RunFolderError(FileExistsError):
    """The run folder holds another run, or is in use: nothing was changed in it."""


def config_digest(resolved: dict) -> str:
    """Hash of the resolved config without runtime keys: two runs with the same digest compute the same thing."""
    return hashlib.sha256(
        json.dumps(_comparable(resolved), sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def validate(cfg: DictConfig) -> dict:
    """Fail before anything is loaded, with the key named: missing values, unknown method, values that cannot work
    (``align.config.check_values``), evaluation settings that would fail after training. Returns the resolved
    config."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigValueError(
            f"config values required but missing (set them on the command line): {', '.join(missing)}"
        )
    get_method(cfg.method.name)
    check_values(cfg)
    resolved = to_container(cfg)
    if not resolved["output_dir"]:
        raise ConfigValueError("output_dir is not set (outside a Hydra run, set output_dir=...)")
    check_evaluation(cfg)
    return resolved


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


def run(cfg: DictConfig) -> dict:
    """Train one configuration into ``cfg.output_dir`` and return its results (also written to results.json).

    With ``distributed.launcher`` set, this process writes the config and starts the ranks (align/launch.py);
    otherwise it trains itself.
    """
    from align import launch

    resolved = validate(cfg)
    out = Path(cfg.output_dir)
    digest = config_digest(resolved)
    parent = cfg.distributed.launcher != "none" and not launch.in_worker()
    node0 = not parent or launch.topology(cfg.distributed)["node_rank"] == 0
    owner = dist.is_main() and node0  # the one process that writes the folder's files
    with folder_lock(out) if owner else contextlib.nullcontext():
        previous = _previous_results(out, digest, resolved)
        if previous is not None and cfg.skip_if_complete:
            log.info("%s: training already completed (skip_if_complete=true)", out)
            results = previous
        else:
            if owner:
                claim_folder(out, resolved, resume=cfg.resume, completed=previous is not None)
                write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
                write_json(out / "env.json", environment(REPO_ROOT))
            if not parent:
                results = train_here(cfg)
            else:
                launch.launch(cfg.distributed, out / "config.yaml")
                results = read_json(out / "results.json") if node0 else {}
        if cfg.evaluate.benchmarks and owner:
            results = evaluate_final_model(cfg, results)
    return results


@contextlib.contextmanager
def folder_lock(out: Path):
    """Hold ``<out>/.lock`` (an OS file lock: a killed holder releases it) for the run; a second run in the same
    folder fails at once instead of interleaving checkpoints and metrics."""
    from filelock import FileLock, Timeout

    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(
            f"{out} is in use by another run (it holds {out / '.lock'}); wait for it or choose another folder"
        ) from None
    try:
        yield
    finally:
        lock.release()


def claim_folder(out: Path, resolved: dict, resume: bool, completed: bool) -> None:
    """Check that ``out`` may hold this run before anything is written to it.

    ``resume=true``: the folder's config.yaml must compute the same thing (only runtime keys may differ), else the
    differing keys are named. A fresh run: checkpoints of an unfinished earlier run are refused (they would outrank
    this run's own under save_total_limit and be picked up by a later resume); a completed run redone with
    ``skip_if_complete=false`` has its outputs removed first."""
    old_file = out / "config.yaml"
    checkpoints = list_checkpoints(out / "checkpoints")
    if resume:
        if old_file.exists():
            old = OmegaConf.to_container(OmegaConf.load(old_file))
            changed = sorted(k for k in _differences(_comparable(old), _comparable(resolved)) if k)
            if changed:
                raise RunFolderError(
                    f"{out}: resume=true, but this config differs from the run's config.yaml in "
                    f"{', '.join(changed[:8])}{' ...' if len(changed) > 8 else ''}; resume with the run's settings "
                    "or train into another folder (hydra.run.dir=...)"
                )
        elif checkpoints:
            raise RunFolderError(f"{out}: checkpoints but no config.yaml to check this config against")
        return
    if completed:
        log.info("%s: redoing a completed run (skip_if_complete=false): removing its outputs", out)
        for name in RUN_OUTPUTS:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    elif checkpoints:
        raise RunFolderError(
            f"{out} holds checkpoints of an earlier run (newest {checkpoints[-1].name}); continue it with "
            "resume=true, or train into another folder (hydra.run.dir=...)"
        )


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
        raise RunFolderError(
            f"{out} holds a completed run of a different config ({', '.join(changed[:8]) or 'no config.yaml'} "
            "differ); choose another output folder (hydra.run.dir=...)"
        )
    return previous


def _comparable(resolved: dict) -> dict:
    body = {k: v for k, v in resolved.items() if k not in RUNTIME_KEYS and k != "paths"}
    body["trainer"] = {k: v for k, v in body.get("trainer", {}).items() if k not in RUNTIME_TRAINER_KEYS}
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


def report_errors(fn):
    """``fn`` with any exception printed as one line (``error: <type>: <message>``) and exit status 1; the full
    traceback with ``HYDRA_FULL_ERROR=1``, and in the run's log file either way."""
    import functools
    import traceback

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if os.environ.get(FULL_ERROR_ENV) == "1":
                raise
            for handler in logging.getLogger().handlers:  # Hydra's run.log keeps the traceback
                if isinstance(handler, logging.FileHandler):
                    handler.stream.write(traceback.format_exc())
                    handler.flush()
            print(f"error: {one_line(e)}\n(the full traceback: {FULL_ERROR_ENV}=1)", file=sys.stderr)
            sys.exit(1)

    return wrapper


def one_line(e: BaseException) -> str:
    """``<type>: <message>``; hub and library errors wrapped by this repo keep the message that names the cause."""
    return f"{type(e).__name__}: {str(e).strip() or repr(e)}"


def main() -> None:
    import hydra

    register_configs()
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(report_errors(run))()


if __name__ == "__main__":
    main()
