"""Evaluate a model config (``python eval/run.py model=<name>``): build its folder as training would, then run eval/.

eval/ evaluates a checkpoint it is given; making a model config loadable (the tiny model built, a shipped GGUF
converted: ``align.models.prepare_model_source``) is training's code, so the chain lives here, above both.
"""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig

from eval.harness import run as run_harness


def resolve_checkpoint(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``checkpoint`` set: as given, or (when null) what ``align.models.prepare_model_source`` makes of
    the model config ``cfg.model``: its folder, built first if its ``build`` says how (as training does)."""
    if cfg.checkpoint:
        return cfg
    from align.models import prepare_model_source

    cfg = copy.deepcopy(cfg)
    cfg.output_dir = cfg.output_dir  # resolved now: it names the model config, as the run's log folder does
    cfg.checkpoint = prepare_model_source(cfg.model)
    if cfg.revision is None and cfg.model.revision is not None and not Path(cfg.checkpoint).exists():
        cfg.revision = cfg.model.revision
    return cfg


def run(cfg: DictConfig, lm=None) -> dict:
    """``eval.harness.run`` on ``cfg``'s checkpoint, or on its model config's folder when ``checkpoint`` is null."""
    return run_harness(resolve_checkpoint(cfg), lm=lm)
