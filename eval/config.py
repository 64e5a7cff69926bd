"""Typed config schema for ``conf/evaluate.yaml`` and ``conf/benchmarks/`` (Hydra structured configs).

A misspelt key in a YAML file or on the command line fails at compose time; an unknown prompt protocol fails before
any work (``eval.harness.check``). ``register_eval_configs()`` stores the
schemas and registers the ``eval_slug`` resolver; ``eval/run.py`` and ``compose()`` call it (nothing happens at
import). Compose outside Hydra with ``eval.config.compose(["checkpoint=...", "benchmarks=mio8"])``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig

from common.config import ModelConfig, PathsConfig
from common.fingerprint import is_local
from common.identity import runtime, runtime_keys


@dataclass
class BenchmarkEntry:
    """One benchmark of a preset; the benchmark's name (the key) picks its row in ``eval.benchmarks.BENCHMARKS``."""

    task: str | None = None  # lm-eval task or group replacing the table's (must report the same metric key)
    num_fewshot: int | None = None  # null: the task's own
    gen_kwargs: dict[str, Any] = field(default_factory=dict)  # generation overrides for this benchmark only
    data_file: str | None = None  # a local JSON-lines file replacing the task's dataset (data not on the hub)


@dataclass
class BenchmarksConfig:
    name: str = MISSING
    suite: dict[str, BenchmarkEntry] = field(default_factory=dict)
    local_data: str | None = None
    gen_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackendConfig:
    name: str = "hf"
    dtype: str = "auto"
    batch_size: str = "auto"
    max_batch_size: int | None = 64
    device: str = "auto"
    max_length: int | None = None
    trust_remote_code: bool = False
    cpu_threads: int | None = runtime(None)  # speed only: not in a result's key
    model_args: dict[str, Any] = field(default_factory=dict)


PROTOCOLS = ("chat", "plain")


@dataclass
class PromptConfig:
    protocol: str = "chat"  # chat | plain (eval/README.md "The prompt protocol")
    chat_template: str | None = (
        None  # chat only: the name of one of the tokenizer's templates; null = its default
    )
    system_instruction: str | None = None


@dataclass
class GenerationConfig:
    max_gen_toks: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None


@dataclass
class SeedsConfig:
    random: int = 0
    numpy: int = 1234
    torch: int = 1234
    fewshot: int = 1234


@dataclass
class EvalConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    checkpoint: str | None = None
    revision: str | None = None
    tokenizer: str | None = None
    benchmarks: BenchmarksConfig = field(default_factory=BenchmarksConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    limit: float | None = None
    bootstrap_iters: int = 100000
    unsafe_code: bool = False
    code_timeout_s: float | None = None
    code_workers: int | None = None
    output_dir: str = runtime(MISSING)
    write_samples: bool = runtime(True)
    overwrite: bool = runtime(False)


# Backend settings that do not count in a result's key (eval.harness.common_settings leaves them out).
SPEED_ONLY_BACKEND_KEYS = tuple(
    k.removeprefix("backend.") for k in runtime_keys(EvalConfig) if k.startswith("backend.")
)


def checkpoint_slug(checkpoint: str | None, fallback: str | None = None) -> str:
    """A folder name for a checkpoint (or, when it is null, ``fallback``: the model config's name): "org__model"
    for hub names, "<folder>-<hash of its path>" for local ones."""
    checkpoint = checkpoint or fallback
    if checkpoint is None:
        raise ValueError("neither checkpoint nor model.name_or_path is set")
    if is_local(checkpoint):
        path = str(Path(checkpoint).expanduser().resolve())
        name = Path(path).name or "checkpoint"
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", checkpoint.replace("/", "__"))


def register_eval_configs() -> None:
    """Store the schema in Hydra's ConfigStore and register the ``eval_slug`` resolver (idempotent)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from common.config import register_shared_configs

    register_shared_configs()
    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
    if not OmegaConf.has_resolver("eval_slug"):
        OmegaConf.register_new_resolver("eval_slug", checkpoint_slug)


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/evaluate.yaml`` outside ``eval/run.py`` (tests, the end of a training run, notebooks).

    Works inside another Hydra app too (``align.config.compose`` reuses an initialised GlobalHydra).
    """
    from common.config import compose as compose_conf

    register_eval_configs()
    return compose_conf(list(overrides or []), config_name="evaluate")
