"""align/hub.py: a finished run's model card comes from its own records, and final/ is pushed only when asked."""

from __future__ import annotations

import json

import pytest
import yaml

from align import hub


@pytest.fixture
def run_dir(tmp_path):
    """A finished run folder as the trainer writes it (config.yaml, results.json, final/, an eval summary)."""
    config = {
        "seed": 3,
        "model": {"name_or_path": "HuggingFaceH4/mistral-7b-sft-beta"},
        "method": {"name": "mio", "beta": 0.1, "sft_weight": 0.0},
        "dataset": {"path": "HuggingFaceH4/ultrafeedback_binarized", "name": None},
        "trainer": {"learning_rate": 5e-7, "lr_scheduler": "cosine", "per_device_train_batch_size": 8,
                    "gradient_accumulation_steps": 16},
    }  # fmt: skip
    results = {
        "status": "completed",
        "steps": 120,
        "train": {"loss": 1.2, "rewards/accuracies": 0.7},
        "eval": {"loss": 1.25, "rewards/accuracies": 0.675},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    (tmp_path / "eval" / "mio8").mkdir(parents=True)
    summary = {"scores": {"bbh": 0.5, "math": 0.25}, "average": 0.375, "local_data": False}
    (tmp_path / "eval" / "mio8" / "summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_the_model_card_is_built_from_the_runs_records(run_dir):
    card = hub.model_card(run_dir, "me/mio-7b")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "HuggingFaceH4/mistral-7b-sft-beta"
    assert meta["datasets"] == ["HuggingFaceH4/ultrafeedback_binarized"] and "mio" in meta["tags"]
    assert "beta=0.1" in card and "| pairs per step | 128 |" in card and "| optimizer steps | 120 |" in card
    assert "| rewards/accuracies | 0.7 / 0.675 |" in card
    assert "| bbh | 0.5 |" in card and "| average | 0.375 |" in card
    assert 'from_pretrained("me/mio-7b")' in card


def test_a_local_start_model_is_not_named_as_a_hub_base_model(run_dir, tmp_path):
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["model"]["name_or_path"] = str(tmp_path)  # a local folder
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert "base_model" not in yaml.safe_load(hub.model_card(run_dir).split("---\n")[1])


class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_uploads_final_with_its_card_and_a_dry_run_pushes_nothing(run_dir):
    api = FakeApi()
    card = hub.push(run_dir, "me/mio-7b", dry_run=True, api=api)
    assert (
        card == run_dir / "final" / "README.md" and card.read_text().startswith("---\n") and api.calls == []
    )
    hub.push(run_dir, "me/mio-7b", private=True, api=api)
    assert api.calls == [
        ("create_repo", {"repo_id": "me/mio-7b", "private": True, "exist_ok": True}),
        ("upload_folder", {"folder_path": str(run_dir / "final"), "repo_id": "me/mio-7b",
                           "commit_message": f"mio-repro run {run_dir.name}"}),
    ]  # fmt: skip


def test_an_unfinished_run_is_not_pushed(run_dir):
    (run_dir / "results.json").write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(FileNotFoundError, match="interrupted"):
        hub.push(run_dir, "me/mio-7b", api=FakeApi())
