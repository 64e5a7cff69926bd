"""One DPO training step: this repo's trainer against TRL's DPOTrainer, same model, same pairs, same order.

Every variant trains the same random-init Llama-style model (seeded) on the same synthetic pairs, in the same
order (the trainer's seeded ``align.steps.BatchOrder``), and reports tokens/s (non-pad tokens through the policy,
chosen + rejected), the median step time after warm-up, peak memory, MFU and, where the variant precomputes
reference log-probs, what that pass cost.

Variants (``--variants``, comma-separated):
  ours      the trainer itself: ``align.trainer.Trainer`` built from a composed config over the synthetic model
            (saved as a Hugging Face folder with a word-level tokenizer) and pairs (a JSON-lines file), run by its
            own ``train()``; each step timed is one call of its optimizer step (collate, forward, loss, the
            finiteness checks, backward, clipping, AdamW, the window's statistics), the reference pass is its own
            precompute at step 0. Nothing of the step is copied here, so the bench cannot drift from the trainer.
  naive     plain torch: full-vocabulary logits and log_softmax (``align.logprobs.naive_sequence_logps``),
            separate forwards for chosen and rejected, the same precomputed reference and optimizer settings
            (the "correctness first" baseline)
  trl       TRL ``DPOTrainer`` as shipped: gradient checkpointing on, a reference model copy run every step
  trl_fast  TRL's fastest configuration: checkpointing off, Liger kernels (if installed and on CUDA),
            ``precompute_ref_log_probs=True`` and no reference model kept
Each variant runs in its own subprocess (same seed, same model, same pairs), so one variant's memory or crash
does not touch the next; ``--repeats`` interleaves the variants that many times.

Run from the repository root (the ``align`` package must be importable: installed, or the root on PYTHONPATH):

    .venv/bin/python bench/step_bench.py --size tiny --repeats 3          # CPU, a few minutes
    python bench/step_bench.py --size 1b --steps 10 --variants ours,trl,trl_fast    # one GPU (docs/benchmarks.md)
    .venv/bin/python bench/step_bench.py --check --size tiny               # parity: the trainer vs the naive step

Results: one JSON line per variant and repeat in ``--out`` (default ``bench/results/<host>-<date>.jsonl``) with
the device, package versions and the command; a summary table on stdout. Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU; on a CPU it is the growth of the process's peak resident set
(``VmHWM`` in /proc/self/status, reset through /proc/self/clear_refs) over the timed steps, so it includes
allocator caching and is comparable only between variants of one run. MFU = 6 N tokens/s / peak FLOP/s with N
all parameters (embeddings included), as the trainer logs it; peak FLOP/s from ``--peak-tflops`` or the trainer's
one table (``align.trainer.PEAK_BF16_FLOPS``: the vendors' dense bf16 data-sheet figures), n/a on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
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
PEAK_SOURCE = "align.trainer.PEAK_BF16_FLOPS (the vendors' dense bf16 data-sheet figures)"


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


def batches(args, rows: list[dict], n_batches: int) -> list[list[dict]]:
    """The pairs of each step, in the trainer's order: its seeded ``BatchOrder`` over the rows (what the trainer
    draws for ``seed=args.seed``; ``run_ours`` checks that it does)."""
    from align.steps import BatchOrder

    order = BatchOrder(len(rows), args.size_spec.pairs, args.seed)
    return [[rows[p] for p in order.positions(i)] for i in range(n_batches)]


def as_text(ids: list[int]) -> str:
    return " ".join("</s>" if i == EOS else f"t{i}" for i in ids)


def as_strings(row: dict) -> dict:
    """A pair as text that the word tokenizer turns back into its ids. The responses already end in EOS (so no
    trainer adds one); the leading space keeps the prompt's ids a prefix of prompt + response."""
    return {
        "prompt": as_text(row["prompt_ids"]),
        "chosen": " " + as_text(row["chosen_ids"]),
        "rejected": " " + as_text(row["rejected_ids"]),
    }


def word_tokenizer(vocab: int):
    """A word-level tokenizer where ``t<i>`` is token id i, so a trainer tokenizes the text back to our exact ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<pad>": PAD, "</s>": EOS, "<s>": 3} | {f"t{i}": i for i in range(4, vocab)}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>", bos_token="<s>"
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


# ------------------------------------------------------------------------------------------ the trainer


def trainer_overrides(args, steps: int, folder: Path, lr: float) -> list[str]:
    """The config of the trainer run over the synthetic model and pairs in ``folder``: DPO, precomputed reference,
    a constant learning rate, one log at the end, nothing saved, no evaluation."""
    size = args.size_spec
    longest = 4 * (size.prompt + size.response)  # no pair is truncated
    model_dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[weight_dtype(args.dtype)]
    return [
        "model=tiny",
        f"model.name_or_path={folder / 'model'}",
        "model.build=null",
        f"model.dtype={model_dtype}",
        "dataset=local_file",
        f"dataset.path={folder / 'pairs.jsonl'}",
        "dataset.format=strings",
        "dataset.eval_fraction=0",
        f"dataset.max_length={longest}",
        f"dataset.max_prompt_length={longest}",
        "method=dpo",
        f"method.beta={BETA}",
        "trainer.reference=precompute",
        f"trainer.max_steps={steps}",
        f"trainer.per_device_train_batch_size={size.pairs}",
        f"trainer.per_device_eval_batch_size={size.pairs}",
        "trainer.gradient_accumulation_steps=1",
        f"trainer.learning_rate={lr}",
        "trainer.lr_scheduler=constant",
        "trainer.warmup_ratio=0.0",
        f"trainer.logging_steps={steps}",
        "trainer.eval_steps=0",
        "trainer.save_steps=0",
        "trainer.save_final=false",
        "trainer.progress_bar=false",
        "trainer.displacement_warning=null",
        "evaluate.benchmarks=null",
        f"seed={args.seed}",
        f"paths.cache_dir={folder / 'cache'}",
        f"output_dir={folder / 'run'}",
    ]


@contextlib.contextmanager
def built_trainer(args, rows: list[dict], steps: int, lr: float):
    """``align.trainer.Trainer`` over the bench's model (saved as a Hugging Face folder with the word tokenizer)
    and pairs (a JSON-lines file of their text), in a temporary folder; checked to hold exactly the synthetic ids
    and to draw the bench's batches."""
    from align.config import compose
    from align.trainer import Trainer

    size = args.size_spec
    with tempfile.TemporaryDirectory(prefix="step-bench-") as tmp:
        folder = Path(tmp)
        make_model(size, weight_dtype(args.dtype), torch.device("cpu")).save_pretrained(folder / "model")
        word_tokenizer(size.vocab).save_pretrained(folder / "model")
        (folder / "pairs.jsonl").write_text("".join(json.dumps(as_strings(r)) + "\n" for r in rows))
        cfg = compose(trainer_overrides(args, steps, folder, lr))
        (folder / "run").mkdir()
        trainer = Trainer(cfg, folder / "run")
        try:
            data = trainer.data.train.dataset
            for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
                if data[key] != [r[key] for r in rows] or data["row"] != [r["row"] for r in rows]:
                    raise AssertionError(f"the trainer tokenized {key} differently from the synthetic ids")
            drawn = [[data[p]["row"] for p in trainer.order.positions(i)] for i in range(steps)]
            if drawn != [[r["row"] for r in b] for b in batches(args, rows, steps)]:
                raise AssertionError("the trainer's batches differ from the bench's")
            yield trainer
        finally:
            trainer.close()


def run_ours(args) -> dict:
    """Time the trainer's own loop (``Trainer.train``) step by step: a step is the span between the ends of two
    consecutive optimizer updates (``engine.step``, then a device sync), so it covers everything the loop does for
    one step (collate, forward, loss, finiteness checks, backward, clipping, AdamW, the window's statistics) and
    nothing the bench wrote. The first step has no start mark and counts as warm-up."""
    size = args.size_spec
    n_batches = max(args.warmup, 1) + args.steps
    rows = make_pairs(size, size.pairs * n_batches)
    mem, ends = Memory(), []
    with built_trainer(args, rows, n_batches, args.lr) as trainer:
        update = trainer.engine.step

        def timed_update():
            norm = update()
            sync()
            ends.append(time.perf_counter())
            if len(ends) == n_batches - args.steps:  # the last warm-up step ends: the timed steps start
                mem.reset()
            return norm

        trainer.engine.step = (
            timed_update  # the loop's one optimizer update per step (no gradient accumulation)
        )
        result = trainer.train()
        memory = mem.read()
        nparam = trainer.flops_per_token // 6
    if len(ends) != n_batches:
        raise AssertionError(f"the trainer made {len(ends)} optimizer updates in {n_batches} steps")
    times = [None] + [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]  # step 1 has no start mark
    return summarise(
        args,
        "ours",
        batches(args, rows, n_batches),
        times,
        memory,
        nparam,
        warmup=n_batches - args.steps,
        ref_s=result["reference_seconds"],
        extra={"loss": result["train"]["loss"], "trainer_tokens_per_s": round(result["tokens_per_s"], 1)},
    )


# --------------------------------------------------------------------------------------- naive path


def naive_pair_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) log-probs from two separate full-logits forwards over the halves of a collated batch."""
    from align.logprobs import naive_sequence_logps

    b = batch["row"].shape[0]
    halves = [
        {k: batch[k][s] for k in ("input_ids", "attention_mask", "loss_mask")}
        for s in (slice(0, b), slice(b, 2 * b))
    ]
    return tuple(
        naive_sequence_logps(model, h["input_ids"], h["attention_mask"], h["loss_mask"]).sums for h in halves
    )


def naive_dpo(pc, pr, rc, rr) -> torch.Tensor:
    return -F.logsigmoid(BETA * ((pc - rc) - (pr - rr))).mean()


def naive_optimizer(model, lr: float):
    """torch's AdamW with the trainer's defaults (conf/trainer/default.yaml: betas, eps, no weight decay)."""
    from align.config import TrainerConfig

    tr = TrainerConfig()
    return torch.optim.AdamW(
        model.parameters(),
        lr=lr,
        betas=(tr.adam_beta1, tr.adam_beta2),
        eps=tr.adam_epsilon,
        weight_decay=tr.weight_decay,
        fused=torch.cuda.is_available() or None,
    )


def naive_step(model, opt, batch, ref) -> torch.Tensor:
    from align.config import TrainerConfig

    pc, pr = naive_pair_logps(model, batch)
    loss = naive_dpo(pc, pr, ref[0], ref[1])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), TrainerConfig().max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def run_naive(args) -> dict:
    from align.preference_data import collate

    size, dev = args.size_spec, device()
    n_batches = args.warmup + args.steps
    rows = make_pairs(size, size.pairs * n_batches)
    steps = batches(args, rows, n_batches)
    model = make_model(size, weight_dtype(args.dtype), dev)
    opt = naive_optimizer(model, args.lr)
    collated = [collate(b, PAD) for b in steps]
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    )

    sync()
    t0 = time.perf_counter()
    with torch.no_grad(), autocast:
        refs = [naive_pair_logps(model, {k: v.to(dev) for k, v in b.items()}) for b in collated]
    sync()
    ref_s = time.perf_counter() - t0

    mem, times = Memory(), []
    for i, (batch, ref) in enumerate(zip(collated, refs, strict=True)):
        if i == args.warmup:
            mem.reset()
        sync()
        t0 = time.perf_counter()
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        with autocast:
            loss = naive_step(model, opt, batch, ref)
        float(loss.detach())  # the trainer reads the loss every step too
        sync()
        times.append(time.perf_counter() - t0)
    return summarise(args, "naive", steps, times, mem.read(), n_params(model), ref_s=ref_s)


# ------------------------------------------------------------------------------------------------ TRL


def run_trl(args, fast: bool) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    size, dev = args.size_spec, device()
    n_batches = args.warmup + args.steps
    rows = make_pairs(size, size.pairs * n_batches)
    steps = batches(args, rows, n_batches)
    ordered = [r for b in steps for r in b]  # read in sequence: the same batches as the trainer's
    ds = Dataset.from_list([as_strings(r) for r in ordered])
    model = make_model(size, weight_dtype(args.dtype), dev)
    ref_model = None if fast else copy.deepcopy(model).eval().requires_grad_(False)
    liger = fast and dev.type == "cuda" and importlib.util.find_spec("liger_kernel") is not None
    times: list[float] = []
    ref_time: list[float] = []
    mem = Memory()

    class Clock(TrainerCallback):
        """on_step_begin .. on_step_end spans forward, backward, clipping, the optimizer step and zero_grad."""

        def on_step_begin(self, *a, **k):
            if len(times) == args.warmup:
                mem.reset()
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
        if prepared[key] != [r[key] for r in ordered]:
            raise AssertionError(f"TRL tokenized {key} differently from the synthetic ids")
    trainer.train()
    out_dir.cleanup()
    expected = [batch_tokens(b) for b in steps]
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
        steps,
        times,
        mem.read(),
        n_params(model),
        ref_s=ref_time[0] if ref_time else None,
        ref_forward_each_step=not fast,
        extra=extra,
    )


# ------------------------------------------------------------------------------------------ records


def peak_flops(args) -> tuple[float | None, str | None]:
    """--peak-tflops, else the trainer's figure for this GPU (the one table, ``align.trainer.PEAK_BF16_FLOPS``)."""
    from align.trainer import peak_flops as trainer_peak_flops

    if args.peak_tflops:
        return args.peak_tflops * 1e12, "--peak-tflops"
    peak = trainer_peak_flops(device())
    return (peak, PEAK_SOURCE) if peak else (None, None)


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
    args, name, steps, times, memory, nparam, warmup=None, ref_s=None, ref_forward_each_step=False, extra=None
) -> dict:
    """One JSON record: medians over the steps after ``warmup`` (default ``--warmup``); ``steps``: each step's
    pairs, ``times``: each step's seconds."""
    size = args.size_spec
    warmup = args.warmup if warmup is None else warmup
    tokens = [batch_tokens(b) for b in steps[: len(times)]]
    timed, timed_tokens = times[warmup:], tokens[warmup:]
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
        "warmup": warmup,
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
    """The trainer's steps vs naive steps on the same batches, in fp32: reference log-probs, two steps of loss
    and gradients, the weights after them.

    Step 1 runs at policy = reference (DPO loss ln 2 for both); both then take one clipped AdamW step (lr 1e-3,
    so the second step's loss moves off ln 2) and step 2 compares loss and gradients again. The trainer runs its
    own ``train()``; what it computed is read at two seams, without changing it: the arguments and result of
    ``preference_loss`` (policy and reference log-probs, loss) and the gradients when its engine's ``step`` is
    called.
    """
    import align.trainer
    from align.preference_data import collate

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    size, dev = args.size_spec, device()
    args.dtype, lr = "fp32", 1e-3
    rows = make_pairs(size, 2 * size.pairs, seed=args.seed)
    steps = batches(args, rows, 2)
    seen: list[dict] = []

    with built_trainer(args, rows, 2, lr) as trainer:
        loss_fn, engine_step = align.trainer.preference_loss, trainer.engine.step
        params = dict(trainer.engine.policy.model.named_parameters())

        def watched_loss(method, cfg, sums, counts, reference):
            loss, stats = loss_fn(method, cfg, sums, counts, reference)
            ref = reference[0].detach().clone()  # (B, 2): the cached reference sums, chosen and rejected
            seen.append({"sums": sums.detach().clone(), "ref": ref, "loss": float(loss.detach())})
            return loss, stats

        def watched_step():
            seen[-1]["grads"] = {n: p.grad.detach().clone() for n, p in params.items()}
            return engine_step()

        align.trainer.preference_loss, trainer.engine.step = watched_loss, watched_step
        try:
            trainer.train()
        finally:
            align.trainer.preference_loss = loss_fn
        trained = {n: p.detach().clone() for n, p in params.items()}

    naive_model = make_model(size, torch.float32, dev)
    opt = naive_optimizer(naive_model, lr)
    collated = [{k: v.to(dev) for k, v in collate(b, PAD).items()} for b in steps]
    with torch.no_grad():
        naive_refs = [naive_pair_logps(naive_model, b) for b in collated]
    ref_diff = max(
        float((ours["ref"] - torch.stack(r, 1)).abs().max()) for ours, r in zip(seen, naive_refs, strict=True)
    )

    out = {"size": args.size, "device": device_name(), "dtype": "float32", "ref_logps_max_abs_diff": ref_diff}
    for step, (batch, nref, ours) in enumerate(zip(collated, naive_refs, seen, strict=True), start=1):
        pc, pr = naive_pair_logps(naive_model, batch)
        naive_loss = naive_dpo(pc, pr, nref[0], nref[1])
        naive_loss.backward()
        grad_diff, grad_scale = 0.0, 0.0
        for name, p in naive_model.named_parameters():
            grad_diff = max(grad_diff, float((ours["grads"][name] - p.grad).abs().max()))
            grad_scale = max(grad_scale, float(p.grad.abs().max()))
        out[f"step{step}"] = {
            "loss_ours": ours["loss"],
            "loss_naive": float(naive_loss.detach()),
            "loss_abs_diff": abs(ours["loss"] - float(naive_loss.detach())),
            "policy_logps_max_abs_diff": float((ours["sums"] - torch.cat([pc, pr])).detach().abs().max()),
            "policy_logps_max_abs": float(ours["sums"].abs().max()),
            "grad_max_abs_diff": grad_diff,
            "grad_max_abs": grad_scale,
            "tokens": int(batch["attention_mask"].sum()),
            "pairs": size.pairs,
        }
        torch.nn.utils.clip_grad_norm_(naive_model.parameters(), trainer.cfg.trainer.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    out["params_max_abs_diff_after_2_steps"] = max(
        float((trained[n] - p.detach()).abs().max()) for n, p in naive_model.named_parameters()
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
