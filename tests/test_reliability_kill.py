"""SIGKILL at random points (issue 11): training, a sweep and an evaluation are killed a few times each, as the OOM
killer or a dead node would, then rerun with the same command. Nothing is corrupted, and the finished run gives the
same curve as an uninterrupted one, metrics rows included (up to timing). Seeded delays, so a failure reproduces."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PINNED, QUICK_RUN, REPO, TINY_MODEL
from test_reliability import assert_same_rows

from align.checkpoint import list_checkpoints, load_state_file
from align.records import read_metrics
from align.run import run

# ~20 minutes on the shared 2-core machine (each kill restarts Python, torch and Hydra): opt in with
# MIO_SIGKILL_TESTS=1 so that the default suite stays within its few minutes.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("MIO_SIGKILL_TESTS") != "1",
        reason="SIGKILL tests (~20 min here): MIO_SIGKILL_TESTS=1 pytest tests/test_reliability_kill.py",
    ),
]

STEPS = (
    "trainer.max_steps=24",
    "trainer.save_steps=1",  # a checkpoint every step: many kills land while one is being written
    "trainer.save_total_limit=2",
    "trainer.logging_steps=2",
    "trainer.eval_steps=7",
    "trainer.cpu_threads=1",
)


def start_and_kill(
    cmd: list[str], progress: Callable[[], int], rng: random.Random, timeout: float = 240
) -> bool:
    """Start ``cmd``; once ``progress()`` has grown (the work is under way), wait a random 0-1 s and SIGKILL it.
    True if it was killed before it finished."""
    before = progress()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while proc.poll() is None and progress() <= before and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.0))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def metric_rows(*folders: Path) -> int:
    total = 0
    for folder in folders:
        path = folder / "metrics.jsonl"
        total += path.read_text().count("\n") if path.exists() else 0
    return total


def assert_sound_folder(out: Path) -> None:
    """Every file a resume or analysis reads parses; no half-written checkpoint is left."""
    assert json.loads((out / "results.json").read_text())["status"] == "completed"
    read_metrics(out / "metrics.jsonl")
    assert not list((out / "checkpoints").glob(".tmp-*"))
    for ckpt in list_checkpoints(out / "checkpoints"):
        load_state_file(ckpt / "optimizer.pt")
        load_state_file(ckpt / "rng-0.pt")


def train_cli(tiny_model_dir: Path, *args: str, multirun: bool = False) -> list[str]:
    return [sys.executable, str(REPO / "align" / "run.py"), *(["-m"] if multirun else []), *PINNED,
            f"model.name_or_path={tiny_model_dir}", *TINY_MODEL, *QUICK_RUN, *STEPS, "resume=true", *args]  # fmt: skip


def test_training_killed_at_random_points_resumes_on_the_same_curve(tiny_cfg, tiny_model_dir, tmp_path):
    rng = random.Random(11)
    out = tmp_path / "killed"
    cmd = train_cli(tiny_model_dir, f"hydra.run.dir={out}")
    kills = sum(start_and_kill(cmd, lambda: metric_rows(out), rng) for _ in range(3))
    assert kills >= 2, "the kills came too late to test anything"
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    whole = run(tiny_cfg(*STEPS, out=tmp_path / "whole"))
    assert_sound_folder(out)
    assert_same_rows(out, tmp_path / "whole")
    assert json.loads((out / "results.json").read_text())["tokens"] == whole["tokens"]


def test_sweep_killed_at_random_points_resumes_every_job(tiny_cfg, tiny_model_dir, tmp_path):
    rng = random.Random(12)
    sweep = tmp_path / "sweep"
    cmd = train_cli(tiny_model_dir, "method=mio,dpo", f"hydra.sweep.dir={sweep}", multirun=True)

    def jobs() -> list[Path]:
        return (
            sorted(d for d in sweep.iterdir() if d.is_dir() and (d / "config.yaml").exists())
            if sweep.exists()
            else []
        )

    kills = sum(start_and_kill(cmd, lambda: metric_rows(*jobs()), rng) for _ in range(2))
    assert kills >= 1
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(jobs()) == 2
    for job in jobs():
        method = json.loads((job / "results.json").read_text())["method"]
        run(tiny_cfg(*STEPS, f"method={method}", out=tmp_path / f"whole-{method}"))
        assert_sound_folder(job)
        assert_same_rows(job, tmp_path / f"whole-{method}")


EVAL_ARGS = (
    "unsafe_code=true",
    "bootstrap_iters=0",
    "backend.batch_size=8",
    "backend.device=cpu",
    "backend.cpu_threads=1",
    "~benchmarks.suite.miniature",
    "~benchmarks.suite.humaneval",
    "~benchmarks.suite.leetcode",
    "~benchmarks.suite.theoremqa",
)


def test_evaluation_killed_at_random_points_gives_the_same_scores(tiny_model_dir, tmp_path):
    from eval import harness
    from eval.config import compose
    from eval.results import read_json

    rng = random.Random(13)
    out = tmp_path / "killed"
    cmd = [sys.executable, str(REPO / "eval" / "run.py"), f"checkpoint={tiny_model_dir}", f"output_dir={out}",
           *EVAL_ARGS]  # fmt: skip
    folder = out / "mio8_mini"

    def results() -> int:
        return len(list(folder.glob("*.json"))) if folder.exists() else 0

    kills = sum(start_and_kill(cmd, results, rng) for _ in range(2))
    assert kills >= 1
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    whole = harness.run(
        compose([f"checkpoint={tiny_model_dir}", f"output_dir={tmp_path / 'whole'}", *EVAL_ARGS])
    )
    summary = read_json(folder / "summary.json")
    assert summary["complete"] and summary["scores"] == whole["scores"]
    for name in summary["scores"]:
        assert read_json(folder / f"{name}.json")["score"] == whole["scores"][name]
