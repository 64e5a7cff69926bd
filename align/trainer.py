"""The one training loop: every method, plain PyTorch or DeepSpeed, with or without a reference model.

Methods differ only in their loss function and in whether they need reference log-probs, which come from a
cache computed once (``trainer.reference=precompute``) or a frozen reference forward per step (``model``).
Each optimizer step: ``gradient_accumulation_steps`` micro-batches of 2B sequences (chosen + rejected) through
one forward, the method's loss (+ optional SFT term), backward, clip, step. Metrics every ``logging_steps``,
held-out evaluation every ``eval_steps`` and at the end, checkpoints every ``save_steps``.

``Trainer.train`` is that sequence, one method per action; the metrics window, the rows' destinations and the stop
signal are ``align/progress.py``; the run folder around a training run is ``align/run_folder.py``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
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
from align.progress import Progress, Reporter, StopSignal, Window, every
from align.reference import ReferenceTable, cache_key, compute_table, load_or_compute, spot_checker
from align.steps import Averager, BatchOrder, preference_loss, to_device

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss, the gradient norm or the weights became NaN or infinite; the last good checkpoint is left
    untouched (checkpoints are only written after the weights were checked finite)."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM arrived; the run saved a checkpoint at the end of the step and stopped (resume=true continues)."""


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


# ------------------------------------------------------------------------------------------------ set-up


def resolve_device(name: str) -> torch.device:
    """``device``: auto (cuda when available, else cpu); cuda is this rank's local device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", dist.local_rank())
    return torch.device(name)


def use_bf16(precision: str, device: torch.device) -> bool:
    """``trainer.precision`` (a typed choice, align.config.Precision): auto is bf16 on a bf16-capable GPU."""
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def batch_order(train: Split, tr, seed: int) -> BatchOrder:
    """The seeded order of the train pairs (grouped by length when ``trainer.group_by_length``)."""
    lengths = None
    if tr.group_by_length:
        cols = train.dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
        lengths = [
            len(p) + max(len(c), len(r))
            for p, c, r in zip(cols["prompt_ids"], cols["chosen_ids"], cols["rejected_ids"], strict=True)
        ]
    order = BatchOrder(len(train.dataset), tr.per_device_train_batch_size, seed, lengths)
    if order.per_epoch == 0:
        raise ValueError(
            f"{len(train.dataset)} train pairs are fewer than one batch of "
            f"{tr.per_device_train_batch_size} x {dist.world_size()} ranks"
        )
    return order


def training_steps(tr, order: BatchOrder) -> int:
    """``trainer.max_steps``, or the optimizer steps in ``trainer.num_epochs`` epochs (at least one)."""
    if tr.max_steps > 0:
        return tr.max_steps
    return max(1, math.ceil(tr.num_epochs * (order.per_epoch // tr.gradient_accumulation_steps)))


def load_policy(cfg, device: torch.device, use_ds: bool) -> PolicyLogps:
    """The trainable policy. Plain PyTorch keeps float32 master weights (autocast does bf16); DeepSpeed keeps its
    own fp32 copy."""
    weights = resolve_dtype(cfg.model.dtype, device)
    if not use_ds and cfg.model.dtype == "auto":
        weights = torch.float32
    return PolicyLogps(load_causal_lm(cfg.model, weights), cfg.model.logps_chunk_size)


def batch_collator(cfg, pad_id: int, policy: PolicyLogps):
    """Rows -> a padded batch: chosen and rejected as 2B sequences, or one row per pair (``model.share_prompt``)."""
    if cfg.model.share_prompt:
        return functools.partial(collate_shared, pad_id=pad_id, window=attention_window(policy.model.config))
    return functools.partial(collate, pad_id=pad_id)


def load_reference_model(cfg, device: torch.device, bf16: bool, use_ds: bool):
    """A frozen copy of the initial weights as a forward ``batch -> (sums, counts)``: sharded by a ZeRO-3 inference
    engine, else a replica."""
    dtype = resolve_dtype(cfg.model.dtype, device)
    ref = PolicyLogps(load_causal_lm(cfg.model, dtype, trainable=False), cfg.model.logps_chunk_size)
    if use_ds and cfg.deepspeed.zero_stage == 3:
        import deepspeed

        conf = {
            "train_micro_batch_size_per_gpu": 1,
            "zero_optimization": {"stage": 3},
            "bf16": {"enabled": bf16},
        }
        engine = deepspeed.initialize(model=ref, config=conf)[0]
        engine.eval()
        return lambda b: engine(**model_inputs(b))
    ref.to(device)
    return lambda b: ref(**model_inputs(b))


def nonfinite_weights(policy) -> list[str]:
    """Names of trainable parameters holding a NaN or infinity (this rank's ZeRO-3 partition; ranks agree).
    A float32 sum per tensor: non-finite values propagate into it, finite weights cannot overflow it."""
    named = [(n, getattr(p, "ds_tensor", p)) for n, p in policy.named_parameters() if p.requires_grad]
    if not named:
        return []
    sums = torch.stack([t.detach().sum(dtype=torch.float32) for _, t in named])
    bad = dist.all_reduce_sum((~torch.isfinite(sums)).float())
    return [n for (n, _), b in zip(named, bad.tolist(), strict=True) if b > 0]


class ReferenceLogps:
    """The reference log-probs of a batch: cached tables, one per split, computed once by the initial policy
    (``trainer.reference=precompute``), or a frozen reference model's forward per step (``model``). Reference-free
    methods get the cached tables too (for the displacement statistics), but no reference model."""

    def __init__(self, cfg, method, device: torch.device, bf16: bool, use_ds: bool, autocast):
        self.cfg, self.method, self.device, self.bf16, self.use_ds = cfg, method, device, bf16, use_ds
        self.autocast = autocast
        self.model = None
        self.tables: dict[str, ReferenceTable] = {}

    def setup(self, policy_forward, data: PreferenceData, collate, fresh: bool) -> None:
        """The tables from the cache (a cached table is checked against one batch scored again by the policy at
        step 0), computing them if needed; or the frozen model."""
        cfg = self.cfg
        mode = cfg.trainer.reference  # a typed choice (align.config.Reference): precompute or model
        if mode == "model":
            if self.method.needs_reference:
                self.model = load_reference_model(cfg, self.device, self.bf16, self.use_ds)
            return
        fp = model_fingerprint(cfg.model, cfg.paths.cache_dir)
        precision = "bf16" if self.bf16 else str(resolve_dtype(cfg.model.dtype, self.device))
        bs = cfg.trainer.per_device_eval_batch_size
        forward = None

        def compute(split):
            nonlocal forward
            if forward is None:  # at step 0 the policy *is* the reference; after a resume, load the reference
                forward = (
                    policy_forward
                    if fresh
                    else load_reference_model(cfg, self.device, self.bf16, self.use_ds)
                )
            with self.autocast():
                return compute_table(forward, split, bs, collate, self.device)

        def checked_forward(batch):
            with self.autocast():
                return policy_forward(batch)

        tolerance = 1e-4 if precision == str(torch.float32) else 2e-2  # nats per token
        for name, split in (("train", data.train), ("eval", data.eval)):
            if split is not None:
                key = cache_key(fp, split, precision)
                check = (
                    spot_checker(checked_forward, split, bs, collate, self.device, tolerance)
                    if fresh
                    else None
                )
                self.tables[name] = load_or_compute(
                    split, key, cfg.paths.cache_dir, lambda s=split: compute(s), name, check
                )

    def __call__(self, batch, split_name: str):
        """(sums, counts), each (B, 2) for chosen and rejected, or None (no reference for this split)."""
        if self.model is None and split_name not in self.tables:
            return None
        if self.model is not None:
            with torch.no_grad(), self.autocast():
                s, c = self.model(batch)
            b = batch["row"].shape[0]
            return torch.stack([s[:b], s[b:]], 1).float(), torch.stack([c[:b], c[b:]], 1).float()
        sums, counts = self.tables[split_name].lookup(batch["row"].cpu())
        return sums.to(self.device), counts.to(self.device)


# ----------------------------------------------------------------------------------------------- the run


class Trainer:
    """Builds everything from the config, then ``train()`` runs the loop and returns the final results."""

    def __init__(self, cfg, out_dir: Path):
        self.cfg, self.out = cfg, out_dir
        tr = cfg.trainer
        self.method = get_method(cfg.method.name)
        self.device = resolve_device(cfg.device)
        self.bf16 = use_bf16(tr.precision, self.device)
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
        self.order = batch_order(self.data.train, tr, cfg.seed)
        self.total_steps = training_steps(tr, self.order)

        ds_config = deepspeed_config(cfg, self.bf16) if self.use_ds else None
        self._hf_ds = None
        if self.use_ds and cfg.deepspeed.zero_stage == 3:
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds = HfDeepSpeedConfig(ds_config)  # partitions weights at load time; must stay alive
        policy = load_policy(cfg, self.device, self.use_ds)
        self.collate = batch_collator(cfg, self.tokenizer.pad_token_id, policy)
        # 6N FLOPs per token for the policy's forward and backward (ZeRO-3 partitions keep the full size in ds_numel).
        self.flops_per_token = 6 * sum(getattr(p, "ds_numel", p.numel()) for p in policy.parameters())
        self.peak_flops = peak_flops(self.device) if self.bf16 else None
        if self.use_ds:
            self.engine = DeepSpeedEngine(policy, cfg, self.total_steps, ds_config)
        else:
            self.engine = TorchEngine(policy, cfg, self.total_steps, self.device, self.bf16)
        # bf16 autocast for plain PyTorch; DeepSpeed casts the model itself. (The engine's, not a method of this
        # object: a reference cycle would keep a ZeRO-3 HfDeepSpeedConfig alive after the run.)
        self.autocast = (
            self.engine.autocast if isinstance(self.engine, TorchEngine) else contextlib.nullcontext
        )
        self.reference = ReferenceLogps(cfg, self.method, self.device, self.bf16, self.use_ds, self.autocast)
        self._displacement_warned = False

    def _policy_forward(self, batch):
        return self.engine.forward(batch)

    def _setup_reference(self, fresh: bool) -> None:
        """At step 0 (``fresh``) the policy is the reference: its forward computes or spot-checks the tables."""
        self.engine.train(False)
        self.reference.setup(self._policy_forward, self.data, self.collate, fresh)
        self.engine.train(True)

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
            with self.autocast():
                sums, counts = self._policy_forward(batch)
            _, stats = preference_loss(
                self.method, self.cfg.method, sums, counts, self.reference(batch, "eval")
            )
            avg.add(stats, weight)
        self.engine.train(True)
        return avg.read()

    # -- the loop: optimizer steps, each followed by the periodic actions

    def train(self) -> dict:
        """Start (or resume), then run optimizer steps to ``total_steps``; after each one, log every
        ``logging_steps``, evaluate every ``eval_steps``, save every ``save_steps``, stop on SIGTERM."""
        tr, run = self.cfg.trainer, self._start()
        try:
            while run.step < self.total_steps:
                self._optimizer_step(run)
                final = run.step == self.total_steps
                if run.step % tr.logging_steps == 0 or final:
                    self._log(run)
                if self.data.eval is not None and (every(run.step, tr.eval_steps) or final):
                    self._evaluate(run)
                saved = not final and every(run.step, tr.save_steps) and self._save(run, tr.save_total_limit)
                if not final and run.stop.requested(self.device):
                    self._stop(run, saved)
        finally:
            run.stop.restore()
            run.report.close()
        return self._finish(run)

    def _start(self) -> Progress:
        """The reference log-probs, then the newest checkpoint's state when resuming (its weights checked finite)."""
        ckpt_root = self.out / "checkpoints"
        ckpt = latest_checkpoint(ckpt_root) if self.cfg.resume else None
        if self.cfg.resume and ckpt is None:
            log.warning("resume=true but %s holds no checkpoint: starting from scratch", ckpt_root)
        started = time.perf_counter()
        self._setup_reference(fresh=ckpt is None)
        reference_seconds = time.perf_counter() - started
        state = {"step": 0, "micro_index": 0, "tokens": 0, "train_seconds": 0.0}
        saved_window: dict = {}
        if ckpt is not None:
            state, saved_window = load_checkpoint(self.engine, ckpt)
            bad = nonfinite_weights(self.engine.policy)
            if bad:
                raise CheckpointError(
                    f"{ckpt} holds non-finite weights ({', '.join(bad[:3])}); resume from an earlier checkpoint "
                    f"(move this one away) or start again"
                )
            log.info("resumed from %s at step %d", ckpt, state["step"])
        report = Reporter(self.out, self.cfg, self.total_steps, state["step"], resumed=ckpt is not None)
        self.engine.train(True)
        window = Window(self.device, saved_window)
        return Progress(state, window, report, StopSignal(), ckpt_root, reference_seconds)

    def _optimizer_step(self, run: Progress) -> None:
        """``gradient_accumulation_steps`` micro-batches through forward, loss and backward, then the optimizer
        step; a non-finite loss, gradient norm or weight stops the run before anything is saved after it."""
        norm = None
        for _ in range(self.cfg.trainer.gradient_accumulation_steps):
            rows = self.order.positions(run.state["micro_index"])
            batch = to_device(self.collate([self.data.train.dataset[p] for p in rows]), self.device)
            sums, counts = self._policy_forward(batch)
            loss, stats = preference_loss(
                self.method, self.cfg.method, sums, counts, self.reference(batch, "train")
            )
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at step {run.step + 1} (micro-batch {run.state['micro_index']}, "
                    f"train rows {batch['row'].tolist()}); no checkpoint was written after it. "
                    f"Last good checkpoint: {last_good_checkpoint(run.ckpt_root) or 'none'}. "
                    "Lower trainer.learning_rate or method.beta, or check these rows, then resume=true."
                )
            self.engine.backward(loss)
            norm = self.engine.step()
            run.window.add(stats, len(rows), batch["n_tokens"])
            run.state["micro_index"] += 1
        run.state["step"] += 1
        if norm is not None:
            run.window.grad_norms.append(norm)
        self._check_finite(run, norm)
        run.report.step()

    def _check_finite(self, run: Progress, norm: float | None) -> None:
        if norm is not None and not math.isfinite(norm):
            raise NonFiniteLossError(
                f"gradient norm is {norm} at step {run.step}; last good checkpoint: "
                f"{last_good_checkpoint(run.ckpt_root) or 'none'}. Lower trainer.learning_rate, then resume=true."
            )
        bad = nonfinite_weights(self.engine.policy)
        if bad:
            raise NonFiniteLossError(
                f"weights are non-finite after step {run.step} ({', '.join(bad[:3])}"
                f"{' ...' if len(bad) > 3 else ''}); no checkpoint was written after it. Last good checkpoint: "
                f"{last_good_checkpoint(run.ckpt_root) or 'none'}. Lower trainer.learning_rate or raise "
                "trainer.adam_epsilon, then resume=true."
            )
        run.state["weights_finite"] = True  # checked just now: any checkpoint written after it is a good one

    def _log(self, run: Progress) -> None:
        """The window's training row (all ranks' tokens), then a fresh window."""
        stats, tokens, seconds, grad_norm = run.window.read()
        run.state["tokens"] += tokens
        run.state["train_seconds"] += seconds
        run.last_train = stats | {
            "lr": self.engine.lr,
            "grad_norm": grad_norm,
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "epoch": run.state["micro_index"] / self.order.per_epoch,
        }
        if self.peak_flops:
            per_rank = run.last_train["tokens_per_s"] / dist.world_size()
            run.last_train["mfu"] = per_rank * self.flops_per_token / self.peak_flops
        run.report.log(run.step, "train", run.last_train)
        self._warn_displacement(run.step, run.last_train)
        run.window.reset()

    def _evaluate(self, run: Progress) -> None:
        run.last_eval = self.evaluate(self.data.eval)
        run.report.log(run.step, "eval", run.last_eval)
        run.window.restart_clock()  # evaluation time is not training throughput

    def _save(self, run: Progress, keep: int) -> Path:
        """A checkpoint with this rank's window (a run resumed before the next log logs the same row)."""
        with run.window.clock_paused() as seconds:  # saving time is not training throughput
            rank_state = run.window.state(seconds)
            return save_checkpoint(
                self.engine, self.tokenizer, run.ckpt_root, run.step, run.state, keep, rank_state
            )

    def _stop(self, run: Progress, saved: Path | bool) -> None:
        path = saved or self._save(run, keep=0)
        raise TrainingInterrupted(
            f"stopped by SIGTERM after step {run.step}; checkpoint {path}; "
            "continue with resume=true in the same output_dir"
        )

    def _finish(self, run: Progress) -> dict:
        final_dir = None
        if self.cfg.trainer.save_final:
            final_dir = self.out / "final"
            self.engine.save_pretrained(final_dir, self.tokenizer)
        state = run.state
        return {
            "steps": state["step"],
            "train": run.last_train,
            "eval": run.last_eval,
            "tokens": state["tokens"],
            "train_seconds": state["train_seconds"],
            "tokens_per_s": state["tokens"] / max(state["train_seconds"], 1e-9),
            "reference_seconds": run.reference_seconds,
            "final_model": str(final_dir) if final_dir else None,
            "data": self.data.stats,
        }

    def close(self) -> None:
        self.engine.destroy()
        self._hf_ds = None  # transformers keeps ZeRO-3 weight partitioning on while this object lives


def train(cfg, out_dir: Path) -> dict:
    trainer = Trainer(cfg, out_dir)
    try:
        return trainer.train()
    finally:
        trainer.close()
