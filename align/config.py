"""Typed config schemas of training (``conf/config.yaml``; Hydra structured configs) and the helpers that compose it.

The schemas that evaluation shares (paths, the model and its build specs) are ``common/config.py``'s, re-exported
here. The schemas mirror the YAML groups one to one: a misspelt key in a YAML file or on the command line fails at
compose time with the key and the schema named, and so does a value outside a typed choice (``Choice`` enums:
precision, reference, truncation_mode, schedule and launcher here, the attention implementation in common/config.py).
Fields marked ``runtime()`` change how a run is carried out, not what it computes (``common/identity.py``): they
may differ when a run is resumed and do not count in its digest. Method schemas are generated from the loss
functions' keyword-only arguments (``align/losses.py``), so a method's config can never drift from its code.

``register_configs()`` must run before Hydra composes (``align/run.py`` and ``compose()`` call it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from align.losses import LOSSES, hyperparameters
from common.config import (  # noqa: F401 - the shared schemas, re-exported for align's modules and tests
    BUILD_SCHEMAS,
    CONF_DIR,
    REPO_ROOT,
    AttnImplementation,
    Choice,
    GgufBuildConfig,
    LoraConfig,
    MiniatureBuildConfig,
    MiniaturePairsConfig,
    ModelConfig,
    PathsConfig,
    TinyBuildConfig,
    register_shared_configs,
)
from common.config import compose as compose_conf
from common.identity import runtime

Precision = Choice("Precision", {v: v for v in ("auto", "fp32", "bf16")})
Reference = Choice("Reference", {v: v for v in ("precompute", "model")})
TruncationMode = Choice("TruncationMode", {v: v for v in ("keep_end", "keep_start")})
Launcher = Choice("Launcher", {v: v for v in ("none", "torchrun", "deepspeed")})
# transformers.SchedulerType's values (tests/test_config.py checks the list against it; importing transformers
# here would cost seconds on every compose)
Schedule = Choice(
    "Schedule",
    {
        v: v
        for v in (
            "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
            "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
            "warmup_stable_decay", "greedy",
        )
    },
)  # fmt: skip


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
    truncation_mode: TruncationMode = TruncationMode.keep_end
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
    lr_scheduler: Schedule = Schedule.cosine
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    precision: Precision = Precision.auto
    reference: Reference = Reference.precompute
    group_by_length: bool = False
    cpu_threads: int | None = runtime(None)
    displacement_warning: float | None = 0.5
    logging_steps: int = 10
    eval_steps: int = 0
    save_steps: int = runtime(0)
    save_total_limit: int = runtime(2)
    save_final: bool = True
    progress_bar: bool = runtime(True)
    tensorboard: bool = runtime(True)
    wandb_project: str | None = runtime(None)


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
    launcher: Launcher = Launcher.none
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
    paths: PathsConfig = runtime(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: Any = MISSING
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    distributed: DistributedConfig = runtime(default_factory=DistributedConfig)
    evaluate: EvaluateConfig = runtime(default_factory=EvaluateConfig)
    seed: int = 42
    device: str = "auto"  # auto, cpu, cuda or a torch device name: not a closed set (check_values)
    output_dir: str | None = runtime(MISSING)
    resume: bool = runtime(False)
    skip_if_complete: bool = runtime(True)


def method_schema(name: str) -> type:
    """A dataclass for ``method=<name>``: the shared keys plus the loss function's keyword-only arguments."""
    shared = [
        ("name", str, field(default=name)),
        ("sft_weight", float, field(default=0.0)),
        ("length_normalize", bool, field(default=LOSSES[name].length_normalize)),
    ]
    own = [(k, type(v), field(default=v)) for k, v in hyperparameters(name).items()]
    return dataclasses.make_dataclass(f"{name}_method", shared + own)


def register_configs() -> None:
    """Store the training schemas (and the shared ones: ``common.config``) in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    register_shared_configs()
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name in LOSSES:
        cs.store(group="schema/method", name=name, node=method_schema(name))


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose a config from ``conf/`` outside a Hydra app (tests, notebooks, other entry points)."""
    register_configs()
    return compose_conf(overrides, config_name)


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain Python data (what each run writes to ``config.yaml``; choices as strings)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True, enum_to_str=True)


# ------------------------------------------------------------------------------------- value checks

DATASET_FORMATS = ("auto", "messages", "strings", "hh", "ultrainteract")
CHOICES = {  # plain-str choices checked after compose (the typed ones are Choice enums above)
    "dataset.format": DATASET_FORMATS,
    "dataset.on_malformed": ("error", "skip"),
    "model.dtype": ("auto", "float32", "fp32", "bfloat16", "bf16", "float16"),
    "deepspeed.offload_optimizer": ("none", "cpu", "nvme"),
    "deepspeed.offload_param": ("none", "cpu", "nvme"),
}
AT_LEAST_ONE = (
    "trainer.per_device_train_batch_size",
    "trainer.per_device_eval_batch_size",
    "trainer.gradient_accumulation_steps",
    "trainer.logging_steps",
    "dataset.max_length",
    "dataset.max_prompt_length",
    "model.logps_chunk_size",
)
NOT_NEGATIVE = (
    "trainer.eval_steps",
    "trainer.save_steps",
    "trainer.save_total_limit",
    "trainer.weight_decay",
    "trainer.max_grad_norm",
    "method.sft_weight",
)
AT_LEAST_ONE_OR_NULL = (
    "trainer.cpu_threads",
    "dataset.max_train_samples",
    "dataset.max_eval_samples",
    "dataset.num_proc",
)


class ConfigValueError(ValueError):
    """A config value that cannot work, found before anything is loaded; the message names every such key."""


def _unknown_keys(node, schema: type | None, prefix: str) -> list[tuple[str, str]]:
    """(dotted key, schema name) for the keys of ``node`` that its dataclass schema lacks, recursively: Hydra lets
    ``+key=value`` additions through struct mode. Method and build nodes carry their own generated schemas."""
    if not isinstance(node, DictConfig):
        return []
    schema = schema or OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return []  # a free-form dict (deepspeed.extra, model.build.families)
    fields = {f.name for f in dataclasses.fields(schema)}
    out = [(f"{prefix}{k}", schema.__name__) for k in node.keys() if k not in fields]
    for k in node.keys():
        if k in fields and OmegaConf.is_dict(node._get_node(k)):
            sub = OmegaConf.get_type(node, k)
            out += _unknown_keys(node[k], sub if dataclasses.is_dataclass(sub) else None, f"{prefix}{k}.")
    return out


def check_values(cfg: DictConfig) -> None:
    """Every value that cannot work, named with its key, before anything is loaded (``align/run.py`` calls it).

    Keys added with ``+key=value`` that the schema does not have, numbers out of range (batch sizes, accumulation
    and logging steps >= 1, learning_rate > 0, beta > 0, max_length >= max_prompt_length, ...) and choices outside
    their list. Raises ``ConfigValueError`` listing them all."""
    problems = [
        f"{key}: not a key of {schema} (a misspelt '+' addition?)"
        for key, schema in _unknown_keys(cfg, None, "")
    ]

    def value(key: str):
        return OmegaConf.select(cfg, key, throw_on_missing=False)

    def bad(key: str, why: str) -> None:
        problems.append(f"{key}={value(key)!r}: {why}")

    def is_number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")

    for key in AT_LEAST_ONE:
        v = value(key)
        if not is_number(v) or v < 1:
            bad(key, "must be at least 1")
    for key in AT_LEAST_ONE_OR_NULL:
        v = value(key)
        if v is not None and (not is_number(v) or v < 1):
            bad(key, "must be at least 1 (or null)")
    for key in NOT_NEGATIVE:
        v = value(key)
        if v is not None and (not is_number(v) or v < 0):
            bad(key, "must not be negative")
    for key, options in CHOICES.items():
        if value(key) not in options:
            bad(key, f"expected one of {', '.join(options)}")
    for key in ("trainer.learning_rate", "trainer.adam_epsilon", "method.beta"):
        v = value(key)
        if v is not None and (not is_number(v) or v <= 0):
            bad(key, "must be a positive number")
    for key in ("trainer.adam_beta1", "trainer.adam_beta2"):
        v = value(key)
        if not is_number(v) or not 0 <= v < 1:
            bad(key, "must be in [0, 1)")
    for key, low, high in (
        ("trainer.warmup_ratio", 0, 1),
        ("dataset.eval_fraction", 0, 0.999999),
        ("method.label_smoothing", 0, 0.5),
        ("method.chosen_negative_weight", 0, 1),
        ("model.lora.dropout", 0, 0.999999),
    ):
        v = value(key)
        if v is not None and (not is_number(v) or not low <= v <= high):
            bad(key, f"must be in [{low}, {high:g}]")
    max_steps, epochs = value("trainer.max_steps"), value("trainer.num_epochs")
    if not is_number(max_steps) or (max_steps != -1 and max_steps < 1):
        bad("trainer.max_steps", "must be -1 (use num_epochs) or at least 1")
    elif max_steps == -1 and (not is_number(epochs) or epochs <= 0):
        bad("trainer.num_epochs", "must be positive when trainer.max_steps=-1")
    length, prompt = value("dataset.max_length"), value("dataset.max_prompt_length")
    if is_number(length) and is_number(prompt) and length < prompt:
        problems.append(f"dataset.max_length={length} is below dataset.max_prompt_length={prompt}")
    for key in ("method.negative_weight", "trainer.displacement_warning"):
        v = value(key)
        if v is not None and (not is_number(v) or v < 0):
            bad(key, "must not be negative")
    if value("model.lora.enabled") and (not is_number(value("model.lora.r")) or value("model.lora.r") < 1):
        bad("model.lora.r", "must be at least 1")
    if value("deepspeed.zero_stage") not in (0, 1, 2, 3):
        bad("deepspeed.zero_stage", "expected 0, 1, 2 or 3")
    if value("model.share_prompt") and value("model.attn_implementation") != "sdpa":
        bad("model.attn_implementation", "model.share_prompt=true needs sdpa (a custom 4D attention mask)")
    device = value("device")
    if not isinstance(device, str) or not (device == "auto" or _is_torch_device(device)):
        bad("device", "expected auto, cpu, cuda or a torch device name like cuda:1")
    if problems:
        raise ConfigValueError("; ".join(problems))


def _is_torch_device(name: str) -> bool:
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True
