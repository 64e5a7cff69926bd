"""Each of the eight benchmarks, through its real lm-eval task definition on its mini copy: a model that answers
right scores 1.0, one that answers wrong scores 0.0. The answers are written as a model would write them (reasoning,
then the task's answer phrase; or code), so each task's own extraction and metric must work for this to pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_fixtures import ScriptedLM

from eval import benchmarks as bm
from eval.config import compose
from eval.harness import run
from eval.results import SCHEMA, SUMMARY_SCHEMA

EIGHT = ["bbh", "humaneval", "leetcode", "gsm_plus", "math", "theoremqa", "svamp", "asdiv"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A stand-in checkpoint folder: the scripted model needs none, but results are keyed by its content hash."""
    folder = tmp_path_factory.mktemp("scripted-checkpoint")
    (folder / "config.json").write_text('{"model_type": "scripted"}\n')
    return folder


def _run(checkpoint, out, right: bool):
    cfg = compose([f"checkpoint={checkpoint}", f"output_dir={out}", "unsafe_code=true", "bootstrap_iters=0"])
    lm = ScriptedLM(right=right)
    return cfg, lm, run(cfg, lm=lm)


@pytest.fixture(scope="module")
def right(checkpoint, tmp_path_factory):
    return _run(checkpoint, tmp_path_factory.mktemp("right"), right=True)


@pytest.fixture(scope="module")
def wrong(checkpoint, tmp_path_factory):
    return _run(checkpoint, tmp_path_factory.mktemp("wrong"), right=False)


@pytest.mark.parametrize("name", EIGHT)
def test_right_answers_score_one(right, name):
    _, _, summary = right
    assert summary["scores"][name] == 1.0


@pytest.mark.parametrize("name", EIGHT)
def test_wrong_answers_score_zero(wrong, name):
    _, _, summary = wrong
    assert summary["scores"][name] == 0.0


def test_every_mini_item_reached_the_model(right):
    cfg, lm, _ = right
    files = Path(cfg.benchmarks.local_data).glob("*/*.jsonl")
    assert lm.calls == sum(len(f.read_text().splitlines()) for f in files)


def test_summary_and_result_files(right):
    cfg, _, summary = right
    out = Path(cfg.output_dir) / "mio8_mini"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["schema"] == SUMMARY_SCHEMA and on_disk["complete"] is True
    assert on_disk["average"] == pytest.approx(bm.average(on_disk["scores"])) == 1.0
    assert list(on_disk["scores"]) == EIGHT
    for name in EIGHT:
        record = json.loads((out / f"{name}.json").read_text())
        bench = bm.get(name)
        assert record["schema"] == SCHEMA and record["benchmark"] == name
        assert record["score"] == record["metrics"][bench.task][bench.key] == 1.0
        assert record["settings"]["lm_eval_version"] == record["environment"]["lm_eval_version"]
        assert record["settings"]["checkpoint"] == record["checkpoint"]["content_hash"]
        assert record["versions"] and record["task_hashes"] and record["n_shot"]
        assert record["settings"]["prompt"] == {
            "apply_chat_template": False,
            "fewshot_as_multiturn": False,
            "system_instruction": None,
        }
        samples = (out / "samples" / f"{name}.jsonl").read_text().splitlines()
        assert samples and all("filtered_resps" in json.loads(line) for line in samples)


def test_average_is_defined_once():
    assert bm.average({"a": 1.0, "b": 0.0, "c": 0.5}) == pytest.approx(0.5)
    assert bm.average({"a": 1.0, "b": None}) is None
    assert bm.average({}) is None
