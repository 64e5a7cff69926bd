"""Records a run writes, shared by training and evaluation: atomic text and JSON files, the environment record.

``write_text_atomic`` is how every result file is written (readers never see half a file); ``environment`` is the
``env.json`` of a training run (package versions, git revision, hardware). ``shown_path`` is how a record names a
file: relative to the working directory when the file lies under it, so records and tables made in a clone name no
path of the machine that made them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "deepspeed",
    "accelerate",
    "peft",
    "hydra-core",
    "omegaconf",
    "lm_eval",
    "numpy",
)


def shown_path(path: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """``path`` relative to ``base`` (default: the current directory) when it lies under it
    (``outputs/runs/x/final``), else as given; a reader in that directory (the repository root, where the Makefile
    and sweeps run) opens either. A hub name (``org/model``) comes back unchanged."""
    try:
        return str(Path(path).resolve().relative_to(Path(base or Path.cwd()).resolve()))
    except ValueError:
        return str(path)


def shown_paths(tree: Any) -> Any:
    """``tree`` (a resolved config) with every absolute path under the current directory made relative to it
    (``shown_path``): what config.yaml records and the run identity hashes, so the same run in another clone or
    a moved checkout has the same identity and names no path of its machine."""
    if isinstance(tree, dict):
        return {k: shown_paths(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [shown_paths(v) for v in tree]
    return shown_path(tree) if isinstance(tree, str) and os.path.isabs(tree) else tree


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same folder and ``os.replace``: readers never see half a file, and a
    killed writer leaves the previous version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def git_revision(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(repo: Path) -> dict[str, Any]:
    """Package versions, git revision, Python, OS and accelerator: enough to say what produced a number."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpu = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_revision(repo),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "cuda": torch.version.cuda,
        "gpus": gpu,
        "cpu_threads": torch.get_num_threads(),
        "argv": sys.argv,
    }
