"""The training loop's bookkeeping (align/progress.py): the metrics window saved per rank and restored."""

from __future__ import annotations

import torch

from align import progress
from align.progress import Window, every


def test_every_is_due_on_multiples_and_never_for_zero():
    assert [s for s in range(1, 7) if every(s, 2)] == [2, 4, 6]
    assert not any(every(s, 0) for s in range(1, 7))


def test_a_restored_window_reads_as_the_saved_one():
    cpu = torch.device("cpu")
    window = Window(cpu)
    window.add({"loss": torch.tensor(1.0), "acc": torch.tensor(0.5)}, 2, torch.tensor(30))
    window.add({"loss": torch.tensor(4.0), "acc": torch.tensor(1.0)}, 1, torch.tensor(12))
    window.grad_norms += [1.0, 3.0]
    restored = Window(cpu, window.state(seconds=2.0))
    stats, tokens, seconds, grad_norm = restored.read()
    assert stats == window.read()[0] == {"loss": 2.0, "acc": 2 / 3}
    assert tokens == 42 and grad_norm == 2.0 and 2.0 <= seconds < 60


def test_time_inside_a_pause_does_not_count(monkeypatch):
    clock = iter([100.0, 103.0, 110.0, 111.0])  # start, pause, resume, read
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    window = Window(torch.device("cpu"))
    with window.clock_paused() as before:
        assert before == 3.0
    assert window.seconds() == 4.0  # 3 s before the pause, 1 s after it
    monkeypatch.undo()
    window.reset()
    assert window.tokens == 0 and window.grad_norms == [] and window.stats.total is None
