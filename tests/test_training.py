"""The training loop on the test-size tiny model: every method, invariants, resume, DeepSpeed, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import align.trainer as trainer_mod
from align.losses import LOSSES, LossOutput, Method
from align.run import run


def losses(out: Path, split: str = "train") -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == split]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_method_trains(tiny_cfg, tiny_model_dir, tmp_path, name):
    out = tmp_path / name
    result = run(tiny_cfg(f"method={name}", out=out))
    assert result["status"] == "completed" and result["steps"] == 4
    train_losses = losses(out)
    assert len(train_losses) == 4 and all(map(lambda x: x == x and abs(x) < 1e6, train_losses))
    before, after = weights(tiny_model_dir), weights(out / "final")
    assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter changed"
    ckpt = out / "checkpoints" / "step-000002"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "optimizer.pt").exists()
    assert (out / "config.yaml").exists() and json.loads((out / "env.json").read_text())["packages"]["torch"]
    for key in (
        "rewards/chosen",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/chosen_mean",
        "mi/dv",
        "mi/js",
        "grad_norm",
        "lr",
        "tokens_per_s",
    ):
        assert key in result["train"], key
    assert "loss" in result["eval"]


def test_first_step_loss_is_ln4_for_mio_and_ln2_for_dpo(tiny_cfg, tmp_path):
    """At step 1 the policy is the reference (TRL's invariant test checks ln 2 for DPO)."""
    for name, expected in (("mio", 1.3862944), ("dpo", 0.6931472)):
        out = tmp_path / name
        run(tiny_cfg(f"method={name}", "trainer.max_steps=1", "trainer.save_steps=0", out=out))
        assert losses(out)[0] == pytest.approx(expected, abs=1e-6)


def test_same_seed_gives_the_same_losses(tiny_cfg, tmp_path):
    a = losses(Path(run(tiny_cfg(out=tmp_path / "a"))["final_model"]).parent)
    b = losses(Path(run(tiny_cfg(out=tmp_path / "b"))["final_model"]).parent)
    assert a == pytest.approx(b, abs=1e-6)
    c = losses(Path(run(tiny_cfg("seed=7", out=tmp_path / "c"))["final_model"]).parent)
    assert c != pytest.approx(a, abs=1e-6)


def test_accumulation_matches_a_larger_batch(tiny_cfg, tmp_path):
    """Batch 1 x accumulation 4 and batch 4 x accumulation 1 take the same optimizer steps."""
    common = ("trainer.max_steps=3", "trainer.save_steps=0")
    run(
        tiny_cfg(
            *common,
            "trainer.per_device_train_batch_size=1",
            "trainer.gradient_accumulation_steps=4",
            out=tmp_path / "acc",
        )
    )
    run(
        tiny_cfg(
            *common,
            "trainer.per_device_train_batch_size=4",
            "trainer.gradient_accumulation_steps=1",
            out=tmp_path / "big",
        )
    )
    assert losses(tmp_path / "acc") == pytest.approx(losses(tmp_path / "big"), abs=1e-5)
    wa, wb = weights(tmp_path / "acc" / "final"), weights(tmp_path / "big" / "final")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)


def test_killed_run_resumes_on_the_same_curve(tiny_cfg, tmp_path, monkeypatch):
    steps = ("trainer.max_steps=6", "trainer.save_steps=2", "trainer.eval_steps=3")
    run(tiny_cfg(*steps, out=tmp_path / "whole"))

    calls = {"n": 0}
    real = trainer_mod.Trainer._policy_forward

    def dies_in_step_5(self, batch):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt("simulated kill")
        return real(self, batch)

    monkeypatch.setattr(trainer_mod.Trainer, "_policy_forward", dies_in_step_5)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_cfg(*steps, out=out))
    assert json.loads((out / "results.json").read_text())["status"] == "failed"
    assert [p.name for p in sorted((out / "checkpoints").glob("step-*"))] == ["step-000002", "step-000004"]
    monkeypatch.setattr(trainer_mod.Trainer, "_policy_forward", real)
    run(tiny_cfg(*steps, "resume=true", out=out))
    assert losses(out) == pytest.approx(losses(tmp_path / "whole"), abs=1e-6)
    assert losses(out, "eval") == pytest.approx(losses(tmp_path / "whole", "eval"), abs=1e-6)
    steps_logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == sorted(steps_logged), "rows after the checkpoint must not be logged twice"


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    calls = {"n": 0}

    def nan_at_call_4(pc, pr, rc, rr, *, beta=0.1, chosen_negative_weight=0.5, negative_weight=1.0):
        calls["n"] += 1
        out = LOSSES["dpo"].fn(pc, pr, rc, rr, beta=beta)
        bad = out.losses * float("nan") if calls["n"] == 4 else out.losses
        return LossOutput(bad, out.chosen_rewards, out.rejected_rewards)

    monkeypatch.setitem(LOSSES, "mio", Method(nan_at_call_4, needs_reference=True))
    out = tmp_path / "nan"
    with pytest.raises(
        trainer_mod.NonFiniteLossError, match=r"loss is nan at step 4 .*Last good checkpoint: .*step-000002"
    ):
        run(
            tiny_cfg(
                "trainer.eval_steps=0", "dataset.max_eval_samples=null", "dataset.test_split=null", out=out
            )
        )
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed" and "NonFiniteLossError" in results["error"]
    ckpt = out / "checkpoints" / "step-000002"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    assert all(torch.isfinite(v).all() for v in weights(ckpt).values())
    assert len(losses(out)) == 3


def test_reference_cache_is_computed_once_and_shared(tiny_cfg, tmp_path, monkeypatch):
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    run(tiny_cfg("method=mio", cache, out=tmp_path / "mio"))
    assert len(list((tmp_path / "cache" / "reference_logps").glob("*.pt"))) == 2  # train and eval

    def must_not_compute(*a, **k):
        raise AssertionError("the reference cache was not reused")

    monkeypatch.setattr(trainer_mod, "compute_table", must_not_compute)
    run(tiny_cfg("method=dpo", "method.beta=0.3", cache, out=tmp_path / "dpo"))


def test_reference_model_mode_matches_precomputed(tiny_cfg, tmp_path):
    run(tiny_cfg("trainer.reference=precompute", out=tmp_path / "pre"))
    run(tiny_cfg("trainer.reference=model", out=tmp_path / "model"))
    assert losses(tmp_path / "pre") == pytest.approx(losses(tmp_path / "model"), abs=1e-6)


def test_completed_run_is_skipped_and_a_different_config_refused(tiny_cfg, tmp_path):
    out = tmp_path / "done"
    first = run(tiny_cfg(out=out))
    mtime = (out / "metrics.jsonl").stat().st_mtime_ns
    assert run(tiny_cfg(out=out)) == first
    assert (out / "metrics.jsonl").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match=r"different config \(method.beta differ"):
        run(tiny_cfg("method.beta=0.5", out=out))
    # A run finished before the schema grew a key (here: trainer.group_by_length) still counts as the same run.
    import yaml

    old = yaml.safe_load((out / "config.yaml").read_text())
    del old["trainer"]["group_by_length"]
    (out / "config.yaml").write_text(yaml.safe_dump(old))
    results = json.loads((out / "results.json").read_text())
    (out / "results.json").write_text(json.dumps(results | {"config_digest": "from-an-older-schema"}))
    assert run(tiny_cfg(out=out))["config_digest"] == "from-an-older-schema"
    assert (out / "metrics.jsonl").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_matches_plain_torch(tiny_cfg, tmp_path, stage):
    """ZeRO-2 and ZeRO-3 (one CPU rank, fp32, torch AdamW) take the same steps as plain PyTorch."""
    from transformers import AutoModelForCausalLM

    common = ("trainer.max_steps=3", "trainer.save_steps=2", "trainer.precision=fp32")
    run(tiny_cfg(*common, out=tmp_path / "torch"))
    run(tiny_cfg(*common, f"deepspeed=zero{stage}", "deepspeed.overlap_comm=false", out=tmp_path / "ds"))
    assert losses(tmp_path / "ds") == pytest.approx(losses(tmp_path / "torch"), abs=1e-5)
    assert (tmp_path / "ds" / "checkpoints" / "step-000002" / "deepspeed").is_dir()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ds" / "final")  # the consolidated folder reloads
    ref = weights(tmp_path / "torch" / "final")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-4, atol=1e-5)


def test_evaluation_after_training_is_recorded_and_cached(tiny_cfg, tmp_path):
    """evaluate.benchmarks runs eval/ on final/ and records its summary; a rerun computes nothing new.
    The folder name holds "=" and ",", as sweep folders named after their overrides may."""
    out = tmp_path / "0_method=mio,seed=1"
    overrides = (
        "evaluate.benchmarks=mio8_mini",
        "evaluate.overrides=['unsafe_code=true','backend.cpu_threads=1','backend.batch_size=8','bootstrap_iters=0',"
        "'~benchmarks.suite.miniature']",
    )
    result = run(tiny_cfg(*overrides, out=out))
    scores = result["evaluation"]["scores"]
    assert len(scores) == 8 and all(0.0 <= s <= 1.0 for s in scores.values())
    assert result["evaluation"]["average"] == pytest.approx(sum(scores.values()) / 8)
    summary = out / "eval" / "mio8_mini" / "summary.json"
    stamp = summary.stat().st_mtime_ns
    recorded = json.loads((out / "results.json").read_text())["evaluation"]
    assert recorded["preset"] == "mio8_mini" and recorded["summary"] == str(summary)
    results_stamp = (out / "results.json").stat().st_mtime_ns
    again = run(tiny_cfg(*overrides, out=out))
    assert again["evaluation"]["scores"] == scores and summary.stat().st_mtime_ns == stamp
    assert (out / "results.json").stat().st_mtime_ns == results_stamp


def test_group_by_length_keeps_every_row_and_cuts_padding(tiny_cfg, tmp_path):
    from align.steps import BatchOrder

    lengths = [int(x) for x in torch.randint(5, 200, (1000,), generator=torch.Generator().manual_seed(0))]
    plain, grouped = BatchOrder(1000, 8, seed=3), BatchOrder(1000, 8, seed=3, lengths=lengths)
    for order in (plain, grouped):
        rows = [p for i in range(order.per_epoch) for p in order.positions(i)]
        assert len(set(rows)) == len(rows) == order.per_epoch * 8  # each row at most once per epoch

    def padded(order):
        return sum(8 * max(lengths[p] for p in order.positions(i)) for i in range(order.per_epoch))

    assert padded(grouped) < 0.8 * padded(plain)
    assert grouped.positions(5) == BatchOrder(1000, 8, seed=3, lengths=lengths).positions(5)  # resumable
    assert grouped.positions(5) != grouped.positions(125 + 5)  # a new epoch, a new order
    result = run(tiny_cfg("trainer.group_by_length=true", out=tmp_path / "g"))
    assert result["status"] == "completed" and result["reference_seconds"] >= 0


def test_sigterm_saves_a_checkpoint_and_resume_continues_the_curve(tiny_cfg, tiny_model_dir, tmp_path):
    """scancel / preemption: SIGTERM finishes the step, saves, stops; resume=true continues the same curve."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import QUICK_RUN, REPO, TINY_MODEL

    steps = ("trainer.max_steps=200", "trainer.save_steps=0", "trainer.eval_steps=0", "trainer.cpu_threads=1")
    out = tmp_path / "term"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "align" / "run.py"), f"model.name_or_path={tiny_model_dir}", *TINY_MODEL,
         *QUICK_RUN, *steps, f"hydra.run.dir={out}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode != 0, "the run must not look like a success"
    result = json.loads((out / "results.json").read_text())
    assert result["status"] == "interrupted" and "resume=true" in result["error"], err[-2000:]
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1
    stopped_at = int(ckpts[0].name.split("-")[1])
    assert 5 <= stopped_at < 200
    run(tiny_cfg(*steps, "resume=true", "trainer.tensorboard=true", out=out))
    run(tiny_cfg(*steps, out=tmp_path / "whole"))
    assert losses(out) == pytest.approx(losses(tmp_path / "whole"), abs=1e-6)


def test_shared_prompt_layout_takes_the_same_steps(tiny_cfg, tmp_path):
    """model.share_prompt runs each prompt once (one row per pair, 4D mask): the same training, up to rounding."""
    run(tiny_cfg("trainer.max_steps=3", out=tmp_path / "two_rows"))
    shared = run(tiny_cfg("trainer.max_steps=3", "model.share_prompt=true", out=tmp_path / "one_row"))
    assert losses(tmp_path / "one_row") == pytest.approx(losses(tmp_path / "two_rows"), abs=1e-5)
    assert losses(tmp_path / "one_row", "eval") == pytest.approx(
        losses(tmp_path / "two_rows", "eval"), abs=1e-5
    )
    assert shared["tokens"] == json.loads((tmp_path / "two_rows" / "results.json").read_text())["tokens"]


def test_missing_model_is_a_clear_error(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model.name_or_path=/no/such/model: no such folder"):
        run(tiny_cfg("model.name_or_path=/no/such/model", "model.build=null", out=tmp_path / "m"))
    assert json.loads((tmp_path / "m" / "results.json").read_text())["status"] == "failed"
