"""Reliability (issue 11), the fast unit tests: the reference cache's key, verification and lookup, checkpoint state
(RNG, loop window, weights_only loading), metrics lines, our own JSON reading, eval result seals, and the one-line
bugs of the issue's item 8 (length_normalize ignored, the SFT/NLL term dropped, the RNG not restored, the cache key
without the model). These are the tests ``make mutation`` runs against each mutant (seconds, no training)."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from align.config import compose
from align.losses import LOSSES, get_method
from align.preference_data import MalformedDataError, Split
from align.reference import ReferenceTable, cache_key
from align.steps import preference_loss


def split_of(rows: list[int], fingerprint: str = "tokens") -> Split:
    import datasets

    return Split(datasets.Dataset.from_dict({"row": rows}), "test", fingerprint)


def test_cache_key_changes_with_everything_that_determines_the_table():
    """Model weights, token content, the row ids a table is looked up by, precision: each changes the key."""
    base = cache_key("sha256:a", split_of([0, 1, 2]), "fp32")
    assert cache_key("sha256:a", split_of([0, 1, 2]), "fp32") == base
    assert cache_key("sha256:b", split_of([0, 1, 2]), "fp32") != base  # another base model
    assert cache_key("sha256:a", split_of([0, 1, 2], "other tokens"), "fp32") != base
    assert cache_key("sha256:a", split_of([0, 1, 3]), "fp32") != base  # same tokens under other row ids
    assert cache_key("sha256:a", split_of([0, 1, 2]), "bf16") != base


def test_lookup_outside_the_table_names_the_rows():
    table = ReferenceTable(torch.zeros(3, 2), torch.ones(3, 2))
    table.sums[1] = float("nan")
    with pytest.raises(KeyError, match=r"rows \[5\]"):
        table.lookup(torch.tensor([0, 5]))
    with pytest.raises(KeyError, match=r"rows \[3\]: the table has rows < 3"):  # one past the end
        table.lookup(torch.tensor([3]))
    with pytest.raises(KeyError, match=r"rows \[-1\]"):
        table.lookup(torch.tensor([-1]))
    with pytest.raises(KeyError, match=r"rows \[1\]"):
        table.lookup(torch.tensor([0, 1]))


class _NoEngine:
    """The engine surface save/load_checkpoint use, doing nothing (the RNG and loop state are what is tested)."""

    def save_pretrained(self, out_dir, tokenizer):
        pass

    def save_state(self, ckpt_dir):
        pass

    def load_state(self, ckpt_dir):
        pass


def test_checkpoint_restores_every_rng_and_the_loop_state(tmp_path):
    from align.checkpoint import load_checkpoint, save_checkpoint

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    window = {"keys": ["loss"], "total": torch.tensor([1.5, 2.0], dtype=torch.float64), "tokens": 7}
    ckpt = save_checkpoint(_NoEngine(), None, tmp_path, 4, {"step": 4}, keep=0, rank_state=window)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state, loop = load_checkpoint(_NoEngine(), ckpt)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert state == {"step": 4} and loop["tokens"] == 7 and torch.equal(loop["total"], window["total"])
    torch.load(ckpt / "rng-0.pt", weights_only=True)  # plain data and tensors only


def test_an_edited_eval_score_is_not_reported_as_up_to_date(tmp_path):
    from eval.results import SCHEMA, is_complete, read_json, write_json_atomic

    path = tmp_path / "gsm8k.json"
    write_json_atomic(
        path, {"schema": SCHEMA, "settings_hash": "k", "score": 0.25, "metrics": {"x": np.float64(1)}}
    )
    assert is_complete(read_json(path), "k")
    record = read_json(path)
    path.write_text(json.dumps(record | {"score": 0.99}))
    assert not is_complete(read_json(path), "k")


def _logps(b: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(2, 12, (2 * b,), generator=g)
    sums = -torch.rand(2 * b, generator=g, dtype=torch.float64) * counts
    ref = (
        -torch.rand(b, 2, generator=g, dtype=torch.float64) * 10,
        torch.randint(2, 12, (b, 2), generator=g),
    )
    return sums, counts, ref


def method_cfg(name: str, **values):
    """A method's config from its schema (the loss function's defaults), without composing (fast)."""
    from align.config import method_schema

    return OmegaConf.merge(OmegaConf.structured(method_schema(name)), values)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_length_normalize_switches_to_per_token_means(name):
    """Each method's loss on per-token means when length_normalize is true, on sums when false."""
    sums, counts, (ref_sums, ref_counts) = _logps()
    method = get_method(name)
    for normalize in (True, False):
        cfg = method_cfg(name, length_normalize=normalize, sft_weight=0.5)
        loss, _ = preference_loss(method, cfg, sums, counts, (ref_sums, ref_counts))
        pol = sums / counts if normalize else sums
        ref = ref_sums / ref_counts if normalize else ref_sums
        kw = {k: cfg[k] for k in cfg if k not in ("name", "sft_weight", "length_normalize")}
        out = method.fn(pol[:4], pol[4:], ref[:, 0], ref[:, 1], **kw)
        expected = out.losses.mean() + cfg.sft_weight * (-(sums[:4] / counts[:4])).mean()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-9), (name, normalize)


def test_methods_that_normalise_by_length_do_so_by_default():
    for name in ("ipo", "orpo", "simpo"):
        assert compose(["output_dir=x", f"method={name}"]).method.length_normalize is True, name


def test_orpo_keeps_its_nll_term():
    """ORPO = its odds-ratio term + the NLL of the chosen (per-token mean), weight 1."""
    cfg = compose(["output_dir=x", "method=orpo"]).method
    assert cfg.sft_weight == 1.0
    sums, counts, _ = _logps()
    loss, stats = preference_loss(get_method("orpo"), cfg, sums, counts, None)
    means = sums / counts
    odds = LOSSES["orpo"].fn(means[:4], means[4:], beta=cfg.beta).losses.mean()
    assert loss.item() == pytest.approx((odds - means[:4].mean()).item(), rel=1e-9)
    assert stats["nll/chosen"].item() == pytest.approx(-means[:4].mean().item())


@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0])
def test_sft_weight_adds_the_chosen_nll(weight):
    sums, counts, ref = _logps()
    cfg = method_cfg("dpo", sft_weight=weight)
    base = OmegaConf.merge(cfg, {"sft_weight": 0.0})
    loss, _ = preference_loss(get_method("dpo"), cfg, sums, counts, ref)
    plain, _ = preference_loss(get_method("dpo"), base, sums, counts, ref)
    nll = -(sums[:4] / counts[:4]).mean()
    assert loss.item() == pytest.approx((plain + weight * nll).item(), rel=1e-9)


# ------------------------------------------------------------------------- the reference cache, unit level


def token_split(n: int = 6, skip: int | None = None) -> Split:
    """A tokenized split of ``n`` source rows (``skip`` dropped as if malformed); prompt of 2 tokens."""
    import datasets

    rows = [r for r in range(n) if r != skip]
    cols = {
        "prompt_ids": [[1, 2] for _ in rows],
        "chosen_ids": [[3] * (2 + r % 3) for r in rows],
        "rejected_ids": [[4] * (1 + r % 2) for r in rows],
        "row": rows,
    }
    return Split(datasets.Dataset.from_dict(cols), "units", "tokens")


def fake_forward(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic 'log-probs': minus the row id per sequence, counts from the loss mask."""
    counts = batch["loss_mask"][:, 1:].sum(1)
    rows = torch.cat([batch["row"], batch["row"]]).double()
    return -(rows + 1) * counts - torch.arange(2).repeat_interleave(batch["row"].shape[0]), counts


def table_of(split: Split) -> ReferenceTable:
    import functools

    from align.preference_data import collate
    from align.reference import compute_table

    return compute_table(fake_forward, split, 4, functools.partial(collate, pad_id=0), torch.device("cpu"))


def test_compute_table_scores_every_row_under_its_source_row_id():
    split = token_split(6, skip=2)
    table = table_of(split)
    assert table.sums.shape == (6, 2) and torch.isnan(table.sums[2]).all()
    sums, counts = table.lookup(torch.tensor([0, 5]))
    assert counts.tolist() == [[2.0, 1.0], [4.0, 2.0]]
    assert sums.tolist() == [[-2.0, -2.0], [-24.0, -13.0]]


def saved(split: Split, key: str = "k") -> dict:
    from align.reference import split_rows

    table, rows = table_of(split), split_rows(split)
    from align.reference import CACHE_VERSION

    return {"version": CACHE_VERSION, "key": key, "rows": rows, "sums": table.sums, "counts": table.counts,
            "digest": table.digest(key, rows)}  # fmt: skip


def test_verify_table_accepts_its_own_file_and_names_what_is_wrong_otherwise():
    from align.reference import verify_table

    split = token_split(6)
    good = saved(split)
    table, reason = verify_table(good, "k", split)
    assert table is not None and reason == ""
    assert "another key" in verify_table(good, "other", split)[1]
    assert "cache version" in verify_table(good | {"version": 0}, "k", split)[1]
    assert "row ids" in verify_table(good, "k", token_split(6, skip=3))[1]
    edited = good | {"sums": good["sums"] + 50}
    assert "digest" in verify_table(edited, "k", split)[1]
    other_counts = saved(token_split(6)) | {"counts": good["counts"] + 1}
    other_counts["digest"] = ReferenceTable(other_counts["sums"], other_counts["counts"]).digest(
        "k", good["rows"]
    )
    assert "token counts" in verify_table(other_counts, "k", split)[1]
    nan = good | {"sums": good["sums"].clone()}
    nan["sums"][1, 0] = float("nan")
    nan["digest"] = ReferenceTable(nan["sums"], nan["counts"]).digest("k", good["rows"])
    assert "missing for rows [1]" in verify_table(nan, "k", split)[1]
    assert verify_table(good, "k", split, spot_check=lambda t: "differs")[1] == "differs"


def test_load_or_compute_reuses_a_sound_file_and_recomputes_a_damaged_one(tmp_path):
    from align.reference import load_or_compute

    split, calls = token_split(6), []

    def compute():
        calls.append(1)
        return table_of(split)

    first = load_or_compute(split, "abc", tmp_path, compute, "train")
    again = load_or_compute(split, "abc", tmp_path, compute, "train")
    assert len(calls) == 1 and torch.equal(first.counts, again.counts)
    path = tmp_path / "reference_logps" / "abc.pt"
    data = torch.load(path, weights_only=True)
    assert data["key"] == "abc" and torch.equal(data["rows"], torch.arange(6))
    torch.save(data | {"sums": data["sums"] + 50}, path)
    fixed = load_or_compute(split, "abc", tmp_path, compute, "train")
    assert len(calls) == 2 and torch.allclose(fixed.sums[:6], first.sums[:6])
    path.write_bytes(b"garbage")
    load_or_compute(split, "abc", tmp_path, compute, "train")
    assert len(calls) == 3
    assert load_or_compute(split, "abc", tmp_path, compute, "train", spot_check=lambda t: "no") is not None
    assert len(calls) == 4


def test_spot_check_scores_the_first_batch_again():
    import functools

    from align.preference_data import collate
    from align.reference import spot_checker

    split = token_split(6)
    table = table_of(split)
    check = spot_checker(
        fake_forward, split, 4, functools.partial(collate, pad_id=0), torch.device("cpu"), 1e-4
    )
    assert check(table) == ""
    table.sums[0, 0] += 0.5
    assert "differs" in check(table)


# ------------------------------------------------------------------------------ checkpoint files, unit level


def test_load_state_file_refuses_pickled_code(tmp_path):
    from align.checkpoint import CheckpointError, load_state_file

    marker, path = tmp_path / "marker", tmp_path / "x.pt"
    with open(path, "wb") as f:
        pickle.dump({"a": _Planted(marker)}, f)
    with pytest.raises(CheckpointError, match=r"x\.pt: refusing to load it"):
        load_state_file(path)
    assert not marker.exists()
    torch.save({"t": torch.ones(2), "n": 3, "s": "x", "l": [1.5, None]}, path)
    assert load_state_file(path)["n"] == 3
    path.write_bytes(path.read_bytes()[:100])  # truncated by a kill
    with pytest.raises(CheckpointError, match=r"x\.pt: unreadable checkpoint file"):
        load_state_file(path)


class _Planted:
    """A pickle that runs code when unpickled: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_last_good_checkpoint_is_the_newest_one_checked_finite(tmp_path):
    from align.checkpoint import last_good_checkpoint, latest_checkpoint, list_checkpoints

    assert last_good_checkpoint(tmp_path) is None and latest_checkpoint(tmp_path / "none") is None
    for step, finite in ((1, True), (2, True), (3, None)):
        (tmp_path / f"step-{step:06d}").mkdir()
        state = {"step": step} | ({"weights_finite": finite} if finite else {})
        (tmp_path / f"step-{step:06d}" / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "step-000004").mkdir()  # no trainer_state.json: an incomplete save
    (tmp_path / ".tmp-step-000005").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000001", "step-000002", "step-000003"]
    assert latest_checkpoint(tmp_path).name == "step-000003"
    assert last_good_checkpoint(tmp_path).name == "step-000002"
    (tmp_path / "step-000003" / "trainer_state.json").write_text("{damaged")  # unreadable: passed over
    (tmp_path / "step-000001" / "trainer_state.json").write_text(json.dumps({"weights_finite": True}))
    assert last_good_checkpoint(tmp_path).name == "step-000002"


def test_save_checkpoint_keeps_the_newest_and_clears_interrupted_saves(tmp_path):
    from align.checkpoint import list_checkpoints, save_checkpoint

    (tmp_path / ".tmp-step-000001").mkdir(parents=True)
    for step in (1, 2, 3):
        save_checkpoint(_NoEngine(), None, tmp_path, step, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    assert not list(tmp_path.glob(".tmp-*"))
    assert json.loads((tmp_path / "step-000003" / "trainer_state.json").read_text()) == {"step": 3}


# ---------------------------------------------------------------------------------------- metrics lines


def test_read_metrics_drops_only_a_partial_last_line(tmp_path):
    from align.records import read_metrics

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "lo')
    assert read_metrics(path) == rows
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]))  # complete, no final newline
    assert read_metrics(path) == rows
    path.write_text('{"step": "one"}\n' + json.dumps(rows[1]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 1: not a metrics row"):
        read_metrics(path)


# ------------------------------------------------------------------------------ our own JSON reading


def write(path: Path, content) -> Path:
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


GOOD = {"prompt": "q", "chosen": "a", "rejected": "b"}
COLUMNS = ("prompt", "chosen", "rejected")


def test_read_json_rows_keeps_values_and_names_each_problem(tmp_path):
    from align.preference_data import read_json_rows

    lines = [
        json.dumps(GOOD),
        "",
        "{oops",
        json.dumps([1]),
        json.dumps(GOOD | {"chosen": 5}),
        json.dumps(GOOD),
    ]
    path = write(tmp_path / "p.jsonl", "\n".join(lines) + "\n")
    rows, problems = read_json_rows([path], COLUMNS)
    assert len(rows) == 5  # the blank line is not a row
    assert rows[0] == GOOD and rows[4] == GOOD and rows[1] == {c: None for c in COLUMNS}
    assert rows[3]["chosen"] is None and rows[3]["prompt"] == "q"  # the odd value emptied, the row kept
    assert problems == [
        f"{path}:3: row 1: invalid JSON (Expecting property name enclosed in double quotes, column 2)",
        f"{path}:4: row 2: expected a JSON object, got a list",
        f"{path}:5: row 3: field 'chosen': expected a string like the other rows, got a number",
    ]


def test_read_json_rows_takes_strings_and_lists_over_other_kinds(tmp_path):
    """Answers and prompts are strings or message lists: a number is the odd value even where most rows hold one."""
    from align.preference_data import read_json_rows

    def read(name, values):
        path = write(tmp_path / name, "".join(json.dumps(GOOD | {"chosen": v}) + "\n" for v in values))
        rows, problems = read_json_rows([path], COLUMNS)
        return [r["chosen"] for r in rows], problems

    chosen, problems = read("n.jsonl", [1, 2, "x"])
    assert chosen == [None, None, "x"] and len(problems) == 2
    assert problems[0].endswith("row 0: field 'chosen': expected a string like the other rows, got a number")
    lists = [[{"role": "assistant", "content": "a"}]] * 2
    assert read("l.jsonl", [*lists, "s"])[0] == [*lists, None]  # more lists than strings: lists
    assert read("t.jsonl", [lists[0], "s"])[0] == [None, "s"]  # a tie: strings


def test_read_json_rows_checks_nested_fields_and_spans_files(tmp_path):
    from align.preference_data import read_json_rows

    msg = lambda c: {"prompt": "q", "chosen": [{"role": "assistant", "content": c}], "rejected": "r"}  # noqa: E731
    a = write(tmp_path / "a.jsonl", json.dumps(msg("x")) + "\n" + json.dumps(msg("y")) + "\n")
    b = write(tmp_path / "b.jsonl", json.dumps(msg(7)) + "\n")
    rows, problems = read_json_rows([a, b], COLUMNS)
    assert len(rows) == 3 and rows[2]["chosen"] is None and rows[0]["chosen"][0]["content"] == "x"
    assert problems == [
        f"{b}:1: row 2: field 'chosen[].content': expected a string like the other rows, got a number"
    ]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "empty file"),
        ("  \n\n", "empty file"),
        (b"ab\x00cd", "NUL byte at offset 2: not UTF-8 JSON text (binary data?)"),
        ("{}\n".encode("utf-16-le") * 20, "UTF-16 without a byte-order mark"),
        (b"\xff\xfe" + b"\xff\xdb", "not valid utf-16 text"),
    ],
)
def test_json_lines_names_unreadable_files(tmp_path, content, needle):
    from align.preference_data import _json_lines

    path = write(tmp_path / "p.jsonl", content)
    with pytest.raises(MalformedDataError, match=r"p\.jsonl") as e:
        _json_lines(path)
    assert needle in str(e.value)


def test_json_lines_reads_arrays_boms_and_bad_lines(tmp_path):
    from align.preference_data import _json_lines, _plain_utf8

    array = write(tmp_path / "a.json", json.dumps([GOOD, GOOD]))
    assert [(n, json.loads(t), e) for n, t, e in _json_lines(array)[0]] == [
        (None, GOOD, ""),
        (None, GOOD, ""),
    ]
    for enc in ("utf-8-sig", "utf-16", "utf-32"):
        path = write(tmp_path / f"{enc}.jsonl", (json.dumps(GOOD) + "\n").encode(enc))
        lines, encoding = _json_lines(path)
        assert encoding == enc and json.loads(lines[0][1]) == GOOD and not _plain_utf8(path)
    mixed = write(tmp_path / "m.jsonl", json.dumps(GOOD).encode() + b"\n\xe9\n")
    assert _json_lines(mixed)[0][1] == (2, None, "not UTF-8 text (byte 0xe9 at column 1)")
    assert not _plain_utf8(mixed) and not _plain_utf8(write(tmp_path / "e.jsonl", " \n"))
    assert _plain_utf8(write(tmp_path / "ok.jsonl", json.dumps(GOOD) + "\n"))
    broken = write(tmp_path / "b.json", '[{"a": 1},\n {"a": ]')
    with pytest.raises(MalformedDataError, match=r"b\.json: line 2: invalid JSON"):
        _json_lines(broken)


def test_row_lines_maps_rows_to_file_lines(tmp_path):
    from align.preference_data import row_lines

    a = write(tmp_path / "a.jsonl", "{}\n\n{}\n")
    b = write(tmp_path / "b.jsonl", "{}\n{}\n")
    assert row_lines((a, b), [1, 3]) == {1: f"{a}:3", 3: f"{b}:2"}
    assert row_lines((write(tmp_path / "c.parquet", b"x"),), [0]) == {}


def test_deepspeed_files_are_checked_before_deepspeed_unpickles_them(tmp_path):
    """DeepSpeed's own loader unpickles anything: its files are read weights_only first, allowing only the plain data
    classes it stores (a loss-scale record, its ZeRO stage enum)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    from align.checkpoint import CheckpointError, check_deepspeed_files

    state = tmp_path / "deepspeed" / "state"
    state.mkdir(parents=True)
    torch.save(
        {"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum(2), "w": torch.ones(3)}, state / "a.pt"
    )
    check_deepspeed_files(tmp_path / "deepspeed")
    marker = tmp_path / "marker"
    with open(state / "b.pt", "wb") as f:
        pickle.dump({"x": _Planted(marker)}, f)
    with pytest.raises(CheckpointError, match=r"b\.pt: refusing to load it"):
        check_deepspeed_files(tmp_path / "deepspeed")
    assert not marker.exists()


# ------------------------------------------------------ steps and row checks, unit level (for the mutation pass)


def test_batch_order_is_a_seeded_permutation_per_epoch_and_resumable():
    from align.steps import BatchOrder

    order = BatchOrder(10, 3, seed=5)
    assert order.per_epoch == 3  # the partial last batch dropped
    epoch0 = [p for i in range(3) for p in order.positions(i)]
    assert len(epoch0) == len(set(epoch0)) == 9 and set(epoch0) <= set(range(10))
    assert epoch0 == torch.randperm(10, generator=torch.Generator().manual_seed(5)).tolist()[:9]
    epoch1 = [p for i in range(3, 6) for p in order.positions(i)]
    assert epoch1 == torch.randperm(10, generator=torch.Generator().manual_seed(6)).tolist()[:9]
    assert BatchOrder(10, 3, seed=5).positions(4) == order.positions(4)  # a resumed run reads the same rows
    assert order.epoch_order(0) == BatchOrder(10, 3, seed=5).epoch_order(0)


def test_grouped_batch_order_sorts_within_megabatches():
    from align.steps import BatchOrder

    lengths = list(range(200))
    order = BatchOrder(200, 2, seed=0, lengths=lengths)
    batches = [order.positions(i) for i in range(order.per_epoch)]
    assert sorted(p for b in batches for p in b) == list(range(200))
    assert all(lengths[a] >= lengths[b] for a, b in batches)  # longest first inside a batch
    spans = [max(lengths[p] for p in b) - min(lengths[p] for p in b) for b in batches]
    assert max(spans) < 100  # neighbours in length, not random pairs


def test_averager_weights_by_pairs():
    from align.steps import Averager

    avg = Averager()
    assert avg.read() == {}
    avg.add({"loss": torch.tensor(1.0), "acc": torch.tensor(0.0)}, 1)
    avg.add({"loss": torch.tensor(4.0), "acc": torch.tensor(1.0)}, 3)
    assert avg.read() == pytest.approx({"loss": 3.25, "acc": 0.75})
    assert avg.keys == ["acc", "loss"]


def test_preference_loss_statistics_by_hand():
    """Two pairs, beta 1, DPO: chosen/rejected sums (-2, -6), (-3, -1) over counts 2; reference sums all -4."""
    sums = torch.tensor([-2.0, -3.0, -6.0, -1.0], dtype=torch.float64)
    counts = torch.tensor([2, 2, 2, 2])
    ref = (torch.full((2, 2), -4.0, dtype=torch.float64), torch.full((2, 2), 2))
    cfg = method_cfg("dpo", beta=1.0)
    loss, stats = preference_loss(get_method("dpo"), cfg, sums, counts, ref)
    margins = torch.tensor([(-2 + 4) - (-6 + 4), (-3 + 4) - (-1 + 4)], dtype=torch.float64)
    assert loss.item() == pytest.approx(torch.nn.functional.softplus(-margins).mean().item())
    assert stats["rewards/chosen"].item() == pytest.approx(1.5)  # (2 + 1) / 2
    assert stats["rewards/rejected"].item() == pytest.approx(0.5)  # (-2 + 3) / 2
    assert stats["rewards/margins"].item() == pytest.approx(1.0)
    assert stats["rewards/accuracies"].item() == pytest.approx(0.5)
    assert stats["logps/chosen"].item() == pytest.approx(-2.5)
    assert stats["logps/rejected"].item() == pytest.approx(-3.5)
    assert stats["logps/chosen_mean"].item() == pytest.approx(-1.25)
    assert stats["logps/rejected_mean"].item() == pytest.approx(-1.75)
    assert stats["nll/chosen"].item() == pytest.approx(1.25)
    assert stats["displacement/chosen"].item() == pytest.approx(1.5)  # (-2 + 4, -3 + 4) / 2
    assert stats["displacement/rejected"].item() == pytest.approx(0.5)
    assert stats["displacement/chosen_per_token"].item() == pytest.approx(0.75)
    assert stats["displacement/chosen_below_ref"].item() == 0.0
    _, free = preference_loss(get_method("simpo"), method_cfg("simpo"), sums, counts, None)
    assert not any(k.startswith("displacement/") for k in free)


def test_to_device_moves_every_entry():
    from align.steps import to_device

    batch = {"a": torch.ones(2), "b": torch.zeros(1, dtype=torch.long)}
    moved = to_device(batch, torch.device("cpu"))
    assert moved.keys() == batch.keys() and all(torch.equal(moved[k], batch[k]) for k in batch)


def row_cfg(**values):
    from align.config import DatasetConfig

    return OmegaConf.merge(OmegaConf.structured(DatasetConfig), {"path": "x", **values})


MESSAGES = {
    "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
    "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}],
}


@pytest.mark.parametrize(
    ("fmt", "row", "error"),
    [
        ("strings", {"prompt": "q", "rejected": "b"}, "field 'chosen': missing"),
        ("strings", {"prompt": "q", "chosen": None, "rejected": "b"}, "field 'chosen': missing"),
        ("strings", {"prompt": "q", "chosen": "a", "rejected": None}, "field 'rejected': missing"),
        (
            "strings",
            {"prompt": "q", "chosen": 7, "rejected": "b"},
            "field 'chosen': expected a string, got int",
        ),
        ("strings", {"prompt": "q", "chosen": " ", "rejected": "b"}, "field 'chosen': empty response"),
        (
            "strings",
            {"prompt": "q", "chosen": "a", "rejected": "a"},
            "field 'rejected': identical to 'chosen'",
        ),
        (
            "strings",
            {"prompt": " ", "chosen": "a", "rejected": "b"},
            "field 'prompt': missing or empty prompt",
        ),
        ("strings", {"chosen": "a", "rejected": "b"}, "field 'prompt': missing or empty prompt"),
        ("messages", MESSAGES | {"chosen": []}, "field 'chosen': expected a non-empty list of chat messages"),
        (
            "messages",
            MESSAGES | {"chosen": "a"},
            "field 'chosen': expected a non-empty list of chat messages",
        ),
        ("messages", MESSAGES | {"rejected": [{"role": "user"}]}, "field 'rejected': every message needs"),
        (
            "messages",
            MESSAGES | {"chosen": MESSAGES["chosen"][:1]},
            "the last message must be the assistant's",
        ),
        (
            "messages",
            MESSAGES
            | {"rejected": [{"role": "user", "content": "z"}, {"role": "assistant", "content": "b"}]},
            "field 'rejected': its conversation differs from 'chosen' before the answer",
        ),
        ("messages", {k: v[1:] for k, v in MESSAGES.items()}, "field 'prompt': missing and the messages"),
        ("hh", {"chosen": "no turns", "rejected": "x"}, "field 'chosen': not an HH dialogue"),
        (
            "hh",
            {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: other\n\nAssistant: b"},
            "its dialogue differs",
        ),
        ("ultrainteract", {"trajectory": [], "chosen": "a", "rejected": "b"}, "field 'trajectory': expected"),
        (
            "ultrainteract",
            {"trajectory": [{"from": "user", "value": 3}], "chosen": "a", "rejected": "b"},
            "every turn needs a string 'value'",
        ),
    ],
)
def test_normalise_row_names_the_field(fmt, row, error):
    from align.preference_data import normalise_row

    cfg = row_cfg(prompt_field="trajectory") if fmt == "ultrainteract" else row_cfg()
    with pytest.raises(MalformedDataError) as e:
        normalise_row(row, fmt, cfg)
    assert error in str(e.value)


def test_normalise_row_reads_every_format():
    from align.preference_data import Example, detect_format, normalise_row

    cfg = row_cfg()
    ex = normalise_row({"prompt": "q", "chosen": "a", "rejected": "b"}, "strings", cfg)
    assert ex == Example([{"role": "user", "content": "q"}], "a", "b", ("q", "a", "b"))
    ex = normalise_row(MESSAGES, "messages", cfg)
    assert ex.prompt == [{"role": "user", "content": "q"}] and (ex.chosen, ex.rejected) == ("a", "b")
    assert ex.plain is None
    explicit = {"prompt": [{"role": "user", "content": "p"}], **{k: v[1:] for k, v in MESSAGES.items()}}
    assert normalise_row(explicit, "messages", cfg).prompt == [{"role": "user", "content": "p"}]
    text_prompt = {"prompt": "p", **{k: v[1:] for k, v in MESSAGES.items()}}
    assert normalise_row(text_prompt, "messages", cfg).prompt == [{"role": "user", "content": "p"}]
    hh = {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}
    ex = normalise_row(hh, "hh", cfg)
    assert ex.prompt == [{"role": "user", "content": "q"}] and (ex.chosen, ex.rejected) == ("a", "b")
    assert ex.plain == ("\n\nHuman: q\n\nAssistant:", " a", " b")
    traj = {
        "trajectory": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "t"}],
        "chosen": "a",
        "rejected": "b",
    }
    ex = normalise_row(traj, "ultrainteract", row_cfg(prompt_field="trajectory"))
    assert ex.prompt == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "t"}]
    with pytest.raises(ValueError, match="dataset.format='nope'"):
        normalise_row({"chosen": "a", "rejected": "b"}, "nope", cfg)
    assert detect_format(["trajectory", "chosen"], {"chosen": "a"}, cfg) == "ultrainteract"
    assert detect_format(["prompt", "chosen"], MESSAGES, cfg) == "messages"
    assert detect_format(["chosen", "rejected"], hh, cfg) == "hh"
    assert detect_format(["prompt", "chosen"], {"chosen": "a"}, cfg) == "strings"


def test_expected_counts_lose_the_first_answer_token_without_a_prompt():
    import datasets

    from align.reference import expected_counts

    cols = {
        "prompt_ids": [[1, 2], [], []],
        "chosen_ids": [[3, 3, 3], [3, 3], []],
        "rejected_ids": [[4], [4], [4, 4]],
    }
    split = Split(datasets.Dataset.from_dict(cols | {"row": [0, 1, 2]}), "units", "t")
    counts = expected_counts(split)
    assert counts.dtype == torch.float32 and counts.tolist() == [[3.0, 1.0], [1.0, 0.0], [0.0, 1.0]]


def test_a_planted_reference_cache_file_is_recomputed_not_run(tmp_path):
    from align.reference import load_or_compute

    split, marker = token_split(6), tmp_path / "marker"
    path = tmp_path / "reference_logps" / "abc.pt"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        pickle.dump({"sums": _Planted(marker)}, f)
    table = load_or_compute(split, "abc", tmp_path, lambda: table_of(split), "train")
    assert not marker.exists() and torch.equal(table.counts, table_of(split).counts)
    assert torch.load(path, weights_only=True)["key"] == "abc"  # replaced by the computed table


def test_load_checkpoint_checks_deepspeed_files_and_needs_this_ranks_file(tmp_path):
    from align.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    ckpt = save_checkpoint(_NoEngine(), None, tmp_path, 1, {"step": 1}, keep=0)
    (ckpt / "deepspeed").mkdir()
    marker = tmp_path / "marker"
    with open(ckpt / "deepspeed" / "x.pt", "wb") as f:
        pickle.dump({"x": _Planted(marker)}, f)
    with pytest.raises(CheckpointError, match=r"deepspeed/x\.pt: refusing to load it"):
        load_checkpoint(_NoEngine(), ckpt)
    assert not marker.exists()
    (ckpt / "deepspeed" / "x.pt").unlink()
    assert load_checkpoint(_NoEngine(), ckpt) == ({"step": 1}, {})
    (ckpt / "rng-0.pt").unlink()
    with pytest.raises(
        CheckpointError, match=r"rng-0\.pt: missing \(the checkpoint was saved with another number"
    ):
        load_checkpoint(_NoEngine(), ckpt)
