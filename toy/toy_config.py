"""Typed schema of the toy configs (``conf/toy/``): a misspelt or missing key fails when the config composes.

``register_configs()`` stores the schema in Hydra's ConfigStore as ``toy_schema``, which ``conf/toy/config.yaml``
lists first in its defaults; call it before composing (``toy/run.py``'s ``main`` and the tests do). Nothing is
registered at import time. The comments on each value live in the YAML files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class Scenario:
    label: str = MISSING
    chosen_prob: float = MISSING
    rejected_prob: float = MISSING


@dataclass
class OptimizerVariant:
    name: str = MISSING
    optimizer: str = MISSING
    lr: float = MISSING


@dataclass
class DynamicsConfig:
    constructions: list[str] = MISSING
    seeds: list[int] = MISSING
    num_prompts: int = MISSING
    num_responses: int = MISSING
    optimal_temperature: float = MISSING
    hidden: int = MISSING
    layers: int = MISSING
    warmup_steps: int = MISSING
    warmup_lr: float = MISSING
    scenarios: dict[str, Scenario] = MISSING
    methods: list[str] = MISSING
    figure_methods: list[str] = MISSING
    all_methods: list[str] = MISSING
    loss_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    optimizer: str = MISSING
    lr: float = MISSING
    epochs: int = MISSING
    record_every: int = MISSING
    variants: list[OptimizerVariant] = field(default_factory=list)
    betas: list[float] = field(default_factory=list)
    claim_drop: float = MISSING


@dataclass
class GaussianSweep:
    name: str = MISSING
    dim: int = MISSING
    rhos: list[float] = MISSING
    iterations: int | None = None  # None: the gaussian node's iterations
    grad_repeats: int | None = None  # None: the gaussian node's; 0: no gradient variance for this sweep
    panel: str | None = None  # draw in that sweep's estimate panel (error bars) instead of a row of its own


@dataclass
class GaussianConfig:
    seeds: list[int] = MISSING
    sweeps: list[GaussianSweep] = MISSING
    hidden: int = MISSING
    layers: int = MISSING
    lr: float = MISSING
    batch_size: int = MISSING
    iterations: int = MISSING
    eval_at: list[int] = field(default_factory=list)
    momentum: float = MISSING
    eval_samples: int = MISSING
    grad_repeats: int = MISSING


@dataclass
class PropositionsConfig:
    beta: float = MISSING
    betas: list[float] = MISSING
    chosen_prob: float = MISSING
    reference_prob: float = MISSING
    rejected_grid: list[float] = MISSING
    ratio_grid: list[float] = MISSING
    fixed_point: float = MISSING
    descent_starts: list[float] = MISSING
    descent_steps: int = MISSING
    descent_lr: float = MISSING


@dataclass
class ToyConfig:
    out_dir: str = MISSING
    parts: list[str] = MISSING
    threads: int = MISSING
    dpi: int = MISSING
    formats: list[str] = MISSING
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    gaussian: GaussianConfig = field(default_factory=GaussianConfig)
    propositions: PropositionsConfig = field(default_factory=PropositionsConfig)


def register_configs() -> None:
    """Store the schema as ``toy_schema`` (idempotent: storing again replaces the same node)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="toy_schema", node=ToyConfig)
