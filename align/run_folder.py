"""A training run in its folder: the config check, the folder's lock and identity, resume checks, results.json.

``train_in_folder(cfg)`` trains ``cfg`` into ``cfg.output_dir``, or returns the results of the same config already
trained there (``skip_if_complete``). A run's identity is its resolved config without the runtime-only fields of
the schema (``align/config.py``, marked ``runtime()``): its ``config_digest``, stored in results.json and compared
by ``common.identity.is_done``, as eval/ compares the settings hash of a result. Evaluation after training is not
here: ``pipeline/run.py`` chains it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from align import distributed as dist
from align.checkpoint import list_checkpoints
from align.config import REPO_ROOT, Config, ConfigValueError, check_values, to_container
from align.losses import get_method
from common import identity
from common.records import environment, read_json, shown_paths, write_json, write_text_atomic

log = logging.getLogger("align")

# What a run writes into its folder besides config.yaml and env.json (removed when a finished run is redone).
RUN_OUTPUTS = ("checkpoints", "final", "tb", "metrics.jsonl", "results.json")


class RunFolderError(FileExistsError):
    """The run folder holds another run, or is in use: nothing was changed in it."""


def runtime_keys() -> tuple[str, ...]:
    """The config keys that may differ between runs computing the same thing (the schema's ``runtime()`` fields)."""
    return identity.runtime_keys(Config)


def comparable(resolved: dict) -> dict:
    """The part of a resolved config that decides what a run computes, with paths under the working directory
    relative to it (``common.records.shown_paths``): a clone of the checkout computes the same thing."""
    return shown_paths(identity.without(resolved, runtime_keys()))


def config_digest(resolved: dict) -> str:
    """Hash of the resolved config without runtime keys: two runs with the same digest compute the same thing."""
    return identity.digest(comparable(resolved))[:16]


def changed_keys(old: dict, resolved: dict) -> list[str]:
    """Dotted keys that decide what a run computes and differ between ``old`` and ``resolved``."""
    return sorted(k for k in identity.differences(comparable(old), comparable(resolved)) if k)


def validate(cfg: DictConfig) -> dict:
    """Fail before anything is loaded, with the key named: missing values, unknown method, values that cannot work
    (``align.config.check_values``). Returns the resolved config."""
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
    return resolved


def train_in_folder(cfg: DictConfig, then: Callable[[dict], dict] | None = None) -> dict:
    """Train one configuration into ``cfg.output_dir`` and return its results (also written to results.json);
    ``then(results)``, if given, runs in the folder's owner while it still holds the lock (the evaluation).

    With ``distributed.launcher`` set, this process writes the config and starts the ranks (align/launch.py);
    otherwise it trains itself."""
    from align import launch

    resolved = validate(cfg)
    out = Path(cfg.output_dir)
    parent = cfg.distributed.launcher != "none" and not launch.in_worker()
    node0 = not parent or launch.topology(cfg.distributed)["node_rank"] == 0
    owner = dist.is_main() and node0  # the one process that writes the folder's files
    with folder_lock(out) if owner else contextlib.nullcontext():
        previous = previous_results(out, resolved)
        if previous is not None and cfg.skip_if_complete:
            log.info("%s: training already completed (skip_if_complete=true)", out)
            results = previous
        else:
            if owner:
                claim_folder(out, resolved, resume=cfg.resume, completed=previous is not None)
                config_yaml = OmegaConf.to_yaml(OmegaConf.create(shown_paths(resolved)))
                write_text_atomic(out / "config.yaml", config_yaml)
                write_json(out / "env.json", environment(REPO_ROOT))
            if not parent:
                results = train_here(cfg)
            else:
                launch.launch(cfg.distributed, out / "config.yaml")
                results = read_json(out / "results.json") if node0 else {}
        if then is not None and owner:
            results = then(results)
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
            changed = changed_keys(OmegaConf.to_container(OmegaConf.load(old_file)), resolved)
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


def completed(results: dict) -> bool:
    return results.get("status") == "completed"


def previous_results(out: Path, resolved: dict) -> dict | None:
    """The results of a completed run in ``out``; an error naming the keys if that run computed something else.

    A digest that differs is not enough to refuse: keys the old run's config.yaml lacks (added to the schema since,
    at defaults that keep old behaviour) do not count, so a config schema that grows does not orphan finished runs."""
    results_file = out / "results.json"
    if not results_file.exists():
        return None
    previous = read_json(results_file)
    if not completed(previous):
        return None
    if identity.is_done(previous, config_digest(resolved), "config_digest", completed):
        return previous
    old_file = out / "config.yaml"
    old = OmegaConf.to_container(OmegaConf.load(old_file)) if old_file.exists() else {}
    changed = changed_keys(old, resolved) if old else []
    if changed or not old:
        raise RunFolderError(
            f"{out} holds a completed run of a different config ({', '.join(changed[:8]) or 'no config.yaml'} "
            "differ); choose another output folder (hydra.run.dir=...)"
        )
    return previous


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
                shown_paths(base)
                | {
                    "status": "interrupted" if isinstance(e, TrainingInterrupted) else "failed",
                    "error": f"{type(e).__name__}: {e}",
                    "wall_seconds": time.time() - start,
                },
            )
        raise
    # the model, final/ and data paths as config.yaml names them (relative under the working directory)
    results = shown_paths(base | {"status": "completed", "wall_seconds": time.time() - start} | results)
    if dist.is_main():
        write_json(results_file, results)
        log.info(
            "done in %.1f s: eval %s",
            results["wall_seconds"],
            {k: round(v, 4) for k, v in results["eval"].items() if k in ("loss", "rewards/accuracies")},
        )
    return results
