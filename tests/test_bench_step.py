"""bench/step_bench.py: the trainer's step matches a naive one (losses, gradients), and the benchmark runs.

The parity check is the "correctness first" evidence behind the speed numbers in docs/benchmarks.md: the trainer
itself (``align.trainer.Trainer.train``: one forward over chosen + rejected, chunked lm_head over response tokens,
precomputed reference) against full logits, log_softmax and separate chosen/rejected forwards, in fp32 on the same
batches. What the bench times as ``ours`` is the trainer's own optimizer step, and its MFU uses the trainer's
peak FLOP/s table: nothing of the step is copied into the bench.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from types import SimpleNamespace

import pytest

# The tiny bench model with short sequences and one torch thread (on the shared 2-core machine, two threads were
# ~4x slower for a model this small): the whole file runs in seconds.
SMALL = ["--size", "tiny", "--pairs", "2", "--prompt-len", "12", "--response-len", "20", "--threads", "1"]


def _smoke(step_bench, variant: str, out) -> dict:
    """Two timed steps after one warm-up step of ``variant``, in this process."""
    argv = [*SMALL, "--steps", "2", "--warmup", "1", "--variants", variant, "--no-isolate", "--out", str(out)]
    (rec,) = step_bench.main(argv)
    return rec


@pytest.fixture(scope="module")
def step_bench(repo_root):
    spec = importlib.util.spec_from_file_location("step_bench", repo_root / "bench" / "step_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fast_path_matches_naive_losses_and_gradients(step_bench):
    (result,) = step_bench.main([*SMALL, "--check"])
    first, second = result["step1"], result["step2"]
    # step 0: policy = reference, so DPO is ln 2 on both paths
    assert first["loss_ours"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["loss_naive"] == pytest.approx(math.log(2), abs=1e-6)
    # after one clipped AdamW step (lr 1e-3) the loss has moved, and both paths still agree
    assert abs(second["loss_ours"] - math.log(2)) > 1e-4
    for step in (first, second):
        assert step["loss_abs_diff"] < 1e-5
        assert step["policy_logps_max_abs_diff"] <= 1e-6 * step["policy_logps_max_abs"]
        assert step["grad_max_abs"] > 1e-3  # gradients are not trivially zero
        assert step["grad_max_abs_diff"] <= 1e-4 * step["grad_max_abs"]
    assert result["ref_logps_max_abs_diff"] <= 1e-6 * first["policy_logps_max_abs"]
    # Adam divides by sqrt(v): parameters whose gradients are ~1e-8 can move by up to lr on rounding alone
    assert result["params_max_abs_diff_after_2_steps"] < 1e-3 * 0.5


def test_bench_smoke_ours(step_bench, tmp_path):
    out = tmp_path / "bench.jsonl"
    rec = _smoke(step_bench, "ours", out)
    assert "error" not in rec
    assert rec["steps"] == 2 and rec["tokens_per_s"] > 0 and rec["step_ms"] > 0
    assert rec["ref_precompute_s"] > 0 and rec["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert rec["mfu"] is None  # no peak FLOP/s is known for a CPU
    assert json.loads(out.read_text().splitlines()[-1])["variant"] == "ours"


def test_bench_smoke_trl_fast(step_bench, tmp_path):
    pytest.importorskip("trl")
    rec = _smoke(step_bench, "trl_fast", tmp_path / "bench.jsonl")
    assert "error" not in rec  # includes the check that TRL tokenized the pairs to our exact ids
    assert rec["precompute_ref"] and not rec["gradient_checkpointing"] and rec["tokens_per_s"] > 0


def test_ours_times_the_trainers_own_step_in_its_own_loop(step_bench, tmp_path, monkeypatch):
    """The bench copied the trainer's step once and drifted from it (an extra host sync); now ``ours`` runs
    ``Trainer.train``, whose loop computes every step's loss (``align.trainer.preference_loss``)."""
    import align.trainer

    trains, losses = [], []
    real_train, real_loss = align.trainer.Trainer.train, align.trainer.preference_loss
    monkeypatch.setattr(align.trainer.Trainer, "train", lambda self: trains.append(1) or real_train(self))
    monkeypatch.setattr(align.trainer, "preference_loss", lambda *a: losses.append(1) or real_loss(*a))
    rec = _smoke(step_bench, "ours", tmp_path / "b")
    assert trains == [1] and len(losses) == 3  # one warm-up and two timed steps, no evaluation
    assert rec["steps"] == 2 and rec["warmup"] == 1


def test_the_peak_flops_come_from_the_trainers_one_table(step_bench, monkeypatch):
    """One table of peak FLOP/s (align.trainer.PEAK_BF16_FLOPS, the vendors' figures): the bench had its own, with
    790e12 for the H200 beside the trainer's 989e12."""
    import align.trainer

    assert not hasattr(step_bench, "PEAK_FLOPS")
    monkeypatch.setattr(align.trainer, "peak_flops", lambda device: 123e12)
    assert step_bench.peak_flops(SimpleNamespace(peak_tflops=None)) == (123e12, step_bench.PEAK_SOURCE)
    assert step_bench.peak_flops(SimpleNamespace(peak_tflops=790)) == (790e12, "--peak-tflops")
    assert align.trainer.PEAK_BF16_FLOPS["H200"] == 989e12
