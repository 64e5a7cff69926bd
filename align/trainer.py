"""The one training loop: every method, plain PyTorch or DeepSpeed, with or without a reference model.

Methods differ only in their loss function and in whether they need reference log-probs, which come from a
cache computed once (``trainer.reference=precompute``) or a frozen reference forward per step (``model``).
Each optimizer step: ``gradient_accumulation_steps`` micro-batches of 2B sequences (chosen + rejected) through
one forward, the method's loss (+ optional SFT term), backward, clip, step. Metrics every ``logging_steps``,
held-out evaluation every ``eval_steps`` and at the end, checkpoints every ``save_steps``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
import threading
import time
from pathlib import Path

import torch
from transformers import set_seed

from align import distributed as dist
from align.checkpoint import (
    CheckpointError,
    last_good_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from align.engine import DeepSpeedEngine, TorchEngine, deepspeed_config, skip_cpu_shm_build
from align.logprobs import PolicyLogps, model_inputs
from align.losses import get_method
from align.models import attention_window, load_causal_lm, load_tokenizer, model_fingerprint, resolve_dtype
from align.preference_data import PreferenceData, Split, collate, collate_shared, load_preference_data
from align.records import MetricsLog
from align.reference import ReferenceTable, cache_key, compute_table, load_or_compute, spot_checker
from align.steps import Averager, BatchOrder, preference_loss, to_device

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss, the gradient norm or the weights became NaN or infinite; the last good checkpoint is left
    untouched (checkpoints are only written after the weights were checked finite)."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM arrived; the run saved a checkpoint at the end of the step and stopped (resume=true continues)."""


class StopSignal:
    """SIGTERM (scancel, SLURM preemption, a launcher stopping its ranks) asks the loop to finish its step, save a
    checkpoint and stop, instead of losing everything since the last periodic checkpoint. Ranks agree on it."""

    def __init__(self):
        self.flag = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.flag = True

    def requested(self, device: torch.device) -> bool:
        if dist.world_size() == 1:
            return self.flag
        return bool(dist.all_reduce_sum(torch.tensor([float(self.flag)], device=device)).item() > 0)

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s), for MFU.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


# ----------------------------------------------------------------------------------------------- the run


class Trainer:
    """Builds everything from the config, then ``train()`` runs the loop and returns the final results."""

    def __init__(self, cfg, out_dir: Path):
        self.cfg, self.out = cfg, out_dir
        tr = cfg.trainer
        self.method = get_method(cfg.method.name)
        self.device = self._device(cfg.device)
        self.bf16 = self._bf16(tr.precision)
        self.use_ds = bool(cfg.deepspeed.enabled)
        if self.use_ds:
            skip_cpu_shm_build()
        dist.init(self.device, self.use_ds)
        if tr.cpu_threads:
            torch.set_num_threads(tr.cpu_threads)
        set_seed(cfg.seed)

        self.tokenizer = load_tokenizer(cfg.model)
        if (
            cfg.model.share_prompt and cfg.model.attn_implementation != "sdpa"
        ):  # eager would add a boolean mask
            raise ValueError(
                f"model.share_prompt needs a custom 4D attention mask: attn_implementation=sdpa, not {cfg.model.attn_implementation}"
            )
        self.data: PreferenceData = load_preference_data(cfg.dataset, self.tokenizer, cfg.seed)
        lengths = None
        if tr.group_by_length:
            cols = self.data.train.dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
            lengths = [
                len(p) + max(len(c), len(r))
                for p, c, r in zip(cols["prompt_ids"], cols["chosen_ids"], cols["rejected_ids"], strict=True)
            ]
        self.order = BatchOrder(
            len(self.data.train.dataset), tr.per_device_train_batch_size, cfg.seed, lengths
        )
        if self.order.per_epoch == 0:
            raise ValueError(
                f"{len(self.data.train.dataset)} train pairs are fewer than one batch of "
                f"{tr.per_device_train_batch_size} x {dist.world_size()} ranks"
            )
        steps_per_epoch = self.order.per_epoch // tr.gradient_accumulation_steps
        self.total_steps = (
            tr.max_steps if tr.max_steps > 0 else max(1, math.ceil(tr.num_epochs * steps_per_epoch))
        )

        ds_config = deepspeed_config(cfg, self.bf16) if self.use_ds else None
        self._hf_ds = None
        if self.use_ds and cfg.deepspeed.zero_stage == 3:
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds = HfDeepSpeedConfig(ds_config)  # partitions weights at load time; must stay alive
        # Plain PyTorch keeps float32 master weights (autocast does bf16); DeepSpeed keeps its own fp32 copy.
        weights = resolve_dtype(cfg.model.dtype, self.device)
        if not self.use_ds and cfg.model.dtype == "auto":
            weights = torch.float32
        policy = PolicyLogps(load_causal_lm(cfg.model, weights), cfg.model.logps_chunk_size)
        pad = self.tokenizer.pad_token_id
        self.collate = (
            functools.partial(collate_shared, pad_id=pad, window=attention_window(policy.model.config))
            if cfg.model.share_prompt
            else functools.partial(collate, pad_id=pad)
        )
        # 6N FLOPs per token for the policy's forward and backward (ZeRO-3 partitions keep the full size in ds_numel).
        self.flops_per_token = 6 * sum(getattr(p, "ds_numel", p.numel()) for p in policy.parameters())
        self.peak_flops = peak_flops(self.device) if self.bf16 else None
        if self.use_ds:
            self.engine = DeepSpeedEngine(policy, cfg, self.total_steps, ds_config)
        else:
            self.engine = TorchEngine(policy, cfg, self.total_steps, self.device, self.bf16)
        self.ref_model = None
        self.ref_tables: dict[str, ReferenceTable] = {}
        self._displacement_warned = False

    # -- set-up helpers

    @staticmethod
    def _device(name: str) -> torch.device:
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cuda":
            return torch.device("cuda", dist.local_rank())
        return torch.device(name)

    def _bf16(self, precision: str) -> bool:
        if precision == "auto":
            return self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"trainer.precision={precision!r}: expected auto, fp32 or bf16")
        return precision == "bf16"

    def _policy_forward(self, batch):
        return self.engine.forward(batch)

    def _setup_reference(self, fresh: bool) -> None:
        """Reference tables from the cache (computing them if needed) or a frozen reference model. Reference-free
        methods get the cached tables too (for the displacement statistics), but no reference model."""
        mode = self.cfg.trainer.reference
        if mode not in ("precompute", "model"):
            raise ValueError(f"trainer.reference={mode!r}: expected precompute or model")
        if mode == "model" and not self.method.needs_reference:
            return
        if mode == "model":
            self.ref_model = self._load_reference_model()
            return
        fp = model_fingerprint(self.cfg.model, self.cfg.paths.cache_dir)
        precision = "bf16" if self.bf16 else str(resolve_dtype(self.cfg.model.dtype, self.device))
        bs = self.cfg.trainer.per_device_eval_batch_size
        forward = None

        def compute(split):
            nonlocal forward
            if forward is None:  # at step 0 the policy *is* the reference; after a resume, load the reference
                forward = self._policy_forward if fresh else self._load_reference_model()
            with self._autocast():
                return compute_table(forward, split, bs, self.collate, self.device)

        def policy_forward(batch):
            with self._autocast():
                return self._policy_forward(batch)

        # At step 0 the policy is the reference: a cached table is checked against one batch scored again.
        tolerance = 1e-4 if precision == str(torch.float32) else 2e-2  # nats per token
        self.engine.train(False)
        for name, split in (("train", self.data.train), ("eval", self.data.eval)):
            if split is not None:
                key = cache_key(fp, split, precision)
                check = (
                    spot_checker(policy_forward, split, bs, self.collate, self.device, tolerance)
                    if fresh
                    else None
                )
                self.ref_tables[name] = load_or_compute(
                    split, key, self.cfg.paths.cache_dir, lambda s=split: compute(s), name, check
                )
        self.engine.train(True)

    def _load_reference_model(self):
        """A frozen copy of the initial weights: sharded by a ZeRO-3 inference engine, else a replica."""
        dtype = resolve_dtype(self.cfg.model.dtype, self.device)
        ref = PolicyLogps(
            load_causal_lm(self.cfg.model, dtype, trainable=False), self.cfg.model.logps_chunk_size
        )
        if self.use_ds and self.cfg.deepspeed.zero_stage == 3:
            import deepspeed

            conf = {
                "train_micro_batch_size_per_gpu": 1,
                "zero_optimization": {"stage": 3},
                "bf16": {"enabled": self.bf16},
            }
            engine = deepspeed.initialize(model=ref, config=conf)[0]
            engine.eval()
            return lambda b: engine(**model_inputs(b))
        ref.to(self.device)
        return lambda b: ref(**model_inputs(b))

    def _autocast(self):
        """bf16 autocast for plain PyTorch; DeepSpeed casts the model itself."""
        return self.engine.autocast() if isinstance(self.engine, TorchEngine) else contextlib.nullcontext()

    def _reference(self, batch, split_name: str):
        if self.ref_model is None and split_name not in self.ref_tables:
            return None
        if self.ref_model is not None:
            with torch.no_grad(), self._autocast():
                s, c = self.ref_model(batch)
            b = batch["row"].shape[0]
            return torch.stack([s[:b], s[b:]], 1).float(), torch.stack([c[:b], c[b:]], 1).float()
        sums, counts = self.ref_tables[split_name].lookup(batch["row"].cpu())
        return sums.to(self.device), counts.to(self.device)

    def _warn_displacement(self, step: int, stats: dict[str, float]) -> None:
        """Warn (once per run) when the chosen answers' per-token log-prob has fallen below the reference's by
        more than ``trainer.displacement_warning`` nats: the likelihood displacement that DPO is known for."""
        margin, gap = self.cfg.trainer.displacement_warning, stats.get("displacement/chosen_per_token")
        if margin is None or gap is None or gap > -margin or self._displacement_warned:
            return
        self._displacement_warned = True
        log.warning(
            "step %d: the chosen log-prob is %.3f nats per token below the reference's (%.1f per answer; %.0f%% of "
            "the batch's chosen below their reference): likelihood displacement past trainer.displacement_warning=%g",
            step,
            -gap,
            -stats["displacement/chosen"],
            100 * stats["displacement/chosen_below_ref"],
            margin,
        )

    def _nonfinite_weights(self) -> list[str]:
        """Names of trainable parameters holding a NaN or infinity (this rank's ZeRO-3 partition; ranks agree).
        A float32 sum per tensor: non-finite values propagate into it, finite weights cannot overflow it."""
        named = [
            (n, getattr(p, "ds_tensor", p))
            for n, p in self.engine.policy.named_parameters()
            if p.requires_grad
        ]
        if not named:
            return []
        sums = torch.stack([t.detach().sum(dtype=torch.float32) for _, t in named])
        bad = dist.all_reduce_sum((~torch.isfinite(sums)).float())
        return [n for (n, _), b in zip(named, bad.tolist(), strict=True) if b > 0]

    def _window_state(self, window: Averager, tokens, grad_norms: list[float], seconds: float) -> dict:
        """This rank's metrics window since the last logged row (tensors and plain data: loadable weights_only), so
        that a run resumed between two logging steps logs the same next row and token count."""
        return {
            "keys": window.keys,
            "total": None if window.total is None else window.total.detach().cpu(),
            "tokens": int(tokens),
            "grad_norms": [float(g) for g in grad_norms],
            "seconds": seconds,
        }

    def _restore_window(self, saved: dict) -> tuple[Averager, object, list[float], float]:
        window = Averager()
        if saved.get("total") is not None:
            window.keys, window.total = list(saved["keys"]), saved["total"].to(self.device)
        return window, saved.get("tokens", 0), list(saved.get("grad_norms", [])), saved.get("seconds", 0.0)

    # -- evaluation

    @torch.no_grad()
    def evaluate(self, split: Split) -> dict[str, float]:
        """Pair-weighted means of the loss and statistics over the whole held-out split (ranks share it)."""
        self.engine.train(False)
        avg = Averager()
        n, world, rank = len(split.dataset), dist.world_size(), dist.rank()
        bs = self.cfg.trainer.per_device_eval_batch_size
        per_rank = math.ceil(n / world)
        for start in range(0, per_rank, bs):
            idx = [i for i in (rank + k * world for k in range(start, min(start + bs, per_rank))) if i < n]
            # A rank past the end still runs the forward (ZeRO-3 forwards are collective) on one row, weight 0.
            weight = float(len(idx))
            batch = to_device(self.collate([split.dataset[i] for i in idx or [n - 1]]), self.device)
            with self._autocast():
                sums, counts = self._policy_forward(batch)
            _, stats = preference_loss(
                self.method, self.cfg.method, sums, counts, self._reference(batch, "eval")
            )
            avg.add(stats, weight)
        self.engine.train(True)
        return avg.read()

    # -- the loop

    def train(self) -> dict:
        cfg, tr = self.cfg, self.cfg.trainer
        ckpt_root = self.out / "checkpoints"
        state = {"step": 0, "micro_index": 0, "tokens": 0, "train_seconds": 0.0}
        ckpt = latest_checkpoint(ckpt_root) if cfg.resume else None
        if cfg.resume and ckpt is None:
            log.warning("resume=true but %s holds no checkpoint: starting from scratch", ckpt_root)
        started = time.perf_counter()
        self._setup_reference(fresh=ckpt is None)
        reference_seconds = time.perf_counter() - started
        saved_window: dict = {}
        if ckpt is not None:
            state, saved_window = load_checkpoint(self.engine, ckpt)
            bad = self._nonfinite_weights()
            if bad:
                raise CheckpointError(
                    f"{ckpt} holds non-finite weights ({', '.join(bad[:3])}); resume from an earlier checkpoint "
                    f"(move this one away) or start again"
                )
            log.info("resumed from %s at step %d", ckpt, state["step"])
        metrics = (
            MetricsLog(
                self.out, tr.tensorboard and dist.is_main(), resume_after_step=state["step"] if ckpt else None
            )
            if dist.is_main()
            else None
        )
        bar = None
        if tr.progress_bar and dist.is_main():
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.total_steps, initial=state["step"], desc=f"{cfg.method.name}", dynamic_ncols=True
            )
        last_eval: dict[str, float] = {}
        last_train: dict[str, float] = {}
        window, window_tokens, grad_norms, window_seconds = self._restore_window(saved_window)
        window_start = time.perf_counter() - window_seconds
        self.engine.train(True)
        stop = StopSignal()
        try:
            while state["step"] < self.total_steps:
                for _ in range(tr.gradient_accumulation_steps):
                    rows = self.order.positions(state["micro_index"])
                    batch = to_device(
                        self.collate([self.data.train.dataset[p] for p in rows]),
                        self.device,
                    )
                    sums, counts = self._policy_forward(batch)
                    loss, stats = preference_loss(
                        self.method, cfg.method, sums, counts, self._reference(batch, "train")
                    )
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(
                            f"loss is {loss.item()} at step {state['step'] + 1} (micro-batch {state['micro_index']}, "
                            f"train rows {batch['row'].tolist()}); no checkpoint was written after it. "
                            f"Last good checkpoint: {last_good_checkpoint(ckpt_root) or 'none'}. "
                            "Lower trainer.learning_rate or method.beta, or check these rows, then resume=true."
                        )
                    self.engine.backward(loss)
                    norm = self.engine.step()
                    window.add(stats, len(rows))
                    window_tokens = window_tokens + batch["n_tokens"]  # stays on the device
                    state["micro_index"] += 1
                state["step"] += 1
                if norm is not None:
                    grad_norms.append(norm)
                if norm is not None and not math.isfinite(norm):
                    raise NonFiniteLossError(
                        f"gradient norm is {norm} at step {state['step']}; last good checkpoint: "
                        f"{last_good_checkpoint(ckpt_root) or 'none'}. Lower trainer.learning_rate, then resume=true."
                    )
                bad = self._nonfinite_weights()
                if bad:
                    raise NonFiniteLossError(
                        f"weights are non-finite after step {state['step']} ({', '.join(bad[:3])}"
                        f"{' ...' if len(bad) > 3 else ''}); no checkpoint was written after it. Last good checkpoint: "
                        f"{last_good_checkpoint(ckpt_root) or 'none'}. Lower trainer.learning_rate or raise "
                        "trainer.adam_epsilon, then resume=true."
                    )
                state["weights_finite"] = True  # checked just now: any checkpoint written below is a good one
                if bar is not None:
                    bar.update(1)
                if state["step"] % tr.logging_steps == 0 or state["step"] == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    tokens = int(dist.all_reduce_sum(torch.as_tensor(window_tokens, device=self.device)))
                    state["tokens"] += tokens
                    state["train_seconds"] += elapsed
                    last_train = window.read() | {
                        "lr": self.engine.lr,
                        "grad_norm": sum(grad_norms) / max(len(grad_norms), 1),
                        "tokens_per_s": tokens / max(elapsed, 1e-9),
                        "epoch": state["micro_index"] / self.order.per_epoch,
                    }
                    if self.peak_flops:
                        per_rank = last_train["tokens_per_s"] / dist.world_size()
                        last_train["mfu"] = per_rank * self.flops_per_token / self.peak_flops
                    if metrics is not None:
                        metrics.log(state["step"], "train", last_train)
                    self._warn_displacement(state["step"], last_train)
                    if bar is not None:
                        bar.set_postfix(
                            loss=f"{last_train['loss']:.4f}", acc=f"{last_train['rewards/accuracies']:.2f}"
                        )
                    window, window_tokens, window_start, grad_norms = Averager(), 0, time.perf_counter(), []
                final = state["step"] == self.total_steps
                if self.data.eval is not None and (
                    (tr.eval_steps > 0 and state["step"] % tr.eval_steps == 0) or final
                ):
                    last_eval = self.evaluate(self.data.eval)
                    if metrics is not None:
                        metrics.log(state["step"], "eval", last_eval)
                    window_start = time.perf_counter()  # evaluation time is not training throughput
                saved = tr.save_steps > 0 and state["step"] % tr.save_steps == 0 and not final
                if saved:
                    seconds = time.perf_counter() - window_start
                    rank_state = self._window_state(window, window_tokens, grad_norms, seconds)
                    save_checkpoint(
                        self.engine,
                        self.tokenizer,
                        ckpt_root,
                        state["step"],
                        state,
                        tr.save_total_limit,
                        rank_state,
                    )
                    window_start = time.perf_counter() - seconds  # saving time is not training throughput
                if not final and stop.requested(self.device):
                    path = ckpt_root / f"step-{state['step']:06d}"
                    if not saved:
                        seconds = time.perf_counter() - window_start
                        rank_state = self._window_state(window, window_tokens, grad_norms, seconds)
                        path = save_checkpoint(
                            self.engine, self.tokenizer, ckpt_root, state["step"], state, 0, rank_state
                        )
                    raise TrainingInterrupted(
                        f"stopped by SIGTERM after step {state['step']}; checkpoint {path}; "
                        "continue with resume=true in the same output_dir"
                    )
        finally:
            stop.restore()
            if bar is not None:
                bar.close()
            if metrics is not None:
                metrics.close()
        final_dir = None
        if tr.save_final:
            final_dir = self.out / "final"
            self.engine.save_pretrained(final_dir, self.tokenizer)
        return {
            "steps": state["step"],
            "train": last_train,
            "eval": last_eval,
            "tokens": state["tokens"],
            "train_seconds": state["train_seconds"],
            "tokens_per_s": state["tokens"] / max(state["train_seconds"], 1e-9),
            "reference_seconds": reference_seconds,
            "final_model": str(final_dir) if final_dir else None,
            "data": self.data.stats,
        }

    def close(self) -> None:
        self.engine.destroy()


def train(cfg, out_dir: Path) -> dict:
    trainer = Trainer(cfg, out_dir)
    try:
        return trainer.train()
    finally:
        trainer.close()
