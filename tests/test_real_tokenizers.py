"""The prompt/answer boundary on three real tokenizers: the answer's ids are the ones the model generates.

For every row shape (the bundled data, UltraFeedback-shaped multi-turn chats, plain strings, HH dialogues), on the
Mistral-7B SentencePiece tokenizer with Zephyr's template, SmolLM2's byte-level BPE with ChatML, and the tiny
tokenizer: prompt + answer ids equal the joint tokenization of the whole conversation (BOS once where the tokenizer
adds one), the prompt is exactly the rendered prompt ending in the generation prompt, and the answer ends with EOS.
Tokenizing the answer on its own (the old code) puts SentencePiece's dummy prefix "▁" first, and fails these.
"""

from __future__ import annotations

import copy
import json

import pytest
from transformers import AutoTokenizer

from align.config import compose
from align.preference_data import load_preference_data
from tests.real_models import mistral_tokenizer_folder, smollm2_gguf

GENERATION_PROMPTS = {
    "mistral": "<|assistant|>\n",
    "smollm2": "<|im_start|>assistant\n",
    "tiny": "<|assistant|>\n",
}


@pytest.fixture(scope="module", params=["mistral", "smollm2", "tiny"])
def tok(request, tmp_path_factory, tiny_model_dir):
    if request.param == "mistral":
        t = AutoTokenizer.from_pretrained(mistral_tokenizer_folder(tmp_path_factory.mktemp("mistral")))
    elif request.param == "smollm2":
        gguf = smollm2_gguf()
        t = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    else:
        t = AutoTokenizer.from_pretrained(tiny_model_dir)
    t.name = request.param
    return t


def plain(tok):
    """The same tokenizer without a chat template (the plain-text path)."""
    t = copy.deepcopy(tok)
    t.chat_template = None
    return t


def bos_prefix(tok) -> list[int]:
    return (
        [tok.bos_token_id]
        if tok.bos_token_id is not None and tok("a").input_ids[:1] == [tok.bos_token_id]
        else []
    )


def joint(tok, text: str) -> list[int]:
    """The whole text tokenized in one piece, with BOS once where the tokenizer adds one."""
    ids = tok(text, add_special_tokens=False).input_ids
    head = bos_prefix(tok)
    return ids if ids[: len(head)] == head else head + ids


def through_last_eos(tok, ids: list[int]) -> list[int]:
    last = len(ids) - 1 - ids[::-1].index(tok.eos_token_id)
    assert not tok.decode(ids[last + 1 :]).strip()
    return ids[: last + 1]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load(tok, path, *overrides):
    cfg = compose(
        [
            "output_dir=unused",
            "dataset=local_file",
            f"dataset.path={path}",
            "dataset.eval_fraction=0",
            *overrides,
        ]
    ).dataset
    return load_preference_data(cfg, tok, seed=0)


ULTRAFEEDBACK = [
    {
        "prompt": "Explain photosynthesis briefly.",
        "chosen": [
            {"role": "system", "content": "You are a concise tutor."},
            {"role": "user", "content": "Explain photosynthesis briefly."},
            {"role": "assistant", "content": "Plants turn light, water and CO₂ into sugar and O₂."},
        ],
        "rejected": [
            {"role": "system", "content": "You are a concise tutor."},
            {"role": "user", "content": "Explain photosynthesis briefly."},
            {"role": "assistant", "content": "It is when animals breathe.\n\nThat's all."},
        ],
    },
    {
        "prompt": "And respiration?",
        "chosen": [
            {"role": "user", "content": "What is 12 * 12?"},
            {"role": "assistant", "content": "144"},
            {"role": "user", "content": "  And 13 * 13?"},
            {"role": "assistant", "content": "169, since 13² = 169."},
        ],
        "rejected": [
            {"role": "user", "content": "What is 12 * 12?"},
            {"role": "assistant", "content": "144"},
            {"role": "user", "content": "  And 13 * 13?"},
            {"role": "assistant", "content": " 196"},
        ],
    },
]
STRINGS = [
    {"prompt": "Q: What is 2 + 3?\nA:", "chosen": " 5", "rejected": " 6"},
    {"prompt": "Translate 'chat' to English.", "chosen": "cat", "rejected": "dog\n"},
]
HH = [
    {
        "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Name a prime.\n\nAssistant: 7",
        "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Name a prime.\n\nAssistant: 8",
    }
]


def shapes(repo_root, tmp_path):
    bundled = [json.loads(line) for line in open(repo_root / "data/tiny_prefs/test.jsonl")][:40]
    return {
        "bundled": (write_jsonl(tmp_path / "bundled.jsonl", bundled), "messages"),
        "ultrafeedback": (write_jsonl(tmp_path / "uf.jsonl", ULTRAFEEDBACK), "messages"),
        "strings": (write_jsonl(tmp_path / "strings.jsonl", STRINGS), "strings"),
        "hh": (write_jsonl(tmp_path / "hh.jsonl", HH), "hh"),
    }


def conversation(row, fmt) -> tuple[list[dict], str, str]:
    """(prompt messages, chosen, rejected) of a raw test row, written out independently of align/."""
    if fmt == "messages":
        return row["chosen"][:-1], row["chosen"][-1]["content"], row["rejected"][-1]["content"]
    if fmt == "strings":
        return [{"role": "user", "content": row["prompt"]}], row["chosen"], row["rejected"]
    turns = []
    for part in row["chosen"].split("\n\n")[1:]:
        role, text = part.split(": ", 1)
        turns.append({"role": {"Human": "user", "Assistant": "assistant"}[role], "content": text})
    return turns[:-1], turns[-1]["content"], row["rejected"].rsplit("Assistant: ", 1)[1]


def test_chat_rows_match_the_joint_tokenization(tok, repo_root, tmp_path):
    for name, (path, fmt) in shapes(repo_root, tmp_path).items():
        raw = [json.loads(line) for line in open(path)]
        data = load(tok, path, f"dataset.format={fmt}")
        for row, got in zip(raw, data.train.dataset, strict=True):
            prompt, chosen, rejected = conversation(row, fmt)
            p_text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            assert p_text.endswith(GENERATION_PROMPTS[tok.name])
            assert got["prompt_ids"] == joint(tok, p_text), name
            for answer, key in ((chosen, "chosen_ids"), (rejected, "rejected_ids")):
                full = tok.apply_chat_template(
                    prompt + [{"role": "assistant", "content": answer}], tokenize=False
                )
                assert got["prompt_ids"] + got[key] == through_last_eos(tok, joint(tok, full)), (name, answer)
                assert got[key][-1] == tok.eos_token_id
                if not answer[
                    0
                ].isspace():  # SentencePiece's dummy prefix "▁": never generated after the prompt
                    assert tok.convert_ids_to_tokens(got[key][:1])[0] != "▁", (name, answer)
        assert data.stats["train"]["boundary_merged"] == 0, name


def test_plain_text_rows_match_the_joint_tokenization(tok, repo_root, tmp_path):
    """Without a chat template the row's own text is used as it is (HH keeps its "Human:/Assistant:" turns)."""
    t = plain(tok)
    for name in ("strings", "hh"):
        path, fmt = shapes(repo_root, tmp_path)[name]
        raw = [json.loads(line) for line in open(path)]
        data = load(t, path, f"dataset.format={fmt}")
        for row, got in zip(raw, data.train.dataset, strict=True):
            if fmt == "strings":
                p_text, c_text = row["prompt"], row["prompt"] + row["chosen"]
            else:
                cut = row["chosen"].rindex("\n\nAssistant:") + len("\n\nAssistant:")
                p_text, c_text = row["chosen"][:cut], row["chosen"]
            full = joint(t, c_text)
            n = len(got["prompt_ids"])
            assert got["prompt_ids"] == full[:n] and n >= len(joint(t, p_text)) - 1, name
            assert got["prompt_ids"] + got["chosen_ids"] == full + [t.eos_token_id], name


def test_a_token_across_the_boundary_goes_to_the_answer_and_is_counted(tok, tmp_path):
    """A prompt ending in a space: SentencePiece merges it with the answer's first word ("▁yes"), byte-level BPE
    too ("Ġyes"). As in TRL, the answer starts where the prompt's and the conversation's ids diverge."""
    t = plain(tok)
    q = "Is 7 a prime? Answer: "
    path = write_jsonl(tmp_path / "merge.jsonl", [{"prompt": q, "chosen": "yes", "rejected": "no"}])
    data = load(t, path, "dataset.format=strings")
    got = data.train.dataset[0]
    alone = joint(t, q)
    merges = got["prompt_ids"] != alone
    assert data.stats["train"]["boundary_merged"] == int(merges)
    assert got["prompt_ids"] == alone[: len(got["prompt_ids"])]
    assert got["prompt_ids"] + got["chosen_ids"] == joint(t, q + "yes") + [t.eos_token_id]
    assert got["prompt_ids"] + got["rejected_ids"] == joint(t, q + "no") + [t.eos_token_id]
    if tok.name in ("mistral", "smollm2"):
        assert merges, t.convert_ids_to_tokens(alone)


def test_truncation_keeps_bos_and_the_generation_prompt(tok, tmp_path):
    long_q = " ".join(f"word{i}" for i in range(80))
    row = {
        "prompt": long_q,
        "chosen": [{"role": "user", "content": long_q}, {"role": "assistant", "content": "yes " * 60}],
        "rejected": [{"role": "user", "content": long_q}, {"role": "assistant", "content": "no " * 8}],
    }
    path = write_jsonl(tmp_path / "long.jsonl", [row])
    whole = load(tok, path, "dataset.max_length=4096", "dataset.max_prompt_length=2048").train.dataset[0]
    data = load(tok, path, "dataset.max_length=64", "dataset.max_prompt_length=24")
    got = data.train.dataset[0]
    assert data.stats["train"]["truncated"] == 1
    assert len(got["prompt_ids"]) == 24 and len(got["prompt_ids"]) + len(got["chosen_ids"]) == 64
    head = bos_prefix(tok)
    assert got["prompt_ids"][: len(head)] == head
    gen = tok(GENERATION_PROMPTS[tok.name], add_special_tokens=False).input_ids
    assert (
        whole["prompt_ids"][-len(gen) :] == got["prompt_ids"][-len(gen) :]
    )  # keep_end keeps the template's tail
    assert got["chosen_ids"] == whole["chosen_ids"][: len(got["chosen_ids"])]
    assert got["rejected_ids"] == whole["rejected_ids"]  # short enough to survive whole
