"""Shared test set-up: offline, CPU-only, caches in a per-session temporary folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # Before anything imports transformers, datasets or deepspeed: no hub, CPU accelerator, private caches.
    cache = Path(tempfile.mkdtemp(prefix="mio-tests-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("HF_HOME", str(cache / "hf"))
    os.environ.setdefault("MIO_CACHE", str(cache / "mio"))
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


# The unit tests train the fast random-init tiny model on the bundled pairs, with no benchmarks unless a test asks,
# whatever the primary config's defaults (the miniature SFT model, its pairs and benchmark).
PINNED = ["model=tiny", "dataset=tiny", "evaluate.benchmarks=null"]
# A smaller tiny model than the default, so each training test takes seconds.
TINY_MODEL = [
    *PINNED,
    "model.build.hidden_size=32",
    "model.build.intermediate_size=64",
    "model.build.num_layers=2",
    "model.build.num_heads=2",
    "model.build.num_kv_heads=1",
    "model.build.vocab_size=512",
]
# A few optimizer steps on a slice of the bundled data.
QUICK_RUN = [
    "dataset.max_train_samples=64",
    "dataset.max_eval_samples=16",
    "trainer.max_steps=4",
    "trainer.per_device_train_batch_size=4",
    "trainer.per_device_eval_batch_size=8",
    "trainer.logging_steps=1",
    "trainer.eval_steps=0",
    "trainer.save_steps=2",
    "trainer.progress_bar=false",
    "trainer.tensorboard=false",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The test-size tiny model folder, built once per session (the same builder as the default model)."""
    from omegaconf import OmegaConf

    from align.config import compose
    from align.tiny import ensure_tiny_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    cfg = compose(["output_dir=unused", f"model.name_or_path={path}", *TINY_MODEL])
    return ensure_tiny_model(path, OmegaConf.to_container(cfg.model.build, resolve=True))


@pytest.fixture
def tiny_cfg(tiny_model_dir, tmp_path):
    """``tiny_cfg(*overrides, out=...)``: a composed quick-run config on the test-size tiny model."""
    from align.config import compose

    def make(*overrides: str, out: Path | None = None):
        out = out or tmp_path / "run"
        base = [f"output_dir='{out}'", f"model.name_or_path={tiny_model_dir}", *TINY_MODEL, *QUICK_RUN]
        return compose([*base, *overrides])

    return make
