"""The embedded default model: a small Llama-style model and a byte-level BPE tokenizer built locally.

Nothing is downloaded and no weights live in git: ``ensure_tiny_model`` trains the tokenizer with
``tokenizers`` on the bundled data, builds ``LlamaForCausalLM`` from a config with seeded random weights, and
saves both as an ordinary Hugging Face folder, which the training code then loads with ``from_pretrained``
exactly as it loads a hub model. The folder records the spec it was built from and is rebuilt if that changes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

# Zephyr's template shape: role tags, the message, then EOS after every turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
SPEC_FILE = "tiny_build.json"


def _texts(jsonl_files: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Every string in the preference files (prompts and message contents), for tokenizer training."""
    for path in jsonl_files:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                for value in row.values():
                    if isinstance(value, str):
                        yield value
                    elif isinstance(value, list):
                        yield from (m["content"] for m in value if isinstance(m, dict) and "content" in m)


def build_tokenizer(
    jsonl_files: Iterable[str | os.PathLike], vocab_size: int = 1024, model_max_length: int = 512
):
    """A byte-level BPE tokenizer (no UNKs) with BOS/EOS/PAD and a chat template, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_texts(jsonl_files), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
    )


def build_model(vocab_size: int, spec: Mapping, tokenizer=None):
    """A randomly initialised ``LlamaForCausalLM`` from ``spec`` (hidden_size, num_layers, ...), seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_layers"],
        num_attention_heads=spec["num_heads"],
        num_key_value_heads=spec["num_kv_heads"],
        max_position_embeddings=spec["max_position_embeddings"],
        tie_word_embeddings=False,
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        eos_token_id=getattr(tokenizer, "eos_token_id", None),
        pad_token_id=getattr(tokenizer, "pad_token_id", None),
    )
    torch.manual_seed(spec["seed"])
    return LlamaForCausalLM(config)


def sft_warmup(
    model, tokenizer, jsonl_files: Iterable[str | os.PathLike], steps: int, lr: float, seed: int
) -> None:
    """A short supervised warm-up on the chosen answers, so the default starts from an "SFT model" as the paper's
    runs do (per-token NLL of the response tokens; AdamW; batch 32; seeded)."""
    import torch

    from align.logprobs import sequence_logps
    from align.preference_data import Tokenize, collate

    rows = []
    tok = Tokenize(tokenizer, max_length=128, max_prompt_length=64, truncation_mode="keep_end")
    for path in jsonl_files:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                out = tok(row["chosen"][:-1], row["chosen"][-1]["content"], row["rejected"][-1]["content"])
                rows.append(
                    {
                        "prompt_ids": out["prompt_ids"],
                        "chosen_ids": out["chosen_ids"],
                        "rejected_ids": out["chosen_ids"],
                        "row": 0,
                    }
                )
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(rows), (32,), generator=gen).tolist()
        batch = collate([rows[i] for i in idx], tokenizer.pad_token_id)
        out = sequence_logps(
            model, batch["input_ids"][:32], batch["attention_mask"][:32], batch["loss_mask"][:32]
        )
        loss = -(out.sums.sum() / out.counts.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    log.info("tiny model SFT warm-up: %d steps, final response NLL %.3f", steps, loss.item())


def ensure_tiny_model(path: str | os.PathLike, spec: Mapping) -> Path:
    """Build the tiny model folder at ``path`` unless it already holds one built from the same ``spec``.

    ``spec`` keys: data_files (list of JSONL files for the tokenizer and the warm-up), vocab_size, hidden_size,
    intermediate_size, num_layers, num_heads, num_kv_heads, max_position_embeddings, seed, and optionally
    sft_steps / sft_lr (a supervised warm-up on the chosen answers; 0 = random weights). Safe under concurrent sweep jobs
    (file lock, build in a temporary folder, atomic rename).
    """
    path = Path(path)
    spec = {k: (list(map(str, v)) if k == "data_files" else v) for k, v in dict(spec).items()}
    spec_id = {k: v for k, v in spec.items() if k != "data_files"}
    spec_id["data_files"] = [Path(p).name for p in spec["data_files"]]

    def up_to_date() -> bool:
        f = path / SPEC_FILE
        return f.exists() and json.loads(f.read_text()) == spec_id

    if up_to_date():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if up_to_date():
            return path
        for f in spec["data_files"]:
            if not Path(f).exists():
                raise FileNotFoundError(f"tiny model: tokenizer training file {f} does not exist")
        log.info("building the tiny model at %s", path)
        tokenizer = build_tokenizer(spec["data_files"], spec["vocab_size"], spec["max_position_embeddings"])
        model = build_model(len(tokenizer), spec, tokenizer)
        if spec.get("sft_steps", 0) > 0:
            sft_warmup(
                model,
                tokenizer,
                spec["data_files"],
                spec["sft_steps"],
                spec.get("sft_lr", 1e-3),
                spec["seed"],
            )
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=path.name + ".tmp"))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SPEC_FILE).write_text(json.dumps(spec_id, indent=1))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    return path
