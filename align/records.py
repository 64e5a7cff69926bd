"""What a run writes besides checkpoints: atomic JSON files, the environment record, the metrics log.

Run folder layout (analysis/ reads only these files):
  config.yaml        the resolved config          env.json       package versions, git revision, hardware
  metrics.jsonl      one row per logging step (split "train") and per evaluation (split "eval")
  results.json       status, final train and eval metrics, timing, data statistics, checkpoint paths
  tb/                TensorBoard events           checkpoints/   step-NNNNNN/ folders, final/ the final model
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "deepspeed",
    "accelerate",
    "peft",
    "hydra-core",
    "omegaconf",
    "lm_eval",
    "numpy",
)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same folder and ``os.replace``: readers never see half a file, and a
    killed writer leaves the previous version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def git_revision(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(repo: Path) -> dict[str, Any]:
    """Package versions, git revision, Python, OS and accelerator: enough to say what produced a number."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpu = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_revision(repo),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "cuda": torch.version.cuda,
        "gpus": gpu,
        "cpu_threads": torch.get_num_threads(),
        "argv": sys.argv,
    }


def read_metrics(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl``. A run killed while writing leaves a partial last line: it is dropped (the
    resumed run logs that row again). A bad line before the last is an error naming the file and line."""
    lines = Path(path).read_text(errors="replace").split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not a metrics row with an integer 'step'")
        except ValueError as e:
            if number == len(lines):  # no newline after it: the write was cut short
                break
            raise ValueError(f"{path}: line {number}: not a metrics row ({e})") from e
        rows.append(row)
    return rows


class MetricsLog:
    """Appends metric rows to ``metrics.jsonl`` (flushed per row) and, optionally, TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool, resume_after_step: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_after_step is not None and self.path.exists():
            # Rows logged after the checkpoint we resume from would be logged again: drop them.
            keep = [row for row in read_metrics(self.path) if row["step"] <= resume_after_step]
            write_text_atomic(self.path, "".join(json.dumps(row) + "\n" for row in keep))
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a")  # noqa: SIM115 - open for the run's lifetime
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_after_step)

    def log(self, step: int, split: str, metrics: dict[str, float], **extra: Any) -> None:
        row = {"step": step, "split": split, **extra, **metrics}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
