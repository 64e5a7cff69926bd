"""The training loop's bookkeeping: the metrics window, where rows go, the loop's state and the stop signal.

``align/trainer.py`` runs the loop; these small objects keep it a short sequence of actions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from pathlib import Path

import torch

from align import distributed as dist
from align.records import MetricsLog
from align.steps import Averager


def every(step: int, period: int) -> bool:
    """A periodic action is due (``period`` 0: never)."""
    return period > 0 and step % period == 0


class StopSignal:
    """SIGTERM (scancel, SLURM preemption, a launcher stopping its ranks) asks the loop to finish its step, save a
    checkpoint and stop, instead of losing everything since the last periodic checkpoint. Ranks agree on it."""

    def __init__(self):
        self.flag = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.flag = True

    def requested(self, device: torch.device) -> bool:
        if dist.world_size() == 1:
            return self.flag
        return bool(dist.all_reduce_sum(torch.tensor([float(self.flag)], device=device)).item() > 0)

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class Window:
    """The metrics window since the last logged row: pair-weighted statistics, tokens (kept on the device until
    read, so no step waits for the host), gradient norms and training seconds. Saved per rank in a checkpoint
    (``state``), so that a run resumed between two logging steps logs the same next row and token count."""

    def __init__(self, device: torch.device, saved: dict | None = None):
        saved = saved or {}
        self.device = device
        self.stats = Averager()
        if saved.get("total") is not None:
            self.stats.keys, self.stats.total = list(saved["keys"]), saved["total"].to(device)
        self.tokens = saved.get("tokens", 0)
        self.grad_norms: list[float] = list(saved.get("grad_norms", []))
        self.start = time.perf_counter() - saved.get("seconds", 0.0)

    def add(self, stats: dict, pairs: int, tokens) -> None:
        self.stats.add(stats, pairs)
        self.tokens = self.tokens + tokens  # stays on the device

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def read(self) -> tuple[dict[str, float], int, float, float]:
        """(mean statistics, tokens over all ranks, seconds, mean gradient norm) of the window."""
        tokens = int(dist.all_reduce_sum(torch.as_tensor(self.tokens, device=self.device)))
        grad_norm = sum(self.grad_norms) / max(len(self.grad_norms), 1)
        return self.stats.read(), tokens, self.seconds(), grad_norm

    def reset(self) -> None:
        self.stats, self.tokens, self.grad_norms = Averager(), 0, []
        self.restart_clock()

    def restart_clock(self) -> None:
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def clock_paused(self):
        """Time spent inside does not count (yields the window's seconds so far)."""
        seconds = self.seconds()
        try:
            yield seconds
        finally:
            self.start = time.perf_counter() - seconds

    def state(self, seconds: float) -> dict:
        """This rank's window as tensors and plain data (loadable with weights_only)."""
        total = self.stats.total
        return {
            "keys": self.stats.keys,
            "total": None if total is None else total.detach().cpu(),
            "tokens": int(self.tokens),
            "grad_norms": [float(g) for g in self.grad_norms],
            "seconds": seconds,
        }


class Reporter:
    """Where the loop's rows go, on the main rank only: metrics.jsonl (and TensorBoard) and the progress bar."""

    def __init__(self, out: Path, cfg, total_steps: int, step: int, resumed: bool):
        tr, main = cfg.trainer, dist.is_main()
        self.metrics = (
            MetricsLog(out, tr.tensorboard and main, resume_after_step=step if resumed else None)
            if main
            else None
        )
        self.wandb = wandb_run(out, cfg, resumed) if tr.wandb_project and main else None
        self.bar = None
        if tr.progress_bar and main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=step, desc=f"{cfg.method.name}", dynamic_ncols=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def log(self, step: int, split: str, row: dict[str, float]) -> None:
        if self.metrics is not None:
            self.metrics.log(step, split, row)
        if self.wandb is not None:
            self.wandb.log({f"{split}/{k}": v for k, v in row.items()}, step=step)
        if self.bar is not None and split == "train":
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['rewards/accuracies']:.2f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.wandb is not None:
            self.wandb.finish()


def wandb_run(out: Path, cfg, resumed: bool):
    """A Weights & Biases run beside metrics.jsonl (``trainer.wandb_project``): the same rows, keyed
    ``<split>/<metric>`` at the optimizer step, the resolved config attached. Its id is derived from the run folder,
    so a resumed run continues the same W&B run."""
    import hashlib

    try:
        import wandb
    except ImportError as e:
        raise ImportError("trainer.wandb_project is set but wandb is not installed: pip install wandb") from e
    from omegaconf import OmegaConf

    return wandb.init(
        project=cfg.trainer.wandb_project,
        name=out.name,
        id=hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:16],
        resume="allow" if resumed else None,
        dir=str(out),
        config=OmegaConf.to_container(cfg, resolve=True),
    )


@dataclasses.dataclass
class Progress:
    """The loop's state: ``state`` is what a checkpoint stores (step, micro-batch index, tokens, seconds)."""

    state: dict
    window: Window
    report: Reporter
    stop: StopSignal
    ckpt_root: Path
    reference_seconds: float
    last_train: dict[str, float] = dataclasses.field(default_factory=dict)
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def step(self) -> int:
        return self.state["step"]
