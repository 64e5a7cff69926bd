"""`make reproduce-table1`'s path end to end on the test-size tiny model (the real Hydra CLI, training, the eight
mini benchmarks, the analysis), a second invocation that computes nothing, and the sweep configs of both scales."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import QUICK_RUN, REPO, TINY_MODEL

from align.config import CONF_DIR
from align.losses import LOSSES
from analysis import reproduce

BENCHES = ["bbh", "humaneval", "leetcode", "gsm_plus", "math", "theoremqa", "svamp", "asdiv"]
# The end-to-end test scores two of the eight mini copies (each costs seconds of lm-eval set-up per model; the eight
# are eval/'s tests): the table, report and cache paths are the same for two as for eight.
E2E_BENCHES = ["gsm_plus", "svamp"]
# What Hydra rewrites on every launch (each job's .hydra/ and log, the sweep's multirun.yaml), and results.json,
# which align/run.py rewrites with the same content after the cached evaluation: nothing else may change.
REWRITTEN_PER_LAUNCH = (
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
    "run.log",
    "multirun.yaml",
    "results.json",
)


def reproduce_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis.reproduce", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def snapshot(runs: Path) -> dict[str, tuple[float, int]]:
    return {
        str(p.relative_to(runs)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in runs.rglob("*")
        if p.is_file()
    }


@pytest.mark.slow
def test_reproduce_table1_end_to_end_then_a_rerun_computes_nothing(tiny_model_dir, tmp_path):
    out = tmp_path / "table1"
    args = [
        "--scale",
        "tiny",
        "--out",
        str(out),
        "method=mio,nca_pair",
        "seed=0",
        "hydra/launcher=basic",  # one process: two 4-step jobs do not repay workers' start (test_cli tests parallel)
        "model=tiny",
        "dataset=tiny",
        f"model.name_or_path={tiny_model_dir}",
        *TINY_MODEL,
        *QUICK_RUN,
        "evaluate.benchmarks=mio8_mini",  # the eight mini copies (the miniature's 500 items: tests/test_miniature*)
        "evaluate.overrides=['unsafe_code=true','backend.cpu_threads=1','backend.batch_size=8','bootstrap_iters=0',"
        + ",".join(
            f"'~benchmarks.suite.{b}'" for b in [*sorted(set(BENCHES) - set(E2E_BENCHES)), "miniature"]
        )
        + "]",
    ]
    first = reproduce_cli(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    runs = out / "runs"
    run_dirs = sorted(d for d in runs.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert len(run_dirs) == 3 and all("=" not in d.name and "," not in d.name for d in run_dirs)
    assert run_dirs[-1].name == "start__tiny"  # the base model scored without preference training

    table = pd.read_csv(out / "table1.csv")
    assert sorted(table["method"]) == ["mio", "nca_pair", "start"] and list(table.columns[3:5]) == E2E_BENCHES
    for _, row in table.iterrows():
        summary = json.loads((Path(row["run_dir"]) / "eval" / "mio8_mini" / "summary.json").read_text())
        assert [row[b] for b in E2E_BENCHES] == pytest.approx([summary["scores"][b] for b in E2E_BENCHES])
        assert row["average"] == pytest.approx(summary["average"])
    for stem in ("fig3_training_curves_tiny", "fig5_mio_vs_nca_pair_tiny", "fig_mi_dv_js_tiny"):
        for ext in ("png", "pdf", "csv"):
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 0
    curves = pd.read_csv(out / "figures" / "fig3_training_curves_tiny.csv")
    assert sorted(set(curves["step"])) == [1, 2, 3, 4]  # QUICK_RUN: 4 steps, a row every step
    report = (out / "report.md").read_text()
    assert (out / "table1.md").read_text() in report and "fig3_training_curves_tiny.png" in report
    assert json.loads((out / "reproduce_log.jsonl").read_text())["returncode"] == 0

    before = snapshot(runs)
    results_before = {d.name: (d / "results.json").read_text() for d in run_dirs}
    second = reproduce_cli(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert log.count("training already completed") == 2
    assert log.count("(computed now: none)") == 2
    after = snapshot(runs)
    assert set(after) == set(before), "a rerun created or removed files"
    changed = [p for p in before if before[p] != after[p] and not p.endswith(REWRITTEN_PER_LAUNCH)]
    assert changed == []
    assert any(
        p.startswith(d.name + "/eval/mio8_mini/") for p in after for d in run_dirs
    )  # compared, unchanged
    assert {d.name: (d / "results.json").read_text() for d in run_dirs} == results_before
    assert len((out / "reproduce_log.jsonl").read_text().splitlines()) == 2
    assert (out / "report.md").read_text().count("| 0 | `python ") == 2  # both invocations listed


def test_tiny_grid_is_every_registered_method_from_the_miniature_sft_model_over_three_seeds():
    cfg = yaml.safe_load((CONF_DIR / "experiment" / "table1_tiny.yaml").read_text())
    grid = cfg["hydra"]["sweeper"]["params"]
    assert sorted(grid["method"].split(",")) == sorted(LOSSES)
    assert grid["seed"].split(",") == ["0", "1", "2"] and "model" not in grid
    assert {"override /model": "mini_sft"} in cfg["defaults"] and {"override /dataset": "mini_pairs"} in cfg[
        "defaults"
    ]
    assert cfg["evaluate"]["benchmarks"] == "mio8_mini"


def test_paper_grid_names_existing_models_and_every_method():
    cfg = yaml.safe_load((CONF_DIR / "experiment" / "table1_paper.yaml").read_text())
    grid = cfg["hydra"]["sweeper"]["params"]
    assert sorted(grid["method"].split(",")) == sorted(LOSSES)
    for model in grid["model"].split(","):
        assert (CONF_DIR / "model" / f"{model}.yaml").exists(), model
    assert cfg["evaluate"] == {
        "benchmarks": "mio8",
        "overrides": ["unsafe_code=true", "prompt.protocol=chat"],
    }


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]])
def test_paper_sweep_composes_with_and_without_slurm(launcher, tmp_path):
    """What `make reproduce-table1 SCALE=paper [ARGS=...]` launches composes (training it needs GPUs)."""
    cmd = reproduce.sweep_command("paper", tmp_path / "runs", launcher)
    job = [c for c in cmd if c != "-m"] + ["--cfg", "all", "--resolve"]
    p = subprocess.run(job, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    cfg = yaml.safe_load(p.stdout)
    assert cfg["model"]["name_or_path"] == "HuggingFaceH4/mistral-7b-sft-beta"
    assert cfg["dataset"]["path"] == "openbmb/UltraInteract_pair"
    assert cfg["deepspeed"]["zero_stage"] == 3 and cfg["distributed"]["launcher"] == "torchrun"
    assert "submitit" in cfg["hydra"]["launcher"]["_target_"] or not launcher


def test_dry_run_prints_the_sweep_command(capsys, tmp_path):
    assert (
        reproduce.main(["--scale", "paper", "--out", str(tmp_path), "--dry-run", "hydra/launcher=slurm"]) == 0
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith("$ python") and " align/run.py -m experiment=table1_paper" in line  # run in REPO
    assert f"hydra.sweep.dir={tmp_path / 'runs'}" in line and line.endswith("hydra/launcher=slurm")
    assert not any(tmp_path.iterdir())
