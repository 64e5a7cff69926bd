"""The toy's Hydra configs: every YAML under conf/toy/ composes, typos fail, and the entry point runs as a script."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from toy.pipeline import validate
from toy.toy_config import register_configs


def _compose(repo_root, name: str, overrides: list[str] | None = None):
    register_configs()
    with initialize_config_dir(config_dir=str(repo_root / "conf" / "toy"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides or [])


def _yaml_names(repo_root) -> list[str]:
    root = repo_root / "conf" / "toy"
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def test_every_toy_yaml_composes(repo_root):
    """A recursive glob, not a hand list: a new preset is covered the day it is added."""
    names = _yaml_names(repo_root)
    assert {"config", "quick"} <= set(names)
    for name in names:
        cfg = _compose(repo_root, name)
        validate(cfg)  # constructions, methods and loss hyperparameters name real things
        assert cfg.dynamics.constructions[0] == "shared"  # the paper's construction comes first


def test_quick_preset_is_smaller_than_the_full_config(repo_root):
    full, quick = _compose(repo_root, "config"), _compose(repo_root, "quick")
    assert len(quick.dynamics.seeds) < len(full.dynamics.seeds)
    assert quick.gaussian.iterations < full.gaussian.iterations
    assert quick.out_dir != full.out_dir  # the tests never overwrite the committed results
    assert {"dpo", "mio"} <= set(quick.dynamics.methods)


def test_misspelt_key_fails_at_compose_time(repo_root):
    with pytest.raises(ConfigCompositionException):
        _compose(repo_root, "quick", ["dynamics.epoch=3"])  # the key is `epochs`


def test_unknown_method_or_hyperparameter_is_rejected_with_the_valid_names(repo_root):
    cfg = _compose(repo_root, "quick", ["dynamics.methods=[dpo,mia]"])
    with pytest.raises(ValueError, match="valid methods: .*mio"):
        validate(cfg)
    cfg = _compose(repo_root, "quick", ["+dynamics.loss_kwargs.mio.betta=0.2"])
    with pytest.raises(ValueError, match="unknown loss_kwargs"):
        validate(cfg)
    cfg = _compose(repo_root, "quick", ["dynamics.constructions=[shared,overlapping]"])
    with pytest.raises(ValueError, match="choose from shared, disjoint"):
        validate(cfg)


def test_entry_point_composes_as_a_script(repo_root):
    """`python toy/run.py` puts toy/ on sys.path, not the repo: imports must still resolve. `--cfg job` composes
    the config (schema included) and prints it without running anything."""
    out = subprocess.run(
        [sys.executable, "toy/run.py", "--config-name", "quick", "--cfg", "job"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "constructions:\n  - shared\n  - disjoint" in out.stdout
