"""Scale paths on the CPU: ranks started by torchrun from the Hydra job, submitit sweeps, LoRA, checkpointing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import QUICK_RUN, REPO, TINY_MODEL
from test_training import losses, weights

from align.run import run


@pytest.mark.parametrize("deepspeed", ["none", "zero3"])
def test_two_ranks_match_one_rank_with_twice_the_batch(tiny_cfg, tmp_path, deepspeed):
    """2 gloo ranks x 1 pair x 2 accumulation steps, started through the GPU launch path (torchrun -> align.worker),
    take the same steps as 1 rank x 4 pairs: the same losses, evaluation and (ZeRO-3: consolidated) final weights."""
    common = ("trainer.precision=fp32", f"deepspeed={deepspeed}", "deepspeed.overlap_comm=false")
    run(tiny_cfg(*common, "trainer.per_device_train_batch_size=4", out=tmp_path / "one"))
    # 2 ranks x 1 pair x 2 accumulation steps (DDP skips the all-reduce on the first) = 4 pairs per step.
    two = run(tiny_cfg(*common, "trainer.per_device_train_batch_size=1", "trainer.gradient_accumulation_steps=2",
                       "distributed=torchrun", "distributed.nproc_per_node=2", out=tmp_path / "two"))  # fmt: skip
    assert two["status"] == "completed" and two["world_size"] == 2
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=1e-5)
    assert losses(tmp_path / "two", "eval") == pytest.approx(losses(tmp_path / "one", "eval"), abs=1e-5)
    w1, w2 = weights(tmp_path / "one" / "final"), weights(tmp_path / "two" / "final")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 5, "rank 0 alone writes the metrics"


def test_submitit_local_runs_a_two_job_sweep(tiny_model_dir, tmp_path):
    sweep = tmp_path / "sweep"
    p = subprocess.run(
        [sys.executable, str(REPO / "align" / "run.py"), "-m", "hydra/launcher=local", "method=mio,dpo",
         f"model.name_or_path={tiny_model_dir}", *TINY_MODEL, *QUICK_RUN, f"hydra.sweep.dir={sweep}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir() and d.name[0].isdigit())
    assert [json.loads((d / "results.json").read_text())["method"] for d in jobs] == ["mio", "dpo"]
    assert (sweep / ".submitit").is_dir()


def test_lora_trains_adapters_and_saves_a_merged_folder(tiny_cfg, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    result = run(tiny_cfg("model.lora.enabled=true", "model.lora.r=4", "trainer.learning_rate=1e-2", out=out))
    assert losses(out)[0] == pytest.approx(
        1.3862944, abs=1e-6
    )  # zero-initialised adapters: policy = reference
    assert result["status"] == "completed"
    assert (out / "final" / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    base = weights(tiny_model_dir)
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all("proj" in k for k in changed), "only the adapted projections differ from the base"


def test_gradient_checkpointing_takes_the_same_steps(tiny_cfg, tmp_path):
    run(tiny_cfg("trainer.max_steps=2", out=tmp_path / "plain"))
    run(tiny_cfg("trainer.max_steps=2", "model.gradient_checkpointing=true", out=tmp_path / "ckpt"))
    assert losses(tmp_path / "ckpt") == pytest.approx(losses(tmp_path / "plain"), abs=1e-6)


def test_launch_commands_resolve_the_slurm_topology(monkeypatch, tmp_path):
    """Under SLURM each node's job starts its own ranks: node rank and rendezvous come from the allocation."""
    from omegaconf import OmegaConf

    from align import launch
    from align.config import DistributedConfig

    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setattr(launch, "_slurm_hosts", lambda: ["node-a", "node-b"])
    dcfg = OmegaConf.structured(DistributedConfig(launcher="torchrun", nproc_per_node=8))
    cmd = launch.command(dcfg, tmp_path / "config.yaml")
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert {
        "--nproc_per_node=8",
        "--nnodes=2",
        "--node_rank=1",
        "--master_addr=node-a",
        "--master_port=29500",
    } <= set(cmd)
    assert cmd[-3:] == ["-m", "align.worker", str(tmp_path / "config.yaml")]
    dcfg.launcher = "deepspeed"
    cmd = launch.command(dcfg, tmp_path / "config.yaml")
    assert (
        "--no_local_rank" in cmd
        and "--num_gpus=8" in cmd
        and cmd[-2:] == ["align.worker", str(tmp_path / "config.yaml")]
    )
    monkeypatch.delenv("SLURM_NNODES")
    monkeypatch.delenv("SLURM_NODEID")
    dcfg.launcher = "torchrun"
    single = launch.topology(dcfg)
    assert single["nnodes"] == 1 and single["node_rank"] == 0 and single["master_addr"] == "127.0.0.1"


def test_deepspeed_launcher_path_matches_one_rank(tiny_cfg, tmp_path):
    """The same run through DeepSpeed's own launcher (2 ranks x 2 pairs, ZeRO-2) equals 1 in-process rank x 4 pairs."""
    common = ("trainer.precision=fp32", "deepspeed=zero2", "deepspeed.overlap_comm=false")
    run(
        tiny_cfg(
            *common,
            "trainer.per_device_train_batch_size=2",
            "distributed=deepspeed",
            "distributed.nproc_per_node=2",
            out=tmp_path / "ds",
        )
    )
    run(tiny_cfg(*common, "trainer.per_device_train_batch_size=4", out=tmp_path / "one"))
    assert losses(tmp_path / "ds") == pytest.approx(losses(tmp_path / "one"), abs=1e-5)
