"""The command lines from the README, run as a user runs them (subprocesses, the Hydra CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import QUICK_RUN, REPO, TINY_MODEL


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "align" / "run.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_single_run_writes_metrics_checkpoint_and_config(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    p = cli(f"model.name_or_path={tiny_model_dir}", *TINY_MODEL, *QUICK_RUN, f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "metrics.jsonl").read_text().count('"split": "train"') == 4
    assert (out / "final" / "model.safetensors").exists() and (out / "final" / "tokenizer.json").exists()
    assert "method:\n  name: mio" in (out / "config.yaml").read_text()
    assert (out / "run.log").exists()
    assert json.loads((out / "results.json").read_text())["status"] == "completed"


def test_three_method_sweep_gives_one_folder_per_job(tiny_model_dir, tmp_path):
    sweep = tmp_path / "sweep"
    p = cli(
        "-m",
        "method=mio,dpo,nca_pair",
        f"model.name_or_path={tiny_model_dir}",
        *TINY_MODEL,
        *QUICK_RUN,
        f"hydra.sweep.dir={sweep}",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert [d.name.split("_", 1)[0] for d in jobs] == ["0", "1", "2"]
    methods = [json.loads((d / "results.json").read_text())["method"] for d in jobs]
    assert methods == ["mio", "dpo", "nca_pair"]


def test_misspelt_key_exits_with_the_key_named(tmp_path):
    p = cli("method.bta=0.3", f"hydra.run.dir={tmp_path / 'x'}")
    assert p.returncode != 0
    assert "bta" in p.stderr


def test_mistral_sweep_composes(tmp_path):
    """`python align/run.py method=mio model=mistral7b -m` composes (training it needs GPUs and the hub)."""
    p = cli("method=mio", "model=mistral7b", f"hydra.run.dir={tmp_path}", "--cfg", "job", "--resolve")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "HuggingFaceH4/mistral-7b-sft-beta" in p.stdout and "name: mio" in p.stdout


def _sweep_with_a_bad_job(tiny_model_dir, sweep, rates, *extra):
    """One job per learning rate, the first of which fails its config checks (a negative learning rate)."""
    return cli(
        "-m",
        f"trainer.learning_rate={rates}",
        f"model.name_or_path={tiny_model_dir}",
        *TINY_MODEL,
        *QUICK_RUN,
        f"hydra.sweep.dir={sweep}",
        *extra,
    )


def _job_metrics(sweep):
    """Per job folder (in job order): its metrics rows without the timing column, or None where it trained nothing."""
    out = []
    for d in sorted(d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith(".")):
        f = d / "metrics.jsonl"
        rows = [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []
        out.append([{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows] or None)
    return out


def test_a_failed_sweep_job_does_not_stop_the_others(tiny_model_dir, tmp_path):
    """The basic launcher and hydra/launcher=parallel (joblib, two jobs at a time) both run every job, name the one
    that failed and end the sweep with a non-zero exit code; the parallel launcher's run is the basic launcher's,
    row for row."""
    runs = {}
    for launcher, rates in (("basic", "-1,1e-4"), ("parallel", "-1,1e-4,2e-4")):
        sweep = tmp_path / launcher
        p = _sweep_with_a_bad_job(tiny_model_dir, sweep, rates, f"hydra/launcher={launcher}")
        assert p.returncode != 0
        assert "error in sweep job #0" in p.stderr
        assert "learning_rate=-1.0: must be a positive number" in p.stderr
        runs[launcher] = _job_metrics(sweep)
        assert runs[launcher][0] is None and all(runs[launcher][1:]), launcher  # job 0 failed, the rest ran
    assert runs["basic"][1] == runs["parallel"][1]  # lr 1e-4 under both
