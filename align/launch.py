"""Multi-process launch: the Hydra job stays one process per run and starts the ranks with a real launcher.

``distributed.launcher=torchrun`` (or ``deepspeed``) makes ``align/run.py`` write the resolved config into the
run folder and start ``torchrun ... -m align.worker <run>/config.yaml`` (every rank reads the same resolved
config; no rank sees Hydra's argv). A ``-m`` sweep is one launch per job, on one machine with Hydra's basic
launcher or on SLURM with ``hydra/launcher=slurm`` (submitit), which runs the job once per node: each node's job
starts its own torchrun with its node rank and the first node as rendezvous.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from common.net import free_port

log = logging.getLogger(__name__)

WORKER_ENV = "MIO_WORKER"  # set in the ranks' environment: they train, they never launch


def in_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def _auto_nproc() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def _slurm_hosts() -> list[str]:
    try:
        import submitit

        return list(submitit.JobEnvironment().hostnames)
    except Exception:  # noqa: BLE001 - not inside a submitit job
        nodelist = os.environ.get("SLURM_JOB_NODELIST")
        if nodelist and shutil.which("scontrol"):
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
            )
            return out.stdout.split()
    return []


def topology(dcfg) -> dict:
    """Resolve ``auto`` values: processes per node (visible GPUs, else 1), nodes and node rank (SLURM, else 1/0),
    rendezvous address (the first SLURM node, else localhost) and port (a free one on one node)."""
    nproc = _auto_nproc() if dcfg.nproc_per_node == "auto" else int(dcfg.nproc_per_node)
    nnodes = int(os.environ.get("SLURM_NNODES", 1)) if dcfg.nnodes == "auto" else int(dcfg.nnodes)
    node_rank = int(os.environ.get("SLURM_NODEID", 0)) if dcfg.node_rank == "auto" else int(dcfg.node_rank)
    addr = dcfg.master_addr
    if addr == "auto":
        hosts = _slurm_hosts() if nnodes > 1 else []
        addr = hosts[0] if hosts else "127.0.0.1"
    port = int(dcfg.master_port) or (free_port("") if nnodes == 1 else 29500)
    return {
        "nproc_per_node": nproc,
        "nnodes": nnodes,
        "node_rank": node_rank,
        "master_addr": addr,
        "master_port": port,
    }


def command(dcfg, config_file: Path) -> list[str]:
    """The launcher command line that runs ``align.worker`` on every rank of this node."""
    t = topology(dcfg)
    if dcfg.launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={t['nproc_per_node']}",
               f"--nnodes={t['nnodes']}", f"--node_rank={t['node_rank']}",
               f"--master_addr={t['master_addr']}", f"--master_port={t['master_port']}"]  # fmt: skip
    elif dcfg.launcher == "deepspeed":
        # --no_local_rank: the launcher would otherwise append --local_rank=N, which no Hydra-style argv accepts.
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--no_local_rank", f"--num_gpus={t['nproc_per_node']}",
               f"--num_nodes={t['nnodes']}", f"--node_rank={t['node_rank']}",
               f"--master_addr={t['master_addr']}", f"--master_port={t['master_port']}"]  # fmt: skip
    else:
        raise ValueError(f"distributed.launcher={dcfg.launcher!r}: expected none, torchrun or deepspeed")
    cmd += [*map(str, dcfg.extra_args)]
    return cmd + (
        ["-m", "align.worker", str(config_file)]
        if dcfg.launcher == "torchrun"
        else ["--module", "align.worker", str(config_file)]
    )


def launch(dcfg, config_file: Path) -> None:
    """Run the ranks of this node to completion; raise with the launcher's exit code if any rank failed."""
    cmd = command(dcfg, config_file)
    log.info("launching: %s", shlex.join(cmd))
    env = dict(os.environ, **{WORKER_ENV: "1"})
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(
            var, None
        )  # the launcher sets its own; stale values from a parent group would confuse the ranks
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{dcfg.launcher} exited with status {proc.returncode}; see the ranks' output above and {config_file.parent}"
        )
