"""The miniature base model: a small Llama-style model pre-trained from scratch on generated worked problems, then
supervised fine-tuned (SFT) on correct demonstrations in the chat template.

``ensure_model(path, spec)`` builds the Hugging Face folder on first use and returns it; a folder built from the
same spec (its key: a hash of the spec) is reused. The folder holds the weights, a character-level tokenizer with
the chat template, and ``miniature_build.json``: the spec, its key, timings, and the SFT model's held-out greedy
accuracy per family. Everything is seeded; the same spec on the same machine gives the same weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from filelock import FileLock

from align.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS  # the tiny model's specials and Zephyr-shaped template
from miniature import tasks
from miniature.generate import generate

log = logging.getLogger(__name__)

SPEC_FILE = "miniature_build.json"
CHARS = ["\n"] + [chr(i) for i in range(32, 127)]  # printable ASCII; anything else is <unk>
# Bumped when the build or the task generators change what a spec builds.
BUILD_VERSION = 1
# Keys that do not change the model: how fast it is built, and the pairs derived from it afterwards.
NOT_MODEL_KEYS = ("kind", "threads", "pairs")


def spec_key(spec: Mapping) -> str:
    """The model's cache key: a hash of its spec (minus ``NOT_MODEL_KEYS``) and ``BUILD_VERSION``."""
    body = {k: v for k, v in sorted(spec.items()) if k not in NOT_MODEL_KEYS} | {"version": BUILD_VERSION}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def build_tokenizer(max_length: int):
    """A character-level tokenizer (one id per printable ASCII character) with BOS/EOS/PAD and a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_length,
    )


def build_model(tokenizer, spec: Mapping):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_layers"],
        num_attention_heads=spec["num_heads"],
        num_key_value_heads=spec["num_heads"],
        max_position_embeddings=spec["max_length"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(spec["seed"])
    return LlamaForCausalLM(config)


def _fit(model, batches, steps: int, lr: float, warmup: int, name: str = "fit") -> float:
    """AdamW (weight decay on matrices only) with linear warm-up and cosine decay to 10%, clipped at 1; ``batches``
    yields (input_ids, labels, attention_mask or None). Logs the loss ten times along the way. Returns the last
    loss."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
    )

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    model.train()
    loss = torch.tensor(float("nan"))
    start, every = time.perf_counter(), max(1, steps // 10)
    for i in range(steps):
        x, labels, mask = next(batches)
        loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (i + 1) % every == 0:
            log.info(
                "%s step %d/%d: loss %.3f (%.0f s)",
                name,
                i + 1,
                steps,
                float(loss.detach()),
                time.perf_counter() - start,
            )
    model.eval()
    return float(loss.detach())


def corpus_text(p: tasks.Problem, chat: bool) -> str:
    """A problem as pre-training text: plain ("Question: ... Solution: ...") or a conversation in the chat template
    (BOS, user turn, assistant turn), as a web corpus holds both prose and dialogue."""
    if chat:
        return f"<s><|user|>\n{p.question}</s>\n<|assistant|>\n{p.solution}</s>\n"
    return f"Question: {p.question}\nSolution: {p.solution}\n"


def corpus(problems: Sequence[tasks.Problem], n_facts: int, chat_fraction: float, seed: int) -> list[str]:
    """The pre-training documents: worked problems (a ``chat_fraction`` of them as conversations) and lines of
    one-digit facts, shuffled."""
    r = random.Random(seed)
    docs = [corpus_text(p, r.random() < chat_fraction) for p in problems]
    docs += [tasks.facts(r) for _ in range(n_facts)]
    r.shuffle(docs)
    return docs


def pretrain(model, tokenizer, docs: Sequence[str], spec: Mapping) -> float:
    """Next-token prediction on the packed corpus (documents joined by EOS), random windows of ``seq_len``."""
    stream: list[int] = []
    for ids in tokenizer(list(docs), add_special_tokens=False).input_ids:
        stream += ids + [tokenizer.eos_token_id]
    data = torch.tensor(stream)
    gen = torch.Generator().manual_seed(spec["seed"])
    seq, bs = spec["seq_len"], spec["batch_size"]

    def batches():
        while True:
            starts = torch.randint(len(data) - seq, (bs,), generator=gen).tolist()
            x = torch.stack([data[s : s + seq] for s in starts])  # (B, T)
            yield x, x, None

    steps = spec["pretrain_steps"]
    return _fit(model, batches(), steps, spec["lr"], max(1, steps // 20), "pre-training")


def sft_rows(tokenizer, problems: Sequence[tasks.Problem], max_length: int) -> list[tuple[list[int], int]]:
    """(ids of prompt + answer, number of prompt ids) per problem, tokenized as preference training does."""
    from align.preference_data import Tokenize

    tok = Tokenize(tokenizer, max_length, max_length // 2, "keep_end")
    rows = []
    for p in problems:
        out = tok([{"role": "user", "content": p.question}], p.solution, p.solution)
        rows.append((out["prompt_ids"] + out["chosen_ids"], len(out["prompt_ids"])))
    return rows


def sft(model, tokenizer, problems: Sequence[tasks.Problem], spec: Mapping) -> float:
    """Supervised fine-tuning on the demonstrations in the chat template: mean NLL of the answer tokens."""
    rows = sft_rows(tokenizer, problems, spec["max_length"])
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    bs, pad = spec["batch_size"], tokenizer.pad_token_id

    def batches():
        while True:
            batch = [rows[i] for i in torch.randint(len(rows), (bs,), generator=gen).tolist()]
            width = max(len(ids) for ids, _ in batch)
            x = torch.full((bs, width), pad)  # (B, T), right-padded
            labels = torch.full((bs, width), -100)  # prompt and padding masked
            mask = torch.zeros((bs, width), dtype=torch.long)
            for j, (ids, n_prompt) in enumerate(batch):
                x[j, : len(ids)] = torch.tensor(ids)
                labels[j, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
                mask[j, : len(ids)] = 1
            yield x, labels, mask

    steps = spec["sft_steps"]
    return _fit(model, batches(), steps, spec["sft_lr"], max(1, steps // 10), "SFT")


def accuracy(model, tokenizer, problems: Sequence[tasks.Problem], max_new_tokens: int) -> dict[str, dict]:
    """Greedy held-out accuracy per family: {family: {n, correct, accuracy}} plus "mean" (unweighted over families)."""
    answers = generate(model, tokenizer, [p.question for p in problems], max_new_tokens)
    per: dict[str, list[bool]] = {}
    for p, (a,) in zip(problems, answers, strict=True):
        per.setdefault(p.family, []).append(tasks.verify(p.family, a, p.answer))
    out = {f: {"n": len(v), "correct": sum(v), "accuracy": sum(v) / len(v)} for f, v in sorted(per.items())}
    out["mean"] = {"accuracy": sum(v["accuracy"] for v in out.values()) / len(out)}
    return out


def corpora(spec: Mapping) -> dict[str, list]:
    """The pre-training documents and the SFT demonstrations: problems of the spec's families, none of them a
    benchmark question or a pair prompt (``miniature.pairs``)."""
    fams, seed = dict(spec["families"]), spec["seed"]
    taken = {p.question for p in tasks.benchmark()}
    if spec.get("pairs", {}).get("dir"):
        from miniature.pairs import pair_prompts

        taken |= {p.question for split in pair_prompts(fams, spec["pairs"]).values() for p in split}
    problems = tasks.mixed(fams, spec["pretrain_docs"], seed + 1, taken, distinct=False)
    return {
        "pretrain": corpus(problems, spec["fact_docs"], spec["chat_fraction"], seed),
        "sft": tasks.mixed(fams, spec["sft_docs"], seed + 2, taken, distinct=False),
    }


def ensure_model(path: str | os.PathLike, spec: Mapping) -> Path:
    """The miniature model folder at ``path``, built unless it already holds one built from ``spec``; then its
    on-policy pairs when ``spec["pairs"]["dir"]`` is set (``miniature.pairs.ensure_pairs``)."""
    path = Path(path)
    spec = dict(spec)
    key = spec_key(spec)

    def up_to_date() -> bool:
        f = path / SPEC_FILE
        return f.exists() and json.loads(f.read_text()).get("key") == key

    with _threads(spec.get("threads")):
        if not up_to_date():
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock"):
                if not up_to_date():
                    _build(path, spec, key)
        pairs = spec.get("pairs") or {}
        if pairs.get("dir"):
            from miniature.pairs import ensure_pairs

            ensure_pairs(path, spec["families"], pairs, key)
    return path


@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _build(path: Path, spec: dict, key: str) -> dict:
    log.info("building the miniature model at %s (key %s)", path, key)
    times = {}
    start = time.perf_counter()
    data = corpora(spec)
    tokenizer = build_tokenizer(spec["max_length"])
    model = build_model(tokenizer, spec)
    times["data"] = time.perf_counter() - start
    pre_loss = pretrain(model, tokenizer, data["pretrain"], spec)
    times["pretrain"] = time.perf_counter() - start - sum(times.values())
    sft_loss = sft(model, tokenizer, data["sft"], spec)
    times["sft"] = time.perf_counter() - start - sum(times.values())
    acc = accuracy(model, tokenizer, tasks.benchmark(), spec["max_new_tokens"])
    times["benchmark"] = time.perf_counter() - start - sum(times.values())
    record = {
        "key": key,
        "spec": spec,
        "version": BUILD_VERSION,
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretrain_loss": pre_loss,
        "sft_loss": sft_loss,
        "benchmark_accuracy": acc,  # greedy, on miniature.tasks.benchmark(): what eval/tasks/miniature scores
        "seconds": times,
        "torch_threads": torch.get_num_threads(),
    }
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=path.name + ".tmp"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / SPEC_FILE).write_text(json.dumps(record, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    log.info(
        "miniature model built in %.0f s: held-out greedy accuracy %s",
        sum(times.values()),
        {f: round(v["accuracy"], 3) for f, v in acc.items()},
    )
    return record
