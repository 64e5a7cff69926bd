"""Every architecture the model configs name, as a tiny random-init model built from its own config class and
loaded through the same ``from_pretrained`` path: log-probs (chunked and shared-prompt layouts) against the naive
full-logits computation, and one training step.

The differences that bite are in the variants: Qwen2's attention biases and tied embeddings (Qwen2.5-1.5B,
SmolLM2), Mistral v0.1's sliding window (made smaller than the sequences here, so that it matters).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from align.logprobs import naive_sequence_logps, sequence_logps, shared_prompt_logps
from align.models import attention_window
from align.preference_data import collate, collate_shared

REPO = Path(__file__).resolve().parents[1]
# conf/model/<name>.yaml -> the architecture its checkpoint uses (config.json "model_type").
MODEL_ARCHS = {
    "mistral7b": "mistral",
    "zephyr7b_sft_full": "mistral",
    "eurus7b_sft": "mistral",
    "llama3_8b": "llama",
    "qwen2_5_7b": "qwen2",
    "qwen2_5_1_5b": "qwen2_tied",
    "smollm2_135m": "llama_tied",
    "tiny": "llama",
    "tiny_sft": "llama",
    "mini_sft": "llama_tied",  # miniature/build.py: Llama with tied embeddings
}
SMALL = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def arch_config(arch: str, vocab_size: int):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    if arch == "mistral":
        return MistralConfig(vocab_size=vocab_size, sliding_window=6, **SMALL)
    if arch.startswith("qwen2"):
        return Qwen2Config(vocab_size=vocab_size, tie_word_embeddings=arch.endswith("tied"), **SMALL)
    return LlamaConfig(vocab_size=vocab_size, tie_word_embeddings=arch.endswith("tied"), **SMALL)


def test_every_model_config_has_an_architecture_here():
    names = {p.stem for p in (REPO / "conf" / "model").glob("*.yaml")}
    assert names <= set(MODEL_ARCHS), (
        f"add the architecture of {sorted(names - set(MODEL_ARCHS))} to MODEL_ARCHS"
    )


@pytest.fixture(scope="module", params=sorted(set(MODEL_ARCHS.values())))
def arch_dir(request, tmp_path_factory, tiny_model_dir):
    """A random-init model of this architecture with the tiny tokenizer, saved as a Hugging Face folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(arch_config(request.param, len(tok)))
    if request.param.startswith("qwen2"):
        with torch.no_grad():  # biases start at zero: make them matter
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("arch") / request.param
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


ROWS = [  # prompts and answers longer than Mistral's window of 6 here, of different lengths (padding matters)
    {
        "prompt_ids": [2, *range(10, 19)],
        "chosen_ids": [*range(40, 47), 3],
        "rejected_ids": [60, 61, 3],
        "row": 0,
    },
    {"prompt_ids": [2, 13, 14], "chosen_ids": [23, 3], "rejected_ids": [*range(70, 79), 3], "row": 1},
]


def test_logps_match_the_naive_computation(arch_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(arch_dir, dtype=torch.float64, attn_implementation="sdpa")
    config = json.loads((arch_dir / "config.json").read_text())
    assert config["model_type"] in arch_dir.name
    b = collate(ROWS, pad_id=1)
    naive = naive_sequence_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"])
    fast = sequence_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"], chunk_size=3)
    torch.testing.assert_close(fast.sums, naive.sums, rtol=1e-9, atol=1e-9)
    s = collate_shared(ROWS, pad_id=1, window=attention_window(model.config))
    shared = shared_prompt_logps(
        model, s["input_ids"], s["attention_mask"], s["position_ids"], s["tgt_row"], s["tgt_pred"], s["tgt_pos"],
        s["tgt_seq"], chunk_size=3,
    )  # fmt: skip
    torch.testing.assert_close(shared.sums, naive.sums, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("share_prompt", [False, True])
def test_one_training_step(arch_dir, tiny_cfg, tmp_path, share_prompt):
    from align.run import run

    cfg = tiny_cfg(
        f"model.name_or_path={arch_dir}",
        "model.build=null",
        f"model.share_prompt={str(share_prompt).lower()}",
        "trainer.max_steps=1",
        "trainer.warmup_ratio=0",
        "trainer.save_steps=0",
        out=tmp_path / "run",
    )
    results = run(cfg)
    assert results["status"] == "completed" and results["steps"] == 1
    assert torch.isfinite(torch.tensor(results["train"]["loss"]))
    from safetensors.torch import load_file

    before, after = (
        load_file(arch_dir / "model.safetensors"),
        load_file(tmp_path / "run" / "final" / "model.safetensors"),
    )
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
