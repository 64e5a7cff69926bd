"""eval/ pieces on their own: code execution, answer matching, checkpoint hashing, atomic writes, and that our
copies of lm-eval task definitions still match the installed lm-eval."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from align import fingerprint as checkpoints
from eval import lmtasks
from eval.benchmarks import BENCHMARKS, primary_score
from eval.results import settings_hash, write_json_atomic
from eval.tasks import execution
from eval.tasks.lmeval_source import cot_llama_config, minerva_helpers

TASKS = Path(lmtasks.__file__).parent / "tasks"


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
    import importlib.util

    spec = importlib.util.spec_from_file_location("theoremqa_utils", TASKS / "theoremqa" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert utils.process_results({"answer": "6"}, [done]) == {"exact_match": 1}
    assert utils.process_results({"answer": "7"}, [done]) == {"exact_match": 0}
    assert len(utils.list_fewshot_samples()) == 4
    assert set(minerva_helpers()) >= {"normalize_final_answer", "get_unnormalized_answer", "process_docs"}


def test_primary_score_reads_the_tables_key():
    results = {"gsm_plus": {"exact_match,flexible-extract": 0.25, "exact_match,strict-match": 0.5}}
    assert primary_score(BENCHMARKS["gsm_plus"], results) == 0.25
    with pytest.raises(KeyError, match="exact_match,get-answer"):
        primary_score(BENCHMARKS["bbh"], {"bbh_cot_fewshot": {"exact_match,none": 1.0}})


# --- our copies of lm-eval definitions stay in step with the installed lm-eval --------------------------------------


def _yaml(path: Path) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=False, recursive=True)


def test_humaneval_task_is_lm_evals_apart_from_the_scorer():
    ours, theirs = (
        _yaml(TASKS / "humaneval" / "mio_humaneval.yaml"),
        _yaml(lmtasks.lm_eval_tasks_dir() / "humaneval" / "humaneval.yaml"),
    )
    for key in (
        "dataset_path",
        "test_split",
        "output_type",
        "doc_to_text",
        "doc_to_target",
        "generation_kwargs",
        "repeats",
        "num_fewshot",
        "unsafe_code",
    ):
        assert ours[key] == theirs[key], key
    assert ours["metric_list"][0]["k"] == theirs["metric_list"][0]["k"] == [1]
    assert ours["filter_list"][0]["name"] == theirs["filter_list"][0]["name"] == "create_test"


def test_svamp_task_is_lm_evals_asdiv_cot_llama_on_svamp():
    ours, theirs = _yaml(TASKS / "svamp" / "mio_svamp.yaml"), cot_llama_config()
    for key in (
        "doc_to_text",
        "doc_to_target",
        "filter_list",
        "generation_kwargs",
        "metric_list",
        "num_fewshot",
    ):
        assert ours[key] == theirs[key], key


def test_math_tasks_are_lm_evals_minerva_math_apart_from_sympy():
    ours = _yaml(TASKS / "math_minerva" / "mio_math_algebra.yaml")
    theirs = _yaml(lmtasks.lm_eval_tasks_dir() / "minerva_math" / "minerva_math_algebra.yaml")
    for key in (
        "dataset_path",
        "dataset_name",
        "training_split",
        "test_split",
        "doc_to_target",
        "generation_kwargs",
        "num_fewshot",
        "output_type",
    ):
        assert ours[key] == theirs[key], key
    assert ours["fewshot_config"]["sampler"] == theirs["fewshot_config"]["sampler"]
    group = yaml.safe_load((TASKS / "math_minerva" / "_mio_math.yaml").read_text())
    assert [t.replace("mio_math", "minerva_math") for t in group["task"]] == yaml.safe_load(
        (lmtasks.lm_eval_tasks_dir() / "benchmarks" / "minerva_math.yaml").read_text()
    )["task"]


def test_every_benchmark_has_its_task_files_and_mini_copy():
    mini = TASKS / "mini"
    for name in ["bbh", "humaneval", "leetcode", "gsm_plus", "math", "theoremqa", "svamp", "asdiv"]:
        bench = BENCHMARKS[name]
        assert lmtasks.task_files(bench)["files"] > 0
        rows = [
            json.loads(line)
            for f in sorted((mini / name).glob("*.jsonl"))
            for line in f.read_text().splitlines()
        ]
        assert len(rows) >= 2, name
    assert (TASKS / "CHANGELOG.md").exists()


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
