"""The tiny local Llama model through all eight real task definitions (mini copies), with the HF backend; then the
cache: a rerun loads nothing and writes nothing, a lost result file is recomputed alone, a changed setting is not
served from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval import harness
from eval.config import compose
from pipeline.evaluate import resolve_checkpoint

EIGHT = ["bbh", "humaneval", "leetcode", "gsm_plus", "math", "theoremqa", "svamp", "asdiv"]
SMALL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "num_kv_heads": 1,
    "vocab_size": 512,
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A test-size build of the embedded tiny model (same builder and tokenizer, smaller spec), built the way the
    eval config builds any model config: ``pipeline.evaluate.resolve_checkpoint`` -> ``align.models.prepare_model_source``."""
    path = tmp_path_factory.mktemp("eval-models") / "tiny"
    cfg = compose([f"model.name_or_path={path}", *(f"model.build.{k}={v}" for k, v in SMALL.items())])
    assert cfg.checkpoint is None and not path.exists()
    built = resolve_checkpoint(cfg).checkpoint
    assert Path(built) == path and (path / "config.json").exists()
    return path


def _cfg(checkpoint: Path, out: Path, *overrides: str):
    return compose(
        [
            f"checkpoint={checkpoint}",
            f"output_dir={out}",
            "unsafe_code=true",
            "bootstrap_iters=0",
            "backend.batch_size=8",
            "backend.device=cpu",
            "backend.cpu_threads=1",
            "~benchmarks.suite.miniature",  # the miniature model's own benchmark (tests/test_miniature*.py)
            *overrides,
        ]
    )


@pytest.fixture(scope="module")
def first_run(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-eval")
    cfg = _cfg(tiny_checkpoint, out)
    return cfg, harness.run(cfg), out / "mio8_mini"


def _stamps(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_tiny_model_runs_all_eight(first_run, tiny_checkpoint):
    _, summary, folder = first_run
    assert summary["complete"] and list(summary["scores"]) == EIGHT
    assert all(0.0 <= s <= 1.0 for s in summary["scores"].values())
    assert summary["average"] == pytest.approx(sum(summary["scores"].values()) / 8)
    for name in EIGHT:
        record = json.loads((folder / f"{name}.json").read_text())
        assert record["model_info"]["model"] == str(tiny_checkpoint)  # HFLM loaded it from the folder
        assert record["settings"]["benchmark"]["gen_kwargs"] == {"max_gen_toks": 32}
        rows = [json.loads(line) for line in (folder / "samples" / f"{name}.jsonl").read_text().splitlines()]
        assert rows and all(isinstance(r["resps"][0][0], str) for r in rows)  # real generations were scored


def test_rerun_with_the_same_settings_computes_nothing(first_run, monkeypatch):
    cfg, summary, folder = first_run
    before = _stamps(folder)

    def no_model(*_args):
        raise AssertionError("the rerun loaded the model")

    monkeypatch.setattr(harness, "load_model", no_model)
    again = harness.run(cfg)
    assert again == summary
    assert _stamps(folder) == before  # no result, sample or summary file rewritten


def test_an_interrupted_run_resumes_at_the_first_unfinished_benchmark(first_run, monkeypatch):
    cfg, _, folder = first_run
    (folder / "math.json").unlink()  # as if the run had stopped during MATH
    before = _stamps(folder)
    loads = []
    real_load = harness.load_model
    monkeypatch.setattr(harness, "load_model", lambda *a: loads.append(1) or real_load(*a))
    summary = harness.run(cfg)
    after = _stamps(folder)
    assert len(loads) == 1 and summary["complete"]
    changed = {name for name in after if before.get(name) != after[name]}
    ours = {name for name in changed if not name.startswith("lm_eval/")}
    assert ours == {"math.json", "samples/math.jsonl"}  # same scores: summary.json left as it was
    assert {n.split("_2")[0] for n in changed - ours} == {  # lm-eval's own files, new ones for MATH only
        "lm_eval/math",
        "lm_eval/samples_mio_math_algebra",
        "lm_eval/samples_mio_math_prealgebra",
    }


def test_a_changed_setting_is_not_served_from_the_cache(first_run, tiny_checkpoint):
    cfg, _, folder = first_run
    old = json.loads((folder / "asdiv.json").read_text())
    cfg = _cfg(
        tiny_checkpoint,
        Path(cfg.output_dir),
        "generation.max_gen_toks=8",
        *[f"~benchmarks.suite.{n}" for n in EIGHT if n != "asdiv"],
    )
    summary = harness.run(cfg)
    new = json.loads((folder / "asdiv.json").read_text())
    assert new["settings_hash"] != old["settings_hash"]
    assert new["settings"]["benchmark"]["gen_kwargs"] == {"max_gen_toks": 8}
    assert list(summary["scores"]) == ["asdiv"]


def test_the_training_loop_entry_point(tiny_checkpoint, tmp_path):
    """What the end of a training run calls: one function, checkpoint folder in, summary out."""
    keep_one = tuple(f"~benchmarks.suite.{n}" for n in [*EIGHT, "miniature"] if n != "svamp")
    summary = harness.evaluate_checkpoint(
        str(tiny_checkpoint),
        "mio8_mini",
        str(tmp_path / "eval"),
        ("backend.batch_size=8", "backend.cpu_threads=1", "bootstrap_iters=0", *keep_one),
    )
    assert list(summary["scores"]) == ["svamp"] and summary["complete"]
    assert (tmp_path / "eval" / "mio8_mini" / "svamp.json").exists()
