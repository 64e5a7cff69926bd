"""The metrics log of a training run (atomic JSON files and the environment record: ``common/records.py``).

Run folder layout (analysis/ reads only these files):
  config.yaml        the resolved config          env.json       package versions, git revision, hardware
  metrics.jsonl      one row per logging step (split "train") and per evaluation (split "eval")
  results.json       status, final train and eval metrics, timing, data statistics, checkpoint paths
  tb/                TensorBoard events           checkpoints/   step-NNNNNN/ folders, final/ the final model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.records import write_text_atomic


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
