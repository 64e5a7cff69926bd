"""Each of the eight benchmarks, through its real lm-eval task definition on its mini copy, under the chosen prompt
protocol (chat): a model that answers right scores 1.0, one that answers wrong 0.0, one that answers right and then
keeps generating (an invented follow-up problem) still 1.0, and one whose program calls exit() before the tests
0.0. The answers are written as a model would write them (reasoning, then the task's answer phrase; or code), so
each task's own stop strings, extraction and metric must work for this to pass. The plain protocol must handle the
run-on too; the Eurus LeetCode set runs from a local file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_fixtures import GOLDEN_PROMPTS, ScriptedLM, prompts_and_scores

from common.records import shown_path
from eval import benchmarks as bm
from eval.config import compose
from eval.harness import run
from eval.results import SCHEMA, SUMMARY_SCHEMA

EIGHT = ["bbh", "humaneval", "leetcode", "gsm_plus", "math", "theoremqa", "svamp", "asdiv"]
CODE = ["humaneval", "leetcode"]
EURUS_MINI = Path(bm.__file__).parent / "tasks" / "mini" / "leetcode_eurus" / "mio_leetcode_eurus.jsonl"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A stand-in checkpoint folder: the scripted model needs none, but results are keyed by its content hash."""
    folder = tmp_path_factory.mktemp("scripted-checkpoint")
    (folder / "config.json").write_text('{"model_type": "scripted"}\n')
    return folder


def _run(checkpoint, out, mode: str, *overrides: str):
    cfg = compose(
        [f"checkpoint={checkpoint}", f"output_dir={out}", "unsafe_code=true", "bootstrap_iters=0", *overrides]
    )
    lm = ScriptedLM(mode=mode)
    return cfg, lm, run(cfg, lm=lm)


def _only(*names: str, suite: tuple[str, ...] = (*EIGHT, "miniature")) -> list[str]:
    """Overrides that leave only ``names`` of ``suite`` (mio8_mini's: the eight and the miniature)."""
    return [f"~benchmarks.suite.{n}" for n in suite if n not in names]


@pytest.fixture(scope="module")
def right(checkpoint, tmp_path_factory):
    return _run(checkpoint, tmp_path_factory.mktemp("right"), "right", *_only(*EIGHT))


@pytest.fixture(scope="module")
def wrong(checkpoint, tmp_path_factory):
    return _run(checkpoint, tmp_path_factory.mktemp("wrong"), "wrong", *_only(*EIGHT))


@pytest.fixture(scope="module", params=["chat", "plain"])
def run_on(request, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"run-on-{request.param}")
    return _run(checkpoint, out, "run_on", f"prompt.protocol={request.param}", *_only(*EIGHT))


@pytest.mark.parametrize("name", EIGHT)
def test_right_answers_score_one(right, name):
    _, _, summary = right
    assert summary["scores"][name] == 1.0


@pytest.mark.parametrize("name", EIGHT)
def test_wrong_answers_score_zero(wrong, name):
    _, _, summary = wrong
    assert summary["scores"][name] == 0.0


@pytest.mark.parametrize("name", EIGHT)
def test_an_answer_followed_by_an_invented_problem_still_scores_right(run_on, name):
    """lm-eval's SVAMP/ASDiv definition takes the last "The final answer is" and has no stop string at the next
    plain-text example, so it scored the invented problem's answer."""
    cfg, _, summary = run_on
    assert summary["scores"][name] == 1.0, cfg.prompt.protocol


def test_the_same_prompts_and_scores_as_the_golden_record(run_on):
    """tests/golden/eval_prompts.json holds what these runs asked and scored (every request's rendered prompt and
    generation settings, hashed; every item's metrics; lm-eval's results) under both protocols, recorded with the
    task loading of commit 3ff39f8. A change to how tasks are loaded or prompts rendered (e.g. lm-eval's public
    ``include:`` overlays in place of its private loader modules) must reproduce them exactly, or regenerate the
    file on purpose."""
    cfg, _, _ = run_on
    golden = json.loads(GOLDEN_PROMPTS.read_text())[cfg.prompt.protocol]
    now = json.loads(json.dumps(prompts_and_scores(Path(cfg.output_dir) / "mio8_mini", EIGHT)))
    for name in EIGHT:
        assert now[name]["samples"] == golden[name]["samples"], name
        assert now[name]["results"] == golden[name]["results"], name


def test_a_model_that_writes_exit_scores_zero(checkpoint, tmp_path):
    """The old runner passed any program that exited with code 0, e.g. by calling exit() before the tests."""
    _, _, summary = _run(checkpoint, tmp_path, "exits", *_only(*CODE))
    assert summary["scores"] == {"humaneval": 0.0, "leetcode": 0.0}


def test_every_mini_item_reached_the_model(right):
    cfg, lm, _ = right
    folders = [Path(cfg.benchmarks.local_data) / name for name in EIGHT]
    assert lm.calls == sum(len(f.read_text().splitlines()) for d in folders for f in d.glob("*.jsonl"))


def test_the_protocol_is_recorded_in_every_result(right):
    cfg, lm, summary = right
    out = Path(cfg.output_dir) / "mio8_mini"
    chat = {
        "name": "chat",
        "apply_chat_template": True,
        "fewshot_as_multiturn": True,
        "system_instruction": None,
    }
    assert summary["protocol"] == chat
    for name in EIGHT:
        record = json.loads((out / f"{name}.json").read_text())
        assert record["settings"]["prompt"] == chat
        assert {k: record["protocol"][k] for k in chat} == chat
        assert record["protocol"]["task"] == bm.get(name).task_for("chat") == record["primary"]["task"]
        assert record["protocol"]["chat_template_sha256"]
    assert json.loads((out / "humaneval.json").read_text())["protocol"]["task"] == "mio_humaneval_instruct"
    assert all(
        c.startswith("<|im_start|>") for c in lm.contexts
    )  # every prompt went through the chat template


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
        assert record["score"] == record["metrics"][record["primary"]["task"]][bench.key] == 1.0
        assert record["settings"]["lm_eval_version"] == record["environment"]["lm_eval_version"]
        assert record["settings"]["checkpoint"] == record["checkpoint"]["content_hash"]
        assert record["versions"] and record["task_hashes"] and record["n_shot"]
        assert record["dataset"]["kind"] == "local" and record["dataset"]["files"]
        samples = (out / "samples" / f"{name}.jsonl").read_text().splitlines()
        assert samples and all("filtered_resps" in json.loads(line) for line in samples)
    math = json.loads((out / "math.json").read_text())
    assert (
        math["metrics"]["mio_math"]["math_verify,none"] == 1.0
    )  # lm-eval's second MATH metric, reported too


def test_hub_runs_record_the_pinned_dataset_revision(checkpoint, tmp_path, monkeypatch):
    """What a paper-scale result records about its data (computed before any dataset is loaded)."""
    from eval import harness

    cfg = compose(
        [f"checkpoint={checkpoint}", f"output_dir={tmp_path}", "benchmarks=mio8", "unsafe_code=true"]
    )
    for bench, entry in harness.preset_benchmarks(cfg):
        data = harness.benchmark_settings(cfg, bench, entry, harness.benchmark_task(cfg, bench, entry))[
            "data"
        ]
        assert data == {
            "kind": "hub",
            "path": bench.dataset,
            "revision": bench.revision,
            "split": bench.split,
            "items": bench.items,
        }


@pytest.mark.parametrize("mode, score", [("right", 1.0), ("run_on", 1.0), ("exits", 0.0), ("wrong", 0.0)])
def test_the_eurus_leetcode_set_runs_from_a_local_file(checkpoint, tmp_path, mode, score):
    """The Eurus evaluation's 180 problems are not on the hub: the task reads the file given as data_file (here
    the mini copy, same schema), scored with Eurus' import lines and its 10 s limit."""
    eurus = [
        "benchmarks.suite.leetcode.task=mio_leetcode_eurus",
        f"benchmarks.suite.leetcode.data_file={EURUS_MINI}",
    ]
    cfg, lm, summary = _run(
        checkpoint, tmp_path, mode, "benchmarks=mio8", *eurus, *_only("leetcode", suite=EIGHT)
    )
    assert summary["scores"] == {"leetcode": score} and lm.calls == 2
    record = json.loads((tmp_path / "mio8" / "leetcode.json").read_text())
    assert record["primary"]["task"] == "mio_leetcode_eurus"
    assert record["dataset"]["kind"] == "file" and record["dataset"]["path"] == shown_path(EURUS_MINI)
    assert record["settings"]["benchmark"]["task_files"]["files"] > 0


def test_the_eurus_set_without_its_file_says_where_to_get_it(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="data_file"):
        _run(
            checkpoint,
            tmp_path,
            "right",
            "benchmarks=mio8",
            "benchmarks.suite.leetcode.task=mio_leetcode_eurus",
        )


def test_average_is_defined_once():
    assert bm.average({"a": 1.0, "b": 0.0, "c": 0.5}) == pytest.approx(0.5)
    assert bm.average({"a": 1.0, "b": None}) is None
    assert bm.average({}) is None
