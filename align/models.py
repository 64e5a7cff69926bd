"""Loading models and tokenizers: ``from_pretrained`` on a hub name or a local folder, the same path for both.

A model config may say how to build its folder first when it is missing (``model.build``, kinds in ``BUILDERS``):
the tiny local model (``align/tiny.py``), a real model from a GGUF file a package ships (``align/gguf.py``), or the
miniature SFT model pre-trained here on verifiable tasks, with its on-policy pairs (``miniature/build.py``).
After that every model is loaded the same way. ``model_fingerprint`` identifies a model's weights for the
reference-log-prob cache: the resolved hub commit, or a content hash of a local folder's files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from align.gguf import ensure_gguf_model
from align.tiny import ensure_tiny_model

log = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a bf16-capable GPU, else float32."""
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r}: expected auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def _build_tiny(model_cfg, spec: dict) -> str:
    return str(ensure_tiny_model(model_cfg.name_or_path, spec))


def _build_gguf(model_cfg, spec: dict) -> str:
    return ensure_gguf_model(model_cfg.name_or_path, spec, model_cfg.revision)


def _build_miniature(model_cfg, spec: dict) -> str:
    from miniature.build import ensure_model

    return str(ensure_model(model_cfg.name_or_path, spec))


# model.build.kind -> a function (model config, build spec) -> the name or folder to load. Schemas:
# align/config.py::BUILD_SCHEMAS.
BUILDERS = {"tiny": _build_tiny, "gguf": _build_gguf, "miniature": _build_miniature}


def prepare_model_source(model_cfg) -> str:
    """The name or folder to pass to ``from_pretrained``; builds the model's folder first if configured."""
    if model_cfg.build is not None:
        from omegaconf import OmegaConf

        spec = OmegaConf.to_container(model_cfg.build, resolve=True)
        kind = spec.get("kind")
        if kind not in BUILDERS:
            raise ValueError(f"model.build.kind={kind!r}: expected one of {', '.join(BUILDERS)}")
        return BUILDERS[kind](model_cfg, spec)
    path = Path(model_cfg.name_or_path).expanduser()
    if str(model_cfg.name_or_path).startswith((".", "/", "~")) and not path.exists():
        raise FileNotFoundError(
            f"model.name_or_path={model_cfg.name_or_path}: no such folder (give a hub name or an existing folder)"
        )
    return str(path) if path.exists() else model_cfg.name_or_path


def load_tokenizer(model_cfg):
    """The tokenizer, with a pad token (EOS when it has none) and the config's chat-template override."""
    from transformers import AutoTokenizer

    source = model_cfg.tokenizer or prepare_model_source(model_cfg)
    tok = AutoTokenizer.from_pretrained(
        source, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
    )
    if model_cfg.chat_template is not None:
        tok.chat_template = model_cfg.chat_template
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(model_cfg, dtype: torch.dtype, trainable: bool = True):
    """``AutoModelForCausalLM.from_pretrained`` with the config's dtype, attention and (if trainable) LoRA and
    gradient checkpointing. Dropout is disabled, as TRL does for preference training."""
    from transformers import AutoModelForCausalLM

    source = prepare_model_source(model_cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            revision=model_cfg.revision,
            dtype=dtype,
            attn_implementation=model_cfg.attn_implementation,
            trust_remote_code=model_cfg.trust_remote_code,
        )
    except Exception as e:
        from common.fingerprint import damaged_weight_files

        damaged = damaged_weight_files(source)
        if damaged or isinstance(e, OSError):
            reason = "; ".join(damaged) or str(e)
            raise OSError(f"could not load model.name_or_path={model_cfg.name_or_path!r}: {reason}") from e
        raise
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if not trainable:
        model.eval().requires_grad_(False)
        return model
    if model_cfg.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    if model_cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=model_cfg.lora.r,
            lora_alpha=model_cfg.lora.alpha,
            lora_dropout=model_cfg.lora.dropout,
            target_modules=list(model_cfg.lora.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model


def attention_window(config) -> int | None:
    """The sliding attention window that every layer applies (None: full attention), for masks built by hand
    (``model.share_prompt``). Mistral v0.1 slides every layer; Qwen2 lists its layers in ``layer_types``."""
    window = getattr(config, "sliding_window", None)
    kinds = set(getattr(config, "layer_types", None) or ["sliding_attention"])
    if not window or kinds == {"full_attention"}:
        return None
    if kinds != {"sliding_attention"}:
        raise ValueError(
            f"model.share_prompt: this model's layers mix attention kinds ({sorted(kinds)}) and one 4D mask cannot "
            "express both; set model.share_prompt=false"
        )
    return int(window)


def model_fingerprint(model_cfg, cache_dir: str | os.PathLike) -> str:
    """What identifies the reference weights: a local folder's content hash, or hub name + resolved commit."""
    from common.fingerprint import fingerprint

    source = prepare_model_source(model_cfg)
    return fingerprint(source, model_cfg.revision, Path(cache_dir) / "file_digests.json")["content_hash"]
