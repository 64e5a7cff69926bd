"""Process-group helpers: rank, world size, barriers, gathers. One process without a launcher is rank 0 of 1.

Launchers (torchrun, the ``deepspeed`` launcher, submitit) set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT.
DeepSpeed insists on them even for one process, so ``init`` fills in single-process defaults when absent.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from common.net import free_port


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def single_process_env() -> None:
    """Set the torch.distributed variables for a one-process group, unless a launcher already did."""
    if "WORLD_SIZE" in os.environ:
        return
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    )


def init(device: torch.device, use_deepspeed: bool) -> None:
    """Initialise the process group when there are several ranks or DeepSpeed needs one (idempotent)."""
    if dist.is_initialized():
        return
    if not use_deepspeed and world_size() == 1:
        return
    single_process_env()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank())
    if use_deepspeed:
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend)
    else:
        dist.init_process_group(backend=backend)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t
