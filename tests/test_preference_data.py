"""Data loading, row checks, chat templating, truncation and batching."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from align.config import compose
from align.preference_data import MalformedDataError, collate, load_preference_data


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def local(path, *overrides):
    return compose(["output_dir=unused", "dataset=local_file", f"dataset.path={path}", *overrides]).dataset


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


MSG = {
    "prompt": "What is 2 + 3?",
    "chosen": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}],
    "rejected": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "6"}],
}


def decode_row(tok, row):
    return tok.decode(row["prompt_ids"]), tok.decode(row["chosen_ids"]), tok.decode(row["rejected_ids"])


def test_bundled_data_loads_with_prompt_masked(tok):
    cfg = compose(["output_dir=unused", "dataset=tiny"])
    data = load_preference_data(cfg.dataset, tok, seed=0)
    assert data.stats["train"] == {
        "source": data.stats["train"]["source"],
        "format": "messages",
        "rows": 2000,
        "kept": 2000,
        "dropped": 0,
        "truncated": 0,
        "boundary_merged": 0,
    }
    assert len(data.eval.dataset) == 200
    p, c, r = decode_row(tok, data.train.dataset[0])
    assert p.endswith("<|assistant|>\n") and "<|user|>" in p
    assert c.endswith("</s>") and r.endswith("</s>") and c != r
    batch = collate([data.train.dataset[i] for i in range(4)], tok.pad_token_id)
    row = data.train.dataset[0]
    n_p, n_c = len(row["prompt_ids"]), len(row["chosen_ids"])
    assert batch["loss_mask"][0, :n_p].sum() == 0 and batch["loss_mask"][0, n_p : n_p + n_c].sum() == n_c
    assert batch["input_ids"].shape[0] == 8 and torch.equal(batch["row"], torch.arange(4))


def test_every_row_shape_gives_the_same_tokens(tok, tmp_path):
    """UltraFeedback messages, plain strings, HH joined strings and UltraInteract trajectories of one pair."""
    shapes = {
        "messages": MSG,
        "strings": {"prompt": "What is 2 + 3?", "chosen": "5", "rejected": "6"},
        "hh": {
            "chosen": "\n\nHuman: What is 2 + 3?\n\nAssistant: 5",
            "rejected": "\n\nHuman: What is 2 + 3?\n\nAssistant: 6",
        },
        "ultrainteract": {
            "trajectory": [{"from": "user", "value": "What is 2 + 3?"}],
            "chosen": "5",
            "rejected": "6",
        },
    }
    seen = {}
    for fmt, row in shapes.items():
        cfg = local(
            write_jsonl(tmp_path / f"{fmt}.jsonl", [row, row]),
            "dataset.eval_fraction=0",
            "dataset.format=auto",
            *(["dataset.prompt_field=trajectory"] if fmt == "ultrainteract" else []),
        )
        data = load_preference_data(cfg, tok, seed=0)
        assert data.stats["train"]["format"] == fmt
        seen[fmt] = decode_row(tok, data.train.dataset[0])
    assert len(set(seen.values())) == 1, seen


def test_truncation_follows_the_handbook_rule(tok, tmp_path):
    long_prompt = " ".join(f"w{i}" for i in range(60))
    row = {"prompt": long_prompt, "chosen": "right " * 30, "rejected": "wrong " * 10}
    cfg = local(
        write_jsonl(tmp_path / "long.jsonl", [row, {"prompt": "short", "chosen": "a", "rejected": "b"}]),
        "dataset.format=auto",
        "dataset.eval_fraction=0",
        "dataset.max_length=48",
        "dataset.max_prompt_length=16",
    )
    data = load_preference_data(cfg, tok, seed=0)
    assert data.stats["train"]["truncated"] == 1
    r = data.train.dataset[0]
    assert len(r["prompt_ids"]) == 16 and len(r["chosen_ids"]) == 48 - 16
    assert len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) <= 48
    assert tok.decode(r["prompt_ids"]).endswith("<|assistant|>\n")  # keep_end keeps the template's tail


@pytest.mark.parametrize(
    ("bad", "field", "problem"),
    [
        ({"prompt": "q", "rejected": "b"}, "chosen", "missing"),
        ({"prompt": "q", "chosen": "  ", "rejected": "b"}, "chosen", "empty response"),
        ({"prompt": "q", "chosen": 7, "rejected": "b"}, "chosen", "expected a string"),
        ({"prompt": "q", "chosen": "same", "rejected": "same"}, "rejected", "identical"),
    ],
)
def test_malformed_row_names_file_row_and_field(tok, tmp_path, bad, field, problem):
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    path = write_jsonl(tmp_path / "prefs.jsonl", [good, good, bad, good])
    with pytest.raises(MalformedDataError) as e:
        load_preference_data(local(path, "dataset.format=strings", "dataset.eval_fraction=0"), tok, seed=0)
    msg = str(e.value)
    assert str(path) in msg and "row 2" in msg and f"field '{field}'" in msg and problem in msg


def test_skip_mode_drops_and_counts_malformed_rows(tok, tmp_path):
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    rows = [good, {"prompt": "q", "chosen": "x", "rejected": "x"}, good, {"prompt": "q"}, good]
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    cfg = local(path, "dataset.format=strings", "dataset.eval_fraction=0", "dataset.on_malformed=skip")
    data = load_preference_data(cfg, tok, seed=0)
    assert data.stats["train"]["dropped"] == 2 and data.stats["train"]["kept"] == 3
    assert data.train.dataset["row"] == [0, 2, 4]


def test_messages_must_share_the_conversation(tok, tmp_path):
    bad = dict(
        MSG, rejected=[{"role": "user", "content": "other question"}, {"role": "assistant", "content": "6"}]
    )
    path = write_jsonl(tmp_path / "m.jsonl", [MSG, bad])
    with pytest.raises(MalformedDataError, match=r"row 1: field 'rejected': its conversation differs"):
        load_preference_data(local(path, "dataset.eval_fraction=0"), tok, seed=0)


def test_eval_fraction_holds_out_rows_that_name_train_lines(tok, tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(40)]
    data = load_preference_data(
        local(write_jsonl(tmp_path / "p.jsonl", rows), "dataset.eval_fraction=0.25"), tok, seed=0
    )
    train_rows, eval_rows = set(data.train.dataset["row"]), set(data.eval.dataset["row"])
    assert len(eval_rows) == 10 and len(train_rows) == 30 and not train_rows & eval_rows
    assert data.train.fingerprint != data.eval.fingerprint


def test_without_chat_template_text_is_plain_and_ends_in_eos(tok, tmp_path):
    plain = AutoTokenizer.from_pretrained(tok.name_or_path)
    plain.chat_template = None
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "Q: 2+3?", "chosen": " 5", "rejected": " 6"}])
    data = load_preference_data(
        local(path, "dataset.eval_fraction=0", "dataset.format=strings"), plain, seed=0
    )
    p, c, _ = decode_row(plain, data.train.dataset[0])
    assert p == "<s>Q: 2+3?" and c == " 5</s>"


def test_missing_dataset_path_is_a_clear_error(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_preference_data(local(tmp_path / "nope.jsonl"), tok, seed=0)
