"""Copy a sweep's small result files into a folder that can be committed, and rebuild its report there.

    python -m analysis.snapshot outputs/table1/tiny docs/results/table1_tiny --scale tiny

What analysis reads, per run folder: config.yaml, results.json, metrics.jsonl, env.json, .hydra/{hydra,overrides}.yaml
and every evaluation record (eval/<preset>/<benchmark>.json and summary.json); for the sweep: runs/multirun.yaml and
reproduce_log.jsonl. Not copied: weights (final/, checkpoints/), TensorBoard files, per-item samples, lm-eval's own
files, request caches, the generated task YAMLs. The destination is replaced, so a snapshot never mixes two sweeps;
``outputs/`` stays the working area (a fresh clone's ``make reproduce-table1`` recomputes there, not over this).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from analysis.collect import find_run_dirs
from analysis.report import SCALES, build

RUN_FILES = (
    "config.yaml",
    "results.json",
    "metrics.jsonl",
    "env.json",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
)
SWEEP_FILES = ("runs/multirun.yaml", "reproduce_log.jsonl")


def snapshot_files(src: Path) -> list[Path]:
    """The files under ``src`` (a reproduce-table1 output folder) that a snapshot keeps, relative to ``src``."""
    files = [Path(f) for f in SWEEP_FILES if (src / f).is_file()]
    for run in find_run_dirs(src / "runs"):
        rel = run.relative_to(src)
        files += [rel / f for f in RUN_FILES if (run / f).is_file()]
        files += [p.relative_to(src) for p in sorted(run.glob("eval/*/*.json"))]
    return files


def snapshot(src: Path, dest: Path, scale: str) -> Path:
    """Copy ``snapshot_files(src)`` into a fresh ``dest`` and build the report there; returns report.md's path."""
    if dest.resolve() == src.resolve() or src.resolve().is_relative_to(dest.resolve()):
        raise ValueError(f"snapshot destination {dest} holds the sweep {src}: choose another folder")
    files = snapshot_files(src)
    if not any(f.name == "results.json" for f in files):
        raise FileNotFoundError(f"{src / 'runs'}: no run folders with results.json to snapshot")
    if dest.exists():
        shutil.rmtree(dest)
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / f, dest / f)
    return build(dest / "runs", dest, scale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="a reproduce-table1 output folder (holds runs/)")
    parser.add_argument("dest", type=Path, help="the snapshot folder (replaced)")
    parser.add_argument("--scale", choices=SCALES, default="tiny")
    args = parser.parse_args(argv)
    print(f"report: {snapshot(args.src, args.dest, args.scale)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
