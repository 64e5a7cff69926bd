"""bench/step_bench.py: our training step matches a naive one (losses, gradients), and the benchmark runs.

The parity check is the "correctness first" evidence behind the speed numbers in docs/benchmarks.md: the
trainer's path (one forward over chosen + rejected, chunked lm_head over response tokens, precomputed
reference) against full logits, log_softmax and separate chosen/rejected forwards, in fp32 on the same batches.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest

# The tiny bench model with short sequences and one torch thread (on the shared 2-core machine, two threads were
# ~4x slower for a model this small): the whole file runs in seconds.
SMALL = ["--size", "tiny", "--pairs", "2", "--prompt-len", "12", "--response-len", "20", "--threads", "1"]


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
    (rec,) = step_bench.main(
        [*SMALL, "--steps", "2", "--warmup", "1", "--variants", "ours", "--no-isolate", "--out", str(out)]
    )
    assert "error" not in rec
    assert rec["steps"] == 2 and rec["tokens_per_s"] > 0 and rec["step_ms"] > 0
    assert rec["ref_precompute_s"] > 0 and rec["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert rec["mfu"] is None  # no peak FLOP/s is known for a CPU
    assert json.loads(out.read_text().splitlines()[-1])["variant"] == "ours"


def test_bench_smoke_trl_fast(step_bench, tmp_path):
    pytest.importorskip("trl")
    (rec,) = step_bench.main(
        [
            *SMALL,
            "--steps",
            "2",
            "--warmup",
            "1",
            "--variants",
            "trl_fast",
            "--no-isolate",
            "--out",
            str(tmp_path / "bench.jsonl"),
        ]
    )
    assert "error" not in rec  # includes the check that TRL tokenized the pairs to our exact ids
    assert rec["precompute_ref"] and not rec["gradient_checkpointing"] and rec["tokens_per_s"] > 0
