"""A model's identity: a content hash of a local folder, or the hub commit of a hub name.

Shared by training and evaluation: it keys the reference-log-prob cache (align/reference.py) and every evaluation
result (eval/).

Local folders: sha256 over the (relative name, sha256) pairs of the files that define the model (weights, configs,
tokenizer files, chat template, remote code). Hashing a 7B checkpoint reads ~15 GB once; the per-file digests are
cached in a small JSON file keyed by (absolute path, size, mtime), so later runs only stat the files.
Hub names: the commit the revision resolves to (online, or from the local hub cache when offline).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from filelock import FileLock

from common.records import shown_path, write_json

log = logging.getLogger(__name__)

MODEL_FILE_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".json",
    ".model",
    ".txt",
    ".jinja",
    ".py",
    ".tiktoken",
)
SKIPPED_NAMES = {"trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}


def is_local(checkpoint: str) -> bool:
    """A folder on disk (existing, or written as a path) rather than a hub name like "org/model"."""
    return Path(checkpoint).expanduser().exists() or checkpoint.startswith(("/", "./", "../", "~"))


def model_files(folder: Path) -> list[Path]:
    """The files that define a model in ``folder`` (top level; sharded weights included), sorted."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.suffix in MODEL_FILE_SUFFIXES
        and p.name not in SKIPPED_NAMES
        and not p.name.startswith((".", "rng_state"))
    )


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_hash(folder: str | os.PathLike, cache_file: str | os.PathLike | None = None) -> tuple[str, int]:
    """(``sha256:<hex>``, number of files) for a model folder, reusing cached per-file digests."""
    folder = Path(folder).expanduser().resolve()
    files = model_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder} holds no model files ({', '.join(MODEL_FILE_SUFFIXES)})")
    cache: dict = {}
    lock = None
    if cache_file is not None:
        cache_file = Path(cache_file)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(cache_file) + ".lock")
        lock.acquire()
    try:
        if cache_file is not None and cache_file.exists():
            try:
                cache = json.loads(cache_file.read_text())
            except (OSError, ValueError):
                cache = {}
        changed = False
        pairs = []
        for path in files:
            stat = path.stat()
            key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
            entry = cache.get(key)
            if entry is None or entry[:2] != stamp:
                log.info("hashing %s (%.1f MB)", path, stat.st_size / 1e6)
                entry = [*stamp, file_sha256(path)]
                cache[key] = entry
                changed = True
            pairs.append(f"{path.name}\0{entry[2]}\n")
        if changed and cache_file is not None:
            write_json(cache_file, cache)
    finally:
        if lock is not None:
            lock.release()
    return "sha256:" + hashlib.sha256("".join(pairs).encode()).hexdigest(), len(files)


def hub_commit(name: str, revision: str | None) -> str | None:
    """The commit ``revision`` (default main) of hub model ``name`` resolves to, or None if it cannot be found."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        try:
            from huggingface_hub import HfApi

            return HfApi().model_info(name, revision=revision).sha
        except Exception as err:  # network, auth or a missing repo: fall back to the local cache
            log.warning(
                "could not resolve %s@%s on the hub (%s); trying the local cache", name, revision, err
            )
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "refs" / (revision or "main")
        return ref.read_text().strip() if ref.exists() else None
    except Exception:
        return None


def fingerprint(checkpoint: str, revision: str | None, cache_file: str | os.PathLike | None) -> dict:
    """What identifies the weights behind ``checkpoint``: written to every result file and hashed into its key."""
    if is_local(checkpoint):
        path = Path(checkpoint).expanduser().resolve()
        digest, n = folder_hash(path, cache_file)
        return {"kind": "local", "path": shown_path(path), "content_hash": digest, "n_files": n}
    commit = hub_commit(checkpoint, revision)
    if commit is None:
        log.warning(
            "%s@%s: no commit found; results will be keyed by the name and revision only",
            checkpoint,
            revision,
        )
    return {
        "kind": "hub",
        "name": checkpoint,
        "revision": revision,
        "commit": commit,
        "content_hash": f"hub:{checkpoint}@{commit or revision or 'main'}",
    }


def damaged_weight_files(checkpoint: str | os.PathLike) -> list[str]:
    """What is wrong with each damaged ``*.safetensors`` file of a local model folder (truncated, bad header), named
    by path: what a load error from deep inside safetensors does not say. Empty for a hub name or sound files."""
    folder = Path(checkpoint).expanduser()
    if not folder.is_dir():
        return []
    from safetensors import safe_open

    problems = []
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for every kind of damage
            problems.append(f"{path}: damaged or truncated safetensors file ({e})")
    return problems
