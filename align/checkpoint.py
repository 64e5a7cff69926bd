"""Checkpoints: a Hugging Face folder plus what resuming needs (optimizer, scheduler, RNG, loop position).

``checkpoints/step-000100/`` holds ``config.json``, ``model.safetensors`` and the tokenizer (so
``from_pretrained`` and eval read it directly), ``optimizer.pt`` (plain PyTorch) or ``deepspeed/`` (the engine's
sharded state), ``trainer_state.json`` and one ``rng-<rank>.pt`` per rank (its RNG states and its part of the loop
state: the metrics window since the last logged row). A checkpoint is written into a temporary folder and renamed
into place, so a run killed while saving leaves the previous one intact.

Nothing in a run folder is executed: every ``.pt`` file is read with ``torch.load(weights_only=True)`` (tensors and
plain data only; the RNG states are stored as tensors for that), and DeepSpeed's files are checked the same way
(with its few plain data classes allowed) before DeepSpeed's own loader reads them.
"""

from __future__ import annotations

import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from align import distributed as dist
from common.records import read_json, write_json

STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be trusted or read; the message names the file."""


def rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA) RNG states as tensors and plain numbers."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(w) for w in py["state"].tolist()), py["gauss"]))
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state_file(path: Path, map_location=None, allowed: list | None = None, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, so a planted file cannot run code.
    ``allowed``: plain data classes a trusted library stores (DeepSpeed's). Raises ``CheckpointError`` naming the
    file."""
    try:
        with torch.serialization.safe_globals(allowed or []):
            try:
                return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
            except RuntimeError as e:
                if not mmap or "mmap" not in str(e):
                    raise
                return torch.load(path, map_location=map_location, weights_only=True)  # a pre-zipfile pickle
    except pickle.UnpicklingError as e:
        detail = next((line for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line), "")
        raise CheckpointError(
            f"{path}: refusing to load it: it holds objects other than tensors and plain data, which could run code "
            f"(torch.load weights_only=True; {detail.strip() or 'see the traceback'})"
        ) from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint file ({type(e).__name__}: {e})") from e


def _deepspeed_data_classes() -> list:
    """The plain data classes DeepSpeed pickles into its checkpoint files (enums, a loss-scale record, addresses)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def check_deepspeed_files(folder: Path) -> None:
    """Read every ``.pt`` file of a DeepSpeed checkpoint with ``weights_only=True`` (memory-mapped: the pickles are
    parsed, the tensors are not read) before DeepSpeed's own loader, which unpickles anything, opens them."""
    allowed = _deepspeed_data_classes()
    for path in sorted(folder.rglob("*.pt")):
        load_state_file(path, map_location="cpu", allowed=allowed, mmap=True)


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


def last_good_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest checkpoint whose weights were checked finite when it was saved (``weights_finite`` in its
    trainer_state.json): what a non-finite loss or weight error names as the one to resume from."""
    for path in reversed(list_checkpoints(ckpt_root)):
        try:
            if read_json(path / "trainer_state.json").get("weights_finite") is True:
                return path
        except (OSError, ValueError):
            continue
    return None


def save_checkpoint(
    engine,
    tokenizer,
    ckpt_root: Path,
    step: int,
    trainer_state: dict,
    keep: int,
    rank_state: dict | None = None,
) -> Path:
    """Write ``step-<step>`` (every rank calls: DeepSpeed saves are collective) and drop all but ``keep`` newest.

    ``rank_state``: this rank's part of the loop state (tensors and plain data), saved beside its RNG states."""
    final = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f".tmp-step-{step:06d}"
    if dist.is_main():
        for stale in ckpt_root.glob(".tmp-step-*"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    engine.save_pretrained(tmp, tokenizer)
    engine.save_state(tmp)
    torch.save({"rng": rng_state(), "loop": rank_state or {}}, tmp / f"rng-{dist.rank()}.pt")
    dist.barrier()
    if dist.is_main():
        write_json(tmp / "trainer_state.json", trainer_state)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(ckpt_root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_checkpoint(engine, ckpt: Path) -> tuple[dict, dict]:
    """Restore engine state and this rank's RNG from ``ckpt``; return (its trainer state, this rank's loop state)."""
    if (ckpt / "deepspeed").is_dir():
        check_deepspeed_files(ckpt / "deepspeed")
    engine.load_state(ckpt)
    rng_file = ckpt / f"rng-{dist.rank()}.pt"
    if not rng_file.exists():
        raise CheckpointError(f"{rng_file}: missing (the checkpoint was saved with another number of ranks?)")
    saved = load_state_file(rng_file)
    set_rng_state(saved["rng"])
    return read_json(ckpt / "trainer_state.json"), saved.get("loop", {})
