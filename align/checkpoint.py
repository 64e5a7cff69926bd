"""Checkpoints: a Hugging Face folder plus what resuming needs (optimizer, scheduler, RNG, loop position).

``checkpoints/step-000100/`` holds ``config.json``, ``model.safetensors`` and the tokenizer (so
``from_pretrained`` and eval read it directly), ``optimizer.pt`` (plain PyTorch) or ``deepspeed/`` (the engine's
sharded state), ``trainer_state.json`` and one ``rng-<rank>.pt`` per rank. A checkpoint is written into a
temporary folder and renamed into place, so a run killed while saving leaves the previous one intact.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from align import distributed as dist
from align.records import read_json, write_json

STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    if not ckpt_root.exists():
        return []
    found = [
        (int(m.group(1)), p)
        for p in ckpt_root.iterdir()
        if (m := STEP_DIR.match(p.name)) and (p / "trainer_state.json").exists()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def save_checkpoint(engine, tokenizer, ckpt_root: Path, step: int, trainer_state: dict, keep: int) -> Path:
    """Write ``step-<step>`` (every rank calls: DeepSpeed saves are collective) and drop all but ``keep`` newest."""
    final = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f".tmp-step-{step:06d}"
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    engine.save_pretrained(tmp, tokenizer)
    engine.save_state(tmp)
    torch.save(rng_state(), tmp / f"rng-{dist.rank()}.pt")
    dist.barrier()
    if dist.is_main():
        write_json(tmp / "trainer_state.json", trainer_state)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(ckpt_root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_checkpoint(engine, ckpt: Path) -> dict:
    """Restore engine state and this rank's RNG from ``ckpt``; return its trainer state."""
    engine.load_state(ckpt)
    rng_file = ckpt / f"rng-{dist.rank()}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return read_json(ckpt / "trainer_state.json")
