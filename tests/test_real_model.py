"""SmolLM2-135M-Instruct, real pretrained weights, through every training path on the CPU (``make test-real``).

``model=smollm2_135m`` with the hub out of reach: the shipped GGUF file is converted once into a folder (the session
fixture), then everything loads it with ``from_pretrained`` as it would a hub folder. Covered: chunked log-probs
against the naive full-logits ones on the real weights; MIO and DPO steps with LoRA and with full weights on short
bundled pairs; the reference cache computed once and shared; a checkpoint, a resume on the same curve, and a final
folder that reloads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from align.config import compose
from align.run import run
from tests.conftest import QUICK_RUN

pytestmark = pytest.mark.real


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    from align.models import prepare_model_source

    folder = tmp_path_factory.mktemp("real") / "smollm2-135m"
    cfg = compose(["output_dir=unused", "model=smollm2_135m", f"model.build.folder={folder}"])
    assert prepare_model_source(cfg.model) == str(folder)  # HF_HUB_OFFLINE: the GGUF copy, not the hub
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    return folder


def real_cfg(folder: Path, out: Path, *overrides: str):
    return compose(
        [
            f"output_dir='{out}'",
            "model=smollm2_135m",
            f"model.build.folder={folder}",
            "dataset=tiny",
            *QUICK_RUN,
            "dataset.max_train_samples=8",
            "dataset.max_eval_samples=4",
            "trainer.per_device_train_batch_size=2",
            "trainer.per_device_eval_batch_size=4",
            "trainer.warmup_ratio=0",
            "trainer.cpu_threads=2",
            *overrides,
        ]
    )


def metrics(out: Path, split: str = "train") -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def test_chunked_logps_match_naive_on_real_weights(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.logprobs import naive_sequence_logps, sequence_logps
    from align.preference_data import collate, load_preference_data

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float64)
    cfg = compose(
        ["output_dir=unused", "dataset=tiny", "dataset.max_train_samples=4", "dataset.max_eval_samples=1"]
    )
    data = load_preference_data(cfg.dataset, tok, seed=0)
    b = collate([data.train.dataset[i] for i in range(4)], tok.pad_token_id)
    with torch.no_grad():
        naive = naive_sequence_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"])
        fast = sequence_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"], chunk_size=7)
    torch.testing.assert_close(fast.sums, naive.sums, rtol=1e-10, atol=1e-10)
    assert fast.counts.tolist() == naive.counts.tolist()
    # A pretrained model knows English and arithmetic: far above a uniform guess over 49,152 tokens (-10.8).
    assert (naive.sums / naive.counts).mean() > -4


@pytest.mark.parametrize(("method", "lora"), [("mio", True), ("dpo", True), ("mio", False)])
def test_methods_train_with_lora_and_full_weights(smollm2_dir, tmp_path, method, lora):
    out = tmp_path / f"{method}-{lora}"
    lr = "2e-4" if lora else "1e-5"
    result = run(
        real_cfg(
            smollm2_dir,
            out,
            f"method={method}",
            f"model.lora.enabled={str(lora).lower()}",
            f"trainer.learning_rate={lr}",
        )
    )
    rows = metrics(out)
    assert result["status"] == "completed" and len(rows) == 4
    expected = 1.3862944 if method == "mio" else 0.6931472  # policy = reference at step 1
    assert rows[0]["loss"] == pytest.approx(expected, abs=1e-5)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert rows[-1]["rewards/margins"] != 0
    if lora:
        assert (out / "final" / "adapter" / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out / "final")
    assert type(reloaded).__name__ == "LlamaForCausalLM" and reloaded.config.tie_word_embeddings


def test_reference_cache_checkpoint_and_resume(smollm2_dir, tmp_path, caplog, monkeypatch):
    """Two methods on the same model and data share one reference table; a run killed in step 3 (after its step-2
    checkpoint) and resumed gives the uninterrupted run's curve."""
    import align.trainer as trainer_mod

    common = ("model.lora.enabled=true", "trainer.learning_rate=2e-4", "trainer.save_steps=2")
    whole = run(real_cfg(smollm2_dir, tmp_path / "whole", *common))
    assert whole["reference_seconds"] > 0
    caplog.clear()
    with caplog.at_level("INFO", logger="align.reference"):
        other = run(real_cfg(smollm2_dir, tmp_path / "dpo", *common, "method=dpo"))
    assert "reference log-probs: cached" in caplog.text and other["status"] == "completed"

    calls = {"n": 0}
    real = trainer_mod.Trainer._policy_forward

    def dies_in_step_3(self, batch):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt("simulated kill")
        return real(self, batch)

    monkeypatch.setattr(trainer_mod.Trainer, "_policy_forward", dies_in_step_3)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run(real_cfg(smollm2_dir, part, *common))
    monkeypatch.setattr(trainer_mod.Trainer, "_policy_forward", real)
    resumed = run(real_cfg(smollm2_dir, part, *common, "resume=true"))
    assert resumed["steps"] == 4
    a, b = metrics(tmp_path / "whole"), metrics(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], abs=1e-5)
