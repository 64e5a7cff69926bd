"""The two ways to run a training step: plain PyTorch (optionally DDP) or a DeepSpeed ZeRO engine.

Both present the same small surface to the training loop: ``forward(batch) -> (sums, counts)``,
``backward(loss)``, ``step() -> grad norm or None`` (None between accumulation boundaries), ``lr``,
``save_state``/``load_state`` (optimizer, scheduler) and ``save_pretrained`` (a Hugging Face folder).
"""

from __future__ import annotations

import contextlib
import importlib
import math
from pathlib import Path

import torch
from torch import nn

from align import distributed as dist
from align.checkpoint import load_state_file
from align.logprobs import PolicyLogps, model_inputs


def build_optimizer(params, trainer_cfg, fused: bool) -> torch.optim.Optimizer:
    """AdamW; weight decay skips 1-D parameters (norms, biases) as in Hugging Face's Trainer."""
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": trainer_cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=trainer_cfg.learning_rate,
        betas=(trainer_cfg.adam_beta1, trainer_cfg.adam_beta2),
        eps=trainer_cfg.adam_epsilon,
        fused=fused or None,
    )


def build_scheduler(optimizer, trainer_cfg, num_training_steps: int):
    from transformers import get_scheduler

    return get_scheduler(
        trainer_cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=math.ceil(trainer_cfg.warmup_ratio * num_training_steps),
        num_training_steps=num_training_steps,
    )


def unwrap_causal_lm(model: nn.Module) -> nn.Module:
    """The transformers model inside DDP/PolicyLogps."""
    while isinstance(model, (PolicyLogps, nn.parallel.DistributedDataParallel)):
        model = model.model if isinstance(model, PolicyLogps) else model.module
    return model


def save_hf_folder(model: nn.Module, out_dir: Path, tokenizer, state_dict=None) -> None:
    """Write a Hugging Face folder (safetensors + config + tokenizer) that ``from_pretrained`` reads.

    A LoRA model is merged into its base weights for the folder, so evaluation needs no peft; the adapter
    alone is also saved under ``adapter/``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload") and state_dict is None:
        model.save_pretrained(out_dir / "adapter")
        merged = {k: v for k, v in _merged_state_dict(model).items()}
        model.get_base_model().save_pretrained(out_dir, state_dict=merged, safe_serialization=True)
    else:
        model.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _merged_state_dict(peft_model) -> dict:
    """Base weights with LoRA deltas added, without modifying the training model."""
    import copy

    merged = copy.deepcopy(peft_model).merge_and_unload()
    return {k: v.detach().cpu() for k, v in merged.state_dict().items()}


class TorchEngine:
    """Plain PyTorch: AdamW, warmup schedule, gradient accumulation, clipping, bf16 autocast, DDP across ranks."""

    def __init__(self, policy: PolicyLogps, cfg, num_training_steps: int, device: torch.device, bf16: bool):
        self.policy = policy.to(device)
        self.module: nn.Module = self.policy
        if dist.world_size() > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.module = nn.parallel.DistributedDataParallel(self.policy, device_ids=ids)
        # torch's fused AdamW (CUDA and CPU): one kernel for all parameters; ~6x faster optimizer step on CPU.
        self.optimizer = build_optimizer(
            self.policy.parameters(), cfg.trainer, fused=device.type in ("cuda", "cpu")
        )
        self.scheduler = build_scheduler(self.optimizer, cfg.trainer, num_training_steps)
        self.accum = cfg.trainer.gradient_accumulation_steps
        self.max_grad_norm = cfg.trainer.max_grad_norm
        self.device, self.bf16 = device, bf16
        self.micro_steps = 0

    def autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # DDP decides in forward whether backward all-reduces: skip it until the accumulation boundary.
        boundary = (self.micro_steps + 1) % self.accum == 0
        skip_sync = not boundary and torch.is_grad_enabled() and hasattr(self.module, "no_sync")
        with self.module.no_sync() if skip_sync else contextlib.nullcontext(), self.autocast():
            return self.module(**model_inputs(batch))

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accum).backward()

    def step(self) -> float | None:
        self.micro_steps += 1
        if self.micro_steps % self.accum:
            return None
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if self.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        else:
            norm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in params if p.grad is not None])
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def train(self, mode: bool = True) -> None:
        self.policy.train(mode)

    def save_state(self, ckpt_dir: Path) -> None:
        if dist.is_main():
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "micro_steps": self.micro_steps,
                    "trainable": {
                        n: p.detach().cpu() for n, p in self.policy.named_parameters() if p.requires_grad
                    },
                },
                ckpt_dir / "optimizer.pt",
            )

    def load_state(self, ckpt_dir: Path) -> None:
        state = load_state_file(ckpt_dir / "optimizer.pt", map_location=self.device)
        with torch.no_grad():
            params = dict(self.policy.named_parameters())
            for name, value in state["trainable"].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps = state["micro_steps"]

    def save_pretrained(self, out_dir: Path, tokenizer) -> None:
        if dist.is_main():
            save_hf_folder(unwrap_causal_lm(self.policy), out_dir, tokenizer)

    def destroy(self) -> None:
        pass


def deepspeed_config(cfg, bf16: bool) -> dict:
    """The DeepSpeed JSON config built from the ``deepspeed`` and ``trainer`` groups (``extra`` merged last)."""
    ds, tr = cfg.deepspeed, cfg.trainer
    zero: dict = {
        "stage": ds.zero_stage,
        "overlap_comm": ds.overlap_comm,
        "contiguous_gradients": ds.contiguous_gradients,
    }
    if ds.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": ds.offload_optimizer, "pin_memory": True}
    if ds.offload_param != "none":
        zero["offload_param"] = {"device": ds.offload_param, "pin_memory": True}
    if ds.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = ds.stage3_gather_16bit_weights_on_model_save
    out = {
        "train_micro_batch_size_per_gpu": tr.per_device_train_batch_size,
        "gradient_accumulation_steps": tr.gradient_accumulation_steps,
        "train_batch_size": tr.per_device_train_batch_size
        * tr.gradient_accumulation_steps
        * dist.world_size(),
        "gradient_clipping": tr.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if ds.offload_optimizer != "none":  # ZeRO-Offload wants DeepSpeed's CPU Adam, built from this section
        out["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": tr.learning_rate,
                "betas": [tr.adam_beta1, tr.adam_beta2],
                "eps": tr.adam_epsilon,
                "weight_decay": tr.weight_decay,
            },
        }
    from omegaconf import OmegaConf

    extra = OmegaConf.to_container(ds.extra, resolve=True) if not isinstance(ds.extra, dict) else ds.extra
    return _merge(out, extra)


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        base[k] = (
            _merge(dict(base.get(k, {})), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        )
    return base


def skip_cpu_shm_build() -> None:
    """On a CPU accelerator, DeepSpeed JIT-compiles a shared-memory all-reduce op (~30 s) that only speeds up
    intra-node CPU all-reduce; training here does not need it. Called at run time, only on the CPU."""
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


class DeepSpeedEngine:
    """DeepSpeed ZeRO (stages 0-3, offload): the engine handles accumulation, clipping, bf16 and partitioning;
    the learning-rate schedule is stepped here at accumulation boundaries, so both engines share it."""

    def __init__(self, policy: PolicyLogps, cfg, num_training_steps: int, ds_config: dict):
        import deepspeed

        self.policy = policy
        client_opt = None
        if "optimizer" not in ds_config:
            client_opt = build_optimizer(policy.parameters(), cfg.trainer, fused=False)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=policy,
            optimizer=client_opt,
            model_parameters=[p for p in policy.parameters() if p.requires_grad],
            config=ds_config,
        )
        self.module = self.engine
        # ZeRO wraps the torch optimizer and shares its param_groups: schedule the wrapped one's learning rate.
        base = (
            self.optimizer if isinstance(self.optimizer, torch.optim.Optimizer) else self.optimizer.optimizer
        )
        self.scheduler = build_scheduler(base, cfg.trainer, num_training_steps)
        self.stage = ds_config["zero_optimization"]["stage"]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.engine(**model_inputs(batch))

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)  # scales by 1 / gradient_accumulation_steps

    def step(self) -> float | None:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        if not boundary:
            return None
        self.scheduler.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def train(self, mode: bool = True) -> None:
        self.engine.train(mode)

    def save_state(self, ckpt_dir: Path) -> None:
        self.engine.save_checkpoint(
            str(ckpt_dir / "deepspeed"), tag="state", client_state={"scheduler": self.scheduler.state_dict()}
        )

    def load_state(self, ckpt_dir: Path) -> None:
        _, client = self.engine.load_checkpoint(str(ckpt_dir / "deepspeed"), tag="state")
        self.scheduler.load_state_dict(client["scheduler"])

    def save_pretrained(self, out_dir: Path, tokenizer) -> None:
        model = unwrap_causal_lm(self.policy)
        if (
            self.stage == 3
        ):  # gather the partitioned 16-bit weights on rank 0 (a collective: every rank calls)
            full = self.engine._zero3_consolidated_16bit_state_dict()
            if dist.is_main():
                state = {k.removeprefix("model."): v for k, v in full.items()}
                if hasattr(model, "merge_and_unload"):
                    raise NotImplementedError(
                        "LoRA under ZeRO-3: save the adapter with deepspeed=zero2 or none"
                    )
                save_hf_folder(model, out_dir, tokenizer, state_dict=state)
        elif dist.is_main():
            save_hf_folder(model, out_dir, tokenizer)
        dist.barrier()

    def destroy(self) -> None:
        self.engine.destroy()
