"""One DPO training step: this repo's code path against TRL's DPOTrainer, same model, same pairs.

Every variant trains the same random-init Llama-style model (seeded) on the same synthetic pairs, in the same
order, and reports tokens/s (non-pad tokens through the policy, chosen + rejected), the median step time after
warm-up, peak memory, MFU and, where the variant precomputes reference log-probs, what that pass cost.

Variants (``--variants``, comma-separated):
  ours      align's own path: ``PolicyLogps`` (one forward over chosen + rejected, chunked lm_head over response
            tokens only) in ``TorchEngine`` (AdamW, fused on GPU; clipping; bf16 autocast on GPU), the trainer's
            ``preference_loss`` and per-step bookkeeping, reference log-probs precomputed by
            ``align.reference.compute_table`` once before the loop
  naive     plain torch: full-vocabulary logits, log_softmax, separate forwards for chosen and rejected, the
            same precomputed reference and optimizer settings (the "correctness first" baseline)
  trl       TRL ``DPOTrainer`` as shipped: gradient checkpointing on, a reference model copy run every step
  trl_fast  TRL's fastest configuration: checkpointing off, Liger kernels (if installed and on CUDA),
            ``precompute_ref_log_probs=True`` and no reference model kept
Each variant runs in its own subprocess (same seed, same model, same pairs), so one variant's memory or crash
does not touch the next; ``--repeats`` interleaves the variants that many times.

Run from the repository root (the ``align`` package must be importable: installed, or the root on PYTHONPATH):

    .venv/bin/python bench/step_bench.py --size tiny --repeats 3          # CPU, a few minutes
    python bench/step_bench.py --size 1b --steps 10 --variants ours,trl,trl_fast    # one GPU (docs/benchmarks.md)
    .venv/bin/python bench/step_bench.py --check --size tiny               # parity: our step vs the naive step

Results: one JSON line per variant and repeat in ``--out`` (default ``bench/results/<host>-<date>.jsonl``) with
the device, package versions and the command; a summary table on stdout. Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU; on a CPU it is the growth of the process's peak resident set
(``VmHWM`` in /proc/self/status, reset through /proc/self/clear_refs) over the timed steps, so it includes
allocator caching and is comparable only between variants of one run. MFU = 6 N tokens/s / peak FLOP/s with N
all parameters (embeddings included, as in the H200 anchor); peak FLOP/s from ``--peak-tflops`` or a table of
known GPUs (the H200 figure is the measured 790 TFLOP/s bf16 rate of ../shared/bench), n/a on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import importlib.util
import json
import math
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("ours", "naive", "trl", "trl_fast")
PAD, EOS = 1, 2  # token ids of the synthetic vocabulary; real tokens are drawn from [10, vocab)
BETA = 0.1  # DPO beta, TRL's default and conf/method/dpo.yaml's
LN2 = math.log(2.0)
# bf16 dense matmul peak, FLOP/s, by device-name substring. H200: measured in ../shared/bench (the anchor's
# MFU basis); H100: NVIDIA's dense bf16 figure for the SXM part. Pass --peak-tflops for anything else.
PEAK_FLOPS = {"H200": (790e12, "measured bf16 matmul rate, ../shared/bench"), "H100": (989e12, "NVIDIA spec")}


@dataclass(frozen=True)
class Size:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    pairs: int  # pairs per step
    prompt: int  # mean prompt length (tokens); lengths are uniform in [L/2, 3L/2]
    response: int  # mean response length (tokens), chosen and rejected drawn independently


SIZES = {
    # the anchor's tiny layer shape with an 8k vocabulary and short sequences: a CPU step in about a second
    "tiny": Size(256, 688, 2, 4, 2, 8192, pairs=4, prompt=32, response=64),
    # the anchor's 1B shape (~0.85B parameters) and batch: 8 pairs of ~770 tokens a sequence
    "1b": Size(2048, 5632, 16, 32, 8, 32000, pairs=8, prompt=256, response=512),
}


# ------------------------------------------------------------------------------------------- set-up


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def weight_dtype(name: str) -> torch.dtype:
    if name == "auto":  # bf16 weights on a GPU (as the anchor), fp32 on a CPU (as the trainer there)
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def make_model(size: Size, dtype: torch.dtype, dev: torch.device, seed: int = 0):
    """The random-init Llama-style causal LM every variant trains: same seed, same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=None,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(dev):
        model = LlamaForCausalLM(cfg)
    return model.to(dtype)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def make_pairs(size: Size, n: int, seed: int = 1) -> list[dict]:
    """``n`` synthetic pairs as the repo's tokenized rows: prompt_ids, chosen_ids, rejected_ids (ending in EOS), row."""
    rng = random.Random(seed)

    def ids(mean: int) -> list[int]:
        return [rng.randrange(10, size.vocab) for _ in range(rng.randint(mean // 2, mean * 3 // 2))]

    rows = []
    for i in range(n):
        prompt, chosen, rejected = ids(size.prompt), ids(size.response), ids(size.response)
        rows.append(
            {"prompt_ids": prompt, "chosen_ids": chosen + [EOS], "rejected_ids": rejected + [EOS], "row": i}
        )
    return rows


def batch_tokens(rows: list[dict]) -> int:
    """Non-pad tokens through the policy for these pairs: each prompt twice, both responses."""
    return sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)


def our_config(args, steps: int):
    """The full training config the trainer would use, composed from conf/ (DPO, precomputed reference)."""
    from align.config import compose

    return compose(
        [
            "output_dir=unused",
            "method=dpo",
            f"method.beta={BETA}",
            "trainer.reference=precompute",
            f"trainer.max_steps={steps}",
            f"trainer.per_device_train_batch_size={args.size_spec.pairs}",
            "trainer.gradient_accumulation_steps=1",
            f"trainer.learning_rate={args.lr}",
            "trainer.lr_scheduler=constant",
            "trainer.warmup_ratio=0.0",
        ]
    )


class Memory:
    """Peak memory over a stretch: CUDA peak allocated bytes, or growth of the CPU process's peak RSS."""

    def reset(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            return
        self.base = _proc_status("VmRSS")
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def read(self) -> dict:
        if torch.cuda.is_available():
            return {"peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
        hwm = _proc_status("VmHWM")
        return {
            "peak_rss_growth_mib": round((hwm - self.base) / 2**20, 1) if hwm and self.base else None,
            "peak_rss_mib": round(hwm / 2**20, 1) if hwm else None,
        }


def _proc_status(key: str) -> int | None:
    """A /proc/self/status field in bytes (Linux), or None."""
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


# ------------------------------------------------------------------------------------------ our path


def run_ours(args) -> dict:
    """Time the trainer's micro-step: forward, loss, isfinite check, backward, clip + AdamW, logged statistics."""
    from align.engine import TorchEngine
    from align.logprobs import PolicyLogps
    from align.losses import get_method
    from align.preference_data import Split, collate
    from align.reference import compute_table
    from align.steps import Averager, preference_loss, to_device

    size, dev = args.size_spec, device()
    n_batches = args.warmup + args.steps
    rows = make_pairs(size, size.pairs * n_batches)
    cfg = our_config(args, n_batches)
    model = make_model(size, weight_dtype(args.dtype), dev)
    engine = TorchEngine(
        PolicyLogps(model, cfg.model.logps_chunk_size), cfg, n_batches, dev, bf16=dev.type == "cuda"
    )
    method = get_method("dpo")

    # Reference log-probs, once, as the trainer does at step 0 (the policy is the reference): a sweep shares them.
    engine.train(False)
    sync()
    t0 = time.perf_counter()
    with engine.autocast():
        table = compute_table(
            engine.forward, Split(rows, "synthetic"), size.pairs, functools.partial(collate, pad_id=PAD), dev
        )
    sync()
    ref_s = time.perf_counter() - t0
    engine.train(True)

    batches = [collate(rows[i * size.pairs : (i + 1) * size.pairs], PAD) for i in range(n_batches)]
    mem, window, times = Memory(), Averager(), []
    mem.reset()
    for batch in batches:
        sync()
        t0 = time.perf_counter()
        batch = to_device(batch, dev)
        sums, counts = engine.forward(batch)
        ref_sums, ref_counts = table.lookup(batch["row"].cpu())
        loss, stats = preference_loss(
            method, cfg.method, sums, counts, (ref_sums.to(dev), ref_counts.to(dev))
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss {loss.item()}")
        engine.backward(loss)
        engine.step()
        window.add(stats, size.pairs)
        int(batch["attention_mask"].sum())  # the trainer's token count for tokens_per_s (a host sync)
        sync()
        times.append(time.perf_counter() - t0)
    return summarise(
        args,
        "ours",
        rows,
        times,
        mem.read(),
        n_params(model),
        ref_s=ref_s,
        extra={"loss": window.read()["loss"]},
    )


# --------------------------------------------------------------------------------------- naive path


def naive_logps(model, input_ids, attention_mask, loss_mask) -> torch.Tensor:
    """Textbook sequence log-probs: full (N, T, V) logits in fp32, log_softmax, gather, masked sum. (N,)"""
    width = int(attention_mask.sum(1).max())  # drop all-pad columns
    input_ids, attention_mask, loss_mask = (
        input_ids[:, :width],
        attention_mask[:, :width],
        loss_mask[:, :width],
    )
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
    logps = logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (logps * loss_mask[:, 1:]).sum(-1)


def naive_pair_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) log-probs from two separate forwards over the halves of a collated batch."""
    b = batch["row"].shape[0]
    halves = [
        {k: v[s] for k, v in batch.items() if k not in ("row", "n_tokens")}
        for s in (slice(0, b), slice(b, 2 * b))
    ]
    return tuple(naive_logps(model, h["input_ids"], h["attention_mask"], h["loss_mask"]) for h in halves)


def naive_dpo(pc, pr, rc, rr) -> torch.Tensor:
    return -F.logsigmoid(BETA * ((pc - rc) - (pr - rr))).mean()


def naive_optimizer(model, cfg):
    tr = cfg.trainer
    return torch.optim.AdamW(
        model.parameters(),
        lr=tr.learning_rate,
        betas=(tr.adam_beta1, tr.adam_beta2),
        eps=tr.adam_epsilon,
        weight_decay=tr.weight_decay,
        fused=torch.cuda.is_available() or None,
    )


def naive_step(model, opt, batch, ref, max_grad_norm: float) -> torch.Tensor:
    pc, pr = naive_pair_logps(model, batch)
    loss = naive_dpo(pc, pr, ref[0], ref[1])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def run_naive(args) -> dict:
    from align.preference_data import collate

    size, dev = args.size_spec, device()
    n_batches = args.warmup + args.steps
    rows = make_pairs(size, size.pairs * n_batches)
    cfg = our_config(args, n_batches)
    model = make_model(size, weight_dtype(args.dtype), dev)
    opt = naive_optimizer(model, cfg)
    batches = [collate(rows[i * size.pairs : (i + 1) * size.pairs], PAD) for i in range(n_batches)]
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    )

    sync()
    t0 = time.perf_counter()
    with torch.no_grad(), autocast:
        refs = [naive_pair_logps(model, {k: v.to(dev) for k, v in b.items()}) for b in batches]
    sync()
    ref_s = time.perf_counter() - t0

    mem, times = Memory(), []
    mem.reset()
    for batch, ref in zip(batches, refs, strict=True):
        sync()
        t0 = time.perf_counter()
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        with autocast:
            loss = naive_step(model, opt, batch, ref, cfg.trainer.max_grad_norm)
        float(loss.detach())  # the trainer reads the loss every step too
        sync()
        times.append(time.perf_counter() - t0)
    return summarise(args, "naive", rows, times, mem.read(), n_params(model), ref_s=ref_s)


# ------------------------------------------------------------------------------------------------ TRL


def word_tokenizer(vocab: int):
    """A word-level tokenizer where ``t<i>`` is token id i, so TRL tokenizes the text back to our exact ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<pad>": PAD, "</s>": EOS, "<s>": 3} | {f"t{i}": i for i in range(4, vocab)}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>", bos_token="<s>"
    )


def as_text(ids: list[int]) -> str:
    return " ".join("</s>" if i == EOS else f"t{i}" for i in ids)


def run_trl(args, fast: bool) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    size, dev = args.size_spec, device()
    n_batches = args.warmup + args.steps
    rows = make_pairs(size, size.pairs * n_batches)
    # Responses already end in EOS, so TRL adds none; the leading space keeps prompt ids a prefix of prompt+response.
    ds = Dataset.from_list(
        [
            {
                "prompt": as_text(r["prompt_ids"]),
                "chosen": " " + as_text(r["chosen_ids"]),
                "rejected": " " + as_text(r["rejected_ids"]),
            }
            for r in rows
        ]
    )
    model = make_model(size, weight_dtype(args.dtype), dev)
    ref_model = None if fast else copy.deepcopy(model).eval().requires_grad_(False)
    liger = fast and dev.type == "cuda" and importlib.util.find_spec("liger_kernel") is not None
    times: list[float] = []
    ref_time: list[float] = []

    class Clock(TrainerCallback):
        """on_step_begin .. on_step_end spans forward, backward, clipping, the optimizer step and zero_grad."""

        def on_step_begin(self, *a, **k):
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            sync()
            times.append(time.perf_counter() - self.t0)

    seen: list[torch.Tensor] = []

    class TimedDPOTrainer(DPOTrainer):
        def _get_train_sampler(self, *a, **k):  # the same batches, in the same order, as the other variants
            return torch.utils.data.SequentialSampler(self.train_dataset)

        def compute_loss(self, model, inputs, *a, **k):
            seen.append(inputs["attention_mask"].sum())  # non-pad tokens of this batch, read after training
            return super().compute_loss(model, inputs, *a, **k)

        def _precompute_ref_logps(self, *a, **k):
            sync()
            t0 = time.perf_counter()
            out = super()._precompute_ref_logps(*a, **k)
            sync()
            ref_time.append(time.perf_counter() - t0)
            return out

    # The default variant keeps DPOConfig's defaults (gradient checkpointing on, a reference forward each step).
    fast_options = dict(gradient_checkpointing=False, use_liger_kernel=liger, precompute_ref_log_probs=True)
    out_dir = tempfile.TemporaryDirectory(prefix="trl-bench-")
    config = DPOConfig(
        output_dir=out_dir.name,
        per_device_train_batch_size=size.pairs,
        precompute_ref_batch_size=size.pairs,
        max_steps=n_batches,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=BETA,
        max_length=None,
        bf16=dev.type == "cuda",
        use_cpu=dev.type != "cuda",
        logging_steps=n_batches,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
        **(fast_options if fast else {}),
    )
    trainer = TimedDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=config,
        train_dataset=ds,
        processing_class=word_tokenizer(size.vocab),
        callbacks=[Clock()],
    )
    prepared = trainer.train_dataset
    for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
        if prepared[key] != [r[key] for r in rows]:
            raise AssertionError(f"TRL tokenized {key} differently from the synthetic ids")
    mem = Memory()
    mem.reset()
    trainer.train()
    out_dir.cleanup()
    expected = [batch_tokens(rows[i * size.pairs : (i + 1) * size.pairs]) for i in range(n_batches)]
    if [int(t) for t in seen] != expected:
        raise AssertionError(f"TRL's batches differ from ours: {[int(t) for t in seen]} vs {expected}")
    extra = {
        "gradient_checkpointing": bool(config.gradient_checkpointing),
        "liger": bool(liger),
        "precompute_ref": bool(config.precompute_ref_log_probs),
        "reference_model_kept": ref_model is not None,
    }
    return summarise(
        args,
        "trl_fast" if fast else "trl",
        rows,
        times,
        mem.read(),
        n_params(model),
        ref_s=ref_time[0] if ref_time else None,
        ref_forward_each_step=not fast,
        extra=extra,
    )


# ------------------------------------------------------------------------------------------ records


def peak_flops(args) -> tuple[float | None, str | None]:
    if args.peak_tflops:
        return args.peak_tflops * 1e12, "--peak-tflops"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, (value, source) in PEAK_FLOPS.items():
            if key in name:
                return value, source
    return None, None


def versions() -> dict:
    out = {}
    for name in ("torch", "transformers", "trl", "liger-kernel", "datasets", "accelerate"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = "cpu"
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
    return f"{cpu} ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"


def summarise(
    args, name, rows, times, memory, nparam, ref_s=None, ref_forward_each_step=False, extra=None
) -> dict:
    """One JSON record: medians over the steps after warm-up."""
    size = args.size_spec
    tokens = [batch_tokens(rows[i * size.pairs : (i + 1) * size.pairs]) for i in range(len(times))]
    timed, timed_tokens = times[args.warmup :], tokens[args.warmup :]
    rates = [t / s for t, s in zip(timed_tokens, timed, strict=True)]
    tps = statistics.median(rates)
    peak, peak_source = peak_flops(args)
    all_tokens = sum(tokens)
    rec = {
        "variant": name,
        "size": args.size,
        "device": device_name(),
        "dtype": str(weight_dtype(args.dtype)).removeprefix("torch."),
        "autocast_bf16": torch.cuda.is_available(),
        "params_b": round(nparam / 1e9, 4),
        "pairs_per_step": size.pairs,
        "tokens_per_step": round(statistics.mean(timed_tokens)),
        "steps": len(timed),
        "warmup": args.warmup,
        "step_ms": round(statistics.median(timed) * 1e3, 2),
        "step_ms_min": round(min(timed) * 1e3, 2),
        "step_ms_max": round(max(timed) * 1e3, 2),
        "tokens_per_s": round(tps, 1),
        **memory,
        "mfu": round(6 * nparam * tps / peak, 4) if peak else None,
        # work actually run per token: + 2N for a reference forward every step (not in "mfu")
        "mfu_incl_ref_forward": round(8 * nparam * tps / peak, 4) if peak and ref_forward_each_step else None,
        "peak_flops": peak,
        "peak_flops_source": peak_source,
        # a pass over every pair of the run (warm-up included), done once and shared by a sweep's methods
        "ref_precompute_s": round(ref_s, 3) if ref_s is not None else None,
        "ref_precompute_tokens_per_s": round(all_tokens / ref_s, 1) if ref_s else None,
        # tokens/s when one method pays the whole precompute: step time + its share of the reference pass
        "tokens_per_s_incl_ref": (
            round(statistics.mean(timed_tokens) / (statistics.median(timed) + ref_s / len(times)), 1)
            if ref_s
            else None
        ),
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
        "host": socket.gethostname(),
        "date": datetime.date.today().isoformat(),
        "command": os.environ.get("STEP_BENCH_COMMAND", " ".join([sys.executable, *sys.argv])),
    }
    rec.update(extra or {})
    return rec


# ------------------------------------------------------------------------------------------- parity


def check(args) -> dict:
    """Our step vs the naive step on the same batches, in fp32: reference log-probs, two steps of loss and grads.

    Step 1 runs at policy = reference (DPO loss ln 2 for both); both then take one clipped AdamW step (lr 1e-3,
    so the second step's loss moves off ln 2) and step 2 compares loss and gradients again.
    """
    from align.engine import TorchEngine
    from align.logprobs import PolicyLogps
    from align.losses import get_method
    from align.preference_data import Split, collate
    from align.reference import compute_table
    from align.steps import preference_loss, to_device

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    size, dev = args.size_spec, device()
    rows = make_pairs(size, 2 * size.pairs, seed=args.seed)
    args.lr = 1e-3
    cfg = our_config(args, 2)
    ours_model = make_model(size, torch.float32, dev)
    naive_model = copy.deepcopy(ours_model)
    engine = TorchEngine(PolicyLogps(ours_model, cfg.model.logps_chunk_size), cfg, 2, dev, bf16=False)
    opt = naive_optimizer(naive_model, cfg)
    method = get_method("dpo")
    batches = [to_device(collate(rows[i * size.pairs : (i + 1) * size.pairs], PAD), dev) for i in range(2)]

    engine.train(False)
    table = compute_table(
        engine.forward, Split(rows, "synthetic"), size.pairs, functools.partial(collate, pad_id=PAD), dev
    )
    engine.train(True)
    with torch.no_grad():
        naive_refs = [naive_pair_logps(naive_model, b) for b in batches]
    ref_diff = max(
        float((table.lookup(b["row"].cpu())[0].to(dev) - torch.stack(r, 1)).abs().max())
        for b, r in zip(batches, naive_refs, strict=True)
    )

    out = {"size": args.size, "device": device_name(), "dtype": "float32", "ref_logps_max_abs_diff": ref_diff}
    for step, (batch, nref) in enumerate(zip(batches, naive_refs, strict=True), start=1):
        sums, counts = engine.forward(batch)
        ref_sums, ref_counts = table.lookup(batch["row"].cpu())
        loss, _ = preference_loss(method, cfg.method, sums, counts, (ref_sums.to(dev), ref_counts.to(dev)))
        engine.backward(loss)
        pc, pr = naive_pair_logps(naive_model, batch)
        naive_loss = naive_dpo(pc, pr, nref[0], nref[1])
        naive_loss.backward()
        b = size.pairs
        ours_grads = dict(ours_model.named_parameters())
        grad_diff, grad_scale = 0.0, 0.0
        for name, p in naive_model.named_parameters():
            g = ours_grads[name].grad
            grad_diff = max(grad_diff, float((g - p.grad).abs().max()))
            grad_scale = max(grad_scale, float(p.grad.abs().max()))
        out[f"step{step}"] = {
            "loss_ours": float(loss.detach()),
            "loss_naive": float(naive_loss.detach()),
            "loss_abs_diff": abs(float(loss.detach()) - float(naive_loss.detach())),
            "policy_logps_max_abs_diff": float((sums - torch.cat([pc, pr])).detach().abs().max()),
            "policy_logps_max_abs": float(sums.detach().abs().max()),
            "grad_max_abs_diff": grad_diff,
            "grad_max_abs": grad_scale,
            "tokens": int(batch["attention_mask"].sum()),
            "pairs": b,
        }
        engine.step()  # clip + AdamW + zero_grad
        torch.nn.utils.clip_grad_norm_(naive_model.parameters(), cfg.trainer.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    out["params_max_abs_diff_after_2_steps"] = max(
        float((a - b).abs().max())
        for a, b in zip(ours_model.parameters(), naive_model.parameters(), strict=True)
    )
    out["ln2"] = LN2
    return out


# --------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}"
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps after warm-up")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=1, help="run every variant this many times, interleaved")
    p.add_argument("--pairs", type=int, help="pairs per step (default: the size's)")
    p.add_argument("--prompt-len", type=int, help="mean prompt tokens (default: the size's)")
    p.add_argument("--response-len", type=int, help="mean response tokens (default: the size's)")
    p.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="weight dtype: auto = bf16 on a GPU (bf16 autocast too), fp32 on a CPU",
    )
    p.add_argument("--lr", type=float, default=1e-6, help="learning rate (TRL's default)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    p.add_argument("--peak-tflops", type=float, help="peak FLOP/s for MFU, in TFLOP/s")
    p.add_argument("--out", type=Path, help="JSONL (default bench/results/<host>-<date>.jsonl)")
    p.add_argument("--no-isolate", action="store_true", help="run the variants in this process")
    p.add_argument(
        "--check", action="store_true", help="parity of our step against the naive step, then exit"
    )
    args = p.parse_args(argv)
    spec = SIZES[args.size]
    args.size_spec = Size(
        **{
            **asdict(spec),
            **{
                k: v
                for k, v in (
                    ("pairs", args.pairs),
                    ("prompt", args.prompt_len),
                    ("response", args.response_len),
                )
                if v is not None
            },
        }
    )
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variant_list) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    if args.out is None:
        args.out = (
            REPO / "bench" / "results" / f"{socket.gethostname()}-{datetime.date.today().isoformat()}.jsonl"
        )
    return args


RUNNERS = {
    "ours": run_ours,
    "naive": run_naive,
    "trl": lambda a: run_trl(a, fast=False),
    "trl_fast": lambda a: run_trl(a, fast=True),
}


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """torch's intra-op threads for the duration (restored after, so tests can call in-process)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_variant(args, variant: str) -> dict:
    if variant.startswith("trl") and importlib.util.find_spec("trl") is None:
        return {
            "variant": variant,
            "size": args.size,
            "error": "trl is not installed (pip install 'trl==1.16.0')",
        }
    with cpu_threads(args.threads):
        return RUNNERS[variant](args)


def summary_table(records: list[dict]) -> str:
    """Markdown: per variant, the median over repeats with min-max."""

    def spread(values: list[float], fmt: str) -> str:
        if not values:
            return "n/a"
        if len(values) == 1:
            return format(values[0], fmt)
        return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"

    lines = [
        "| variant | tokens/s | step ms | peak memory | MFU | ref precompute s |",
        "|---|---|---|---|---|---|",
    ]
    by_variant: dict[str, list[dict]] = {}
    for r in records:
        by_variant.setdefault(r["variant"], []).append(r)
    for name, recs in by_variant.items():
        ok = [r for r in recs if "error" not in r]
        if not ok:
            lines.append(f"| {name} | error: {recs[0]['error'].strip().splitlines()[-1][:100]} | | | | |")
            continue
        gpu = "peak_gib" in ok[0]
        mem = [r["peak_gib"] if gpu else r["peak_rss_growth_mib"] for r in ok]
        cells = [
            spread([r["tokens_per_s"] for r in ok], ",.0f"),
            spread([r["step_ms"] for r in ok], ".1f"),
            spread([m for m in mem if m is not None], ".1f") + (" GiB" if gpu else " MiB (RSS growth)"),
            spread([r["mfu"] for r in ok if r["mfu"] is not None], ".3f"),
            spread([r["ref_precompute_s"] for r in ok if r["ref_precompute_s"] is not None], ".2f"),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    if args.check:
        with cpu_threads(args.threads):
            result = check(args)
        print(json.dumps(result, indent=2))
        return [result]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = os.environ.get("STEP_BENCH_COMMAND") or " ".join(["python", "bench/step_bench.py", *raw])
    os.environ["STEP_BENCH_COMMAND"] = command
    records = []
    for _ in range(args.repeats):
        for variant in args.variant_list:
            if args.no_isolate:
                rec = run_variant(args, variant)
                with args.out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
            else:
                rec = run_child(args, raw, variant)
            records.append(rec)
            shown = {k: v for k, v in rec.items() if k not in ("versions", "command", "error")}
            print(json.dumps(shown), flush=True)
            if "error" in rec:
                print(f"{variant} failed:\n{rec['error']}", file=sys.stderr, flush=True)
    print(f"\n{args.size} on {records[0].get('device', '?')}; records appended to {args.out}\n")
    print(summary_table(records))
    return records


def run_child(args, raw: list[str], variant: str) -> dict:
    """Run one variant in a fresh interpreter; it appends its record to --out, which is read back here."""
    argv = raw
    for flag, value in (("--variants", variant), ("--repeats", "1"), ("--out", str(args.out))):
        argv = [*_drop_flag(argv, flag), flag, value]
    before = args.out.stat().st_size if args.out.exists() else 0
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv, "--no-isolate"],
        capture_output=True,
        text=True,
    )
    with args.out.open() as f:
        f.seek(before)
        lines = [json.loads(line) for line in f.read().splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        rec = {"variant": variant, "size": args.size, "error": (proc.stderr or proc.stdout)[-3000:]}
        with args.out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        return rec
    return lines[-1]


def _drop_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag VALUE`` / ``flag=VALUE``."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == flag:
            i += 2
            continue
        if not argv[i].startswith(flag + "="):
            out.append(argv[i])
        i += 1
    return out


if __name__ == "__main__":
    main()
