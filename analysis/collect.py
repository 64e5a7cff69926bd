"""Read a sweep's run folders into tidy pandas frames: the only place analysis/ touches result files.

A run folder is any folder holding ``config.yaml`` beside ``results.json`` or ``metrics.jsonl`` (align/records.py
lists the layout). Every frame carries ``run_dir``, so each number in a table or figure traces back to the folder
(and, for benchmark scores, the ``summary.json``) it came from.

    from analysis.collect import collect
    sweep = collect("outputs/table1/tiny/runs")
    sweep.runs      # one row per run: model, method, hyperparameters, status, held-out metrics
    sweep.scores    # one row per (run, preset, benchmark): the score from <run>/eval/<preset>/summary.json, the
                    # items scored (n) and any per-part scores (sub/<part>: the miniature's families)
    sweep.curves    # one row per metrics.jsonl row: run_dir, split, step and every logged metric
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from common.records import shown_path

# Held-out metrics (results.json "eval") carried into the runs frame, prefixed "eval/".
HELD_OUT_KEYS = (
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "mi/dv",
    "mi/js",
    "displacement/chosen_per_token",
)


@dataclass
class Sweep:
    """What ``collect`` found: ``runs``, ``scores`` and ``curves`` frames (see the module docstring)."""

    root: Path
    runs: pd.DataFrame
    scores: pd.DataFrame
    curves: pd.DataFrame


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every run folder under ``root`` (``root`` itself included), sorted; eval and checkpoint folders skipped."""
    root = Path(root)
    if not root.exists():
        return []
    found = []
    for cfg in sorted(root.rglob("config.yaml")):
        d = cfg.parent
        if ".hydra" in d.parts or "eval" in d.relative_to(root).parts:
            continue
        if (d / "results.json").exists() or (d / "metrics.jsonl").exists():
            found.append(d)
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _hydra_choice(run_dir: Path, group: str) -> str | None:
    """The config-group choice Hydra recorded for this job (e.g. model=tiny_sft), if the folder has .hydra/."""
    f = run_dir / ".hydra" / "hydra.yaml"
    if not f.exists():
        return None
    choices = (yaml.safe_load(f.read_text()) or {}).get("hydra", {}).get("runtime", {}).get("choices", {})
    return choices.get(group)


def model_label(run_dir: Path, config: dict) -> str:
    """The model's config name (``model=<name>``) when Hydra recorded it, else its path's last component."""
    choice = _hydra_choice(run_dir, "model")
    if choice:
        return choice
    return Path(str(config.get("model", {}).get("name_or_path", "?"))).name


def read_run(run_dir: str | Path) -> tuple[dict, list[dict], list[dict]]:
    """One run folder as (run row, score rows, curve rows); absent files give missing values, never zeros."""
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    results = _read_json(run_dir / "results.json") or {}
    method = config.get("method", {})
    trainer = config.get("trainer", {})
    dataset = config.get("dataset", {})
    evaluate = config.get("evaluate") or {}
    held_out = results.get("eval") or {}
    git = (_read_json(run_dir / "env.json") or {}).get("git") or {}
    run = {
        "run_dir": str(run_dir),
        "run": run_dir.name,
        "model": model_label(run_dir, config),
        "model_path": config.get("model", {}).get("name_or_path"),
        "method": method.get("name"),
        "beta": method.get("beta"),
        "learning_rate": trainer.get("learning_rate"),
        "max_steps": trainer.get("max_steps"),
        "num_epochs": trainer.get("num_epochs"),
        "batch_per_device": trainer.get("per_device_train_batch_size"),
        "grad_accum": trainer.get("gradient_accumulation_steps"),
        "world_size": results.get("world_size"),
        "dataset": dataset.get("path"),
        "seed": config.get("seed"),
        "preset": evaluate.get("benchmarks"),
        "status": results.get("status", "no results.json"),
        "steps": results.get("steps"),
        "wall_seconds": results.get("wall_seconds"),
        "config_digest": results.get("config_digest"),
        "git": (git.get("commit") or "?")[:10] + ("+dirty" if git.get("dirty") else ""),
        **{f"eval/{k}": held_out.get(k, math.nan) for k in HELD_OUT_KEYS},
    }
    scores = []
    for summary_file in sorted(run_dir.glob("eval/*/summary.json")):
        summary = _read_json(summary_file) or {}
        for bench, score in (summary.get("scores") or {}).items():
            record = _read_json(summary_file.parent / f"{bench}.json") or {}
            scores.append(
                {
                    "run_dir": str(run_dir),
                    "preset": summary.get("preset", summary_file.parent.name),
                    "benchmark": bench,
                    "score": math.nan if score is None else float(score),
                    "average": math.nan if summary.get("average") is None else float(summary["average"]),
                    "summary": str(summary_file),
                    "n": _items(record),
                    **{f"sub/{k}": v for k, v in sub_scores(record).items()},
                }
            )
    curves = []
    metrics_file = run_dir / "metrics.jsonl"
    if metrics_file.exists():
        for line in metrics_file.read_text().splitlines():
            if line.strip():
                curves.append({"run_dir": str(run_dir), **json.loads(line)})
    return run, scores, curves


def _items(record: dict) -> float:
    """How many items the benchmark scored (lm-eval's n-samples, summed over a group's members)."""
    n = [v.get("effective") for v in (record.get("n_samples") or {}).values() if isinstance(v, dict)]
    return float(sum(n)) if n and all(isinstance(x, int) for x in n) else math.nan


def sub_scores(record: dict) -> dict[str, float]:
    """Per-part scores a task reports beside its primary one (the miniature's ``exact_match_<family>``)."""
    primary = record.get("primary") or {}
    metrics = (record.get("metrics") or {}).get(primary.get("task"), {})
    head = f"{primary.get('metric')}_"
    tail = f",{primary.get('filter')}"
    return {
        k[len(head) : -len(tail)]: float(v)
        for k, v in metrics.items()
        if k.startswith(head) and k.endswith(tail) and "_stderr" not in k and isinstance(v, (int, float))
    }


def collect(root: str | Path) -> Sweep:
    """Every run under ``root`` as three frames (empty frames with the key columns when nothing is there)."""
    root = Path(shown_path(root))  # the run_dir and summary paths of every table: relative to the cwd
    runs, scores, curves = [], [], []
    for d in find_run_dirs(root):
        r, s, c = read_run(d)
        runs.append(r)
        scores.extend(s)
        curves.extend(c)
    runs_df = pd.DataFrame(runs, columns=None if runs else ["run_dir", "run", "model", "method", "status"])
    score_cols = ["run_dir", "preset", "benchmark", "score", "average", "summary", "n"]
    extra = sorted({k for row in scores for k in row if k.startswith("sub/")})
    scores_df = pd.DataFrame(scores, columns=score_cols + extra)
    curves_df = pd.DataFrame(curves) if curves else pd.DataFrame(columns=["run_dir", "step", "split"])
    return Sweep(Path(root), runs_df, scores_df, curves_df)
