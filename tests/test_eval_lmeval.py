"""eval/ as an lm-eval user sees it: tasks pointed at their data by public ``include:`` overlay YAMLs (no private
lm-eval module imported), lm-eval's own result and sample files written beside ours, lm-eval's request cache
resuming a benchmark that died half-way, and the stock ``lm_eval`` command over the overlays asking the same
prompts and scoring the same as eval/harness.py (the scripted model of eval_fixtures, offline)."""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path

import pytest
from eval_fixtures import ScriptedLM, prompts_and_scores

from eval import lmtasks
from eval.config import compose
from eval.harness import run

EVAL = Path(lmtasks.__file__).parent
ALL = ["bbh", "humaneval", "leetcode", "gsm_plus", "math", "theoremqa", "svamp", "asdiv", "miniature"]


def _cfg(checkpoint: Path, out: Path, *keep: str):
    drop = [f"~benchmarks.suite.{n}" for n in ALL if n not in keep]
    return compose([f"checkpoint={checkpoint}", f"output_dir={out}", "bootstrap_iters=0", *drop])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scripted-checkpoint")
    (folder / "config.json").write_text('{"model_type": "scripted"}\n')
    return folder


def _private_lm_eval_imports(path: Path) -> list[str]:
    """Modules of lm-eval imported by ``path`` that are not its public API (a name part starting with "_", the
    Group internals, the config dataclasses)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        for name in names:
            parts = name.split(".")
            private = any(p.startswith("_") for p in parts) or name in ("lm_eval.api.group", "lm_eval.config")
            if parts[0] == "lm_eval" and (private or name.startswith("lm_eval.config.")):
                found.append(f"{path.name}: {name}")
    return found


def test_eval_imports_no_private_lm_eval_module():
    """eval/lmtasks.py built groups through lm_eval.tasks._yaml_loader, _index, _factory and lm_eval.api.group."""
    files = sorted(EVAL.glob("*.py")) + sorted((EVAL / "tasks").rglob("*.py"))
    assert [f for path in files for f in _private_lm_eval_imports(path)] == []


def test_the_overlays_include_the_definitions_and_change_only_the_data(checkpoint, tmp_path):
    cfg = _cfg(checkpoint, tmp_path, "math")
    run(cfg, lm=ScriptedLM(mode="right"))
    folder = tmp_path / "mio8_mini" / "tasks" / "math"
    assert sorted(p.name for p in folder.glob("*.yaml")) == [
        "mio_math.yaml",
        "mio_math_algebra.yaml",
        "mio_math_prealgebra.yaml",
    ]  # the two subjects with a mini copy, and the group over them
    group = lmtasks.read_yaml(folder / "mio_math.yaml")
    assert group["group"] == "mio_math" and group["task"] == ["mio_math_algebra", "mio_math_prealgebra"]
    assert group["aggregate_metric_list"][0]["weight_by_size"] is True  # the group's own aggregation
    overlay = lmtasks.read_yaml(folder / "mio_math_algebra.yaml")
    original = lmtasks.read_yaml(EVAL / "tasks" / "math_minerva" / "mio_math_algebra.yaml")
    changed = {k for k in {*overlay, *original} if overlay.get(k) != original.get(k)}
    assert changed == {"dataset_path", "dataset_name", "dataset_kwargs"}
    mini = EVAL / "tasks" / "mini" / "math" / "mio_math_algebra.jsonl"
    assert overlay["dataset_kwargs"] == {"data_files": {"test": str(mini), "train": str(mini)}}


def _lm_eval_sample_rows(folder: Path, tasks: set[str]) -> list[list]:
    """The rows of ``prompts_and_scores`` (task, doc id, filter, hash of the request's arguments, target hash,
    metrics) from lm-eval's own ``samples_<task>_<time>.jsonl`` files of ``tasks`` in ``folder``."""
    rows = []
    for task in tasks:
        for path in folder.glob(f"samples_{task}_*.jsonl"):
            for line in path.read_text().splitlines():
                s = json.loads(line)
                args = [[a["arg_0"], a["arg_1"]] for a in s["arguments"].values()]  # lm-eval's file form
                digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()
                rows.append(
                    [
                        task,
                        s["doc_id"],
                        s["filter"],
                        digest,
                        s["target_hash"],
                        {m: s[m] for m in s["metrics"]},
                    ]
                )
    return sorted(rows, key=lambda r: r[:3])


def test_lm_evals_own_result_and_sample_files_are_written(checkpoint, tmp_path):
    cfg = _cfg(checkpoint, tmp_path, "bbh", "gsm_plus")
    run(cfg, lm=ScriptedLM(mode="right"))
    out = tmp_path / "mio8_mini"
    for name, leaves in {"bbh": 3, "gsm_plus": 1}.items():
        (results,) = (out / "lm_eval").glob(f"{name}_*.json")
        theirs = json.loads(results.read_text())
        ours = json.loads((out / f"{name}.json").read_text())
        assert theirs["results"] == ours["metrics"] and theirs["task_hashes"] == ours["task_hashes"]
        assert theirs["model_name"] == str(checkpoint) and theirs["chat_template_sha"]
        assert len(ours["n_samples"]) == leaves
        rows = _lm_eval_sample_rows(out / "lm_eval", set(ours["n_samples"]))
        assert rows == prompts_and_scores(out, [name])[name]["samples"]
    assert not list(
        (out / "requests").glob("*.db")
    )  # the request cache is dropped once the result is written


def test_a_benchmark_that_dies_half_way_resumes_from_lm_evals_request_cache(checkpoint, tmp_path):
    """Every answer goes to lm-eval's request cache (sqlite) as it comes back, as HFLM hands it over: after a
    failure at the fourth of GSM-Plus' eight requests, the rerun asks the model only for the five not answered."""
    cfg = _cfg(checkpoint, tmp_path, "gsm_plus")
    with pytest.raises(RuntimeError, match="scripted failure after 3 answers"):
        run(cfg, lm=ScriptedLM(mode="right", fail_after=3))
    out = tmp_path / "mio8_mini"
    assert (
        not (out / "gsm_plus.json").exists()
        and len(list((out / "requests").glob("gsm_plus-*_rank0.db"))) == 1
    )
    resumed = ScriptedLM(mode="right")
    assert run(cfg, lm=resumed)["scores"] == {"gsm_plus": 1.0}
    assert resumed.calls == 5
    fresh = tmp_path / "fresh"
    run(_cfg(checkpoint, fresh, "gsm_plus"), lm=ScriptedLM(mode="right"))
    assert prompts_and_scores(out, ["gsm_plus"]) == prompts_and_scores(fresh / "mio8_mini", ["gsm_plus"])


def test_overwrite_does_not_serve_cached_answers(checkpoint, tmp_path):
    cfg = _cfg(checkpoint, tmp_path, "gsm_plus")
    with pytest.raises(RuntimeError):
        run(cfg, lm=ScriptedLM(mode="right", fail_after=3))
    again = ScriptedLM(mode="wrong")
    cfg.overwrite = True
    assert run(cfg, lm=again)["scores"] == {"gsm_plus": 0.0} and again.calls == 8


def _values(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if "_stderr," not in k}


class _CliScripted(ScriptedLM):
    """The scripted model under a name lm-eval's registry (and so its command line) knows."""


def test_the_stock_lm_eval_command_over_the_overlays_asks_and_scores_the_same(
    checkpoint, tmp_path, monkeypatch
):
    """eval/README.md's command: ``lm_eval --include_path <output_dir>/<preset>/tasks --tasks ...`` with the
    protocol's switches and the preset's generation cap gives the requests and per-item scores of our run."""
    import lm_eval.models  # noqa: F401 - the built-in models first: lm-eval loads them only into an empty registry
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.api.registry import register_model

    register_model("mio_scripted_test")(_CliScripted)
    cfg = _cfg(checkpoint, tmp_path, "bbh", "svamp")
    run(cfg, lm=ScriptedLM(mode="run_on"))
    out = tmp_path / "mio8_mini"
    argv = [
        "lm_eval",
        "--model", "mio_scripted_test",
        "--model_args", "mode=run_on",
        "--include_path", str(out / "tasks"),
        "--tasks", "bbh_cot_fewshot,mio_svamp",
        "--apply_chat_template", "--fewshot_as_multiturn",
        "--gen_kwargs", "max_gen_toks=32",
        "--log_samples", "--output_path", str(tmp_path / "cli" / "results.json"),
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    # The command indexes all ~14,000 built-in tasks before the include path (~35 s here); only the BBH folder,
    # whose names the overlays override as they do under the full index, is kept.
    from lm_eval.tasks import TaskManager

    init = TaskManager.__init__

    def builtin_bbh_only(self, verbosity=None, include_path=None, include_defaults=True, metadata=None):
        paths = [include_path] if isinstance(include_path, (str, Path)) else list(include_path or [])
        if include_defaults:
            paths.insert(0, str(lmtasks.lm_eval_tasks_dir() / "bbh"))
        init(self, verbosity, paths, False, metadata)

    monkeypatch.setattr(TaskManager, "__init__", builtin_bbh_only)
    cli_evaluate()
    (results,) = (tmp_path / "cli").glob("results_*.json")
    theirs = json.loads(results.read_text())["results"]
    for name in ("bbh", "svamp"):  # the values (the CLI bootstraps the standard errors, our run did not)
        ours = json.loads((out / f"{name}.json").read_text())["metrics"]
        assert {t: _values(theirs[t]) for t in ours} == {t: _values(m) for t, m in ours.items()}, name
    ours_rows = [r for n in ("bbh", "svamp") for r in prompts_and_scores(out, [n])[n]["samples"]]
    tasks = {t for n in ("bbh", "svamp") for t in json.loads((out / f"{n}.json").read_text())["n_samples"]}
    assert _lm_eval_sample_rows(tmp_path / "cli", tasks) == sorted(ours_rows, key=lambda r: r[:3])
