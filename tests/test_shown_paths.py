"""Records and tables name files relative to the working directory when they lie under it (common.records.shown_path),
so a run made in one clone and committed, or read in another, names no path of the machine that made it."""

from __future__ import annotations

import json
from pathlib import Path

from common.records import shown_path


def test_shown_path_is_relative_under_the_cwd_and_unchanged_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "outputs" / "run" / "final") == "outputs/run/final"
    assert shown_path("outputs/run") == "outputs/run"
    assert shown_path(tmp_path) == "."
    outside = tmp_path.parent / "elsewhere" / "x.jsonl"
    assert shown_path(outside) == str(outside)
    assert shown_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_run_and_its_tables_name_its_folder_relative_to_the_cwd(tiny_cfg, tmp_path, monkeypatch):
    from align.run import run
    from analysis import tables
    from analysis.collect import collect

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "outputs" / "runs" / "a"
    results = run(tiny_cfg(out=out))
    assert results["final_model"] == "outputs/runs/a/final"
    assert str(tmp_path) not in (out / "results.json").read_text()
    assert Path(json.loads((out / "results.json").read_text())["final_model"]).is_dir()  # opens from the cwd

    sweep = collect(tmp_path / "outputs" / "runs")
    assert list(sweep.runs["run_dir"]) == ["outputs/runs/a"]
    assert not any(str(tmp_path) in str(v) for v in sweep.curves["run_dir"])
    assert str(tmp_path) not in tables.training_frame(sweep).to_csv()
