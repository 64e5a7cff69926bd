"""One "already computed?" mechanism (common/identity.py): the runtime-only fields are marked in the schemas and
every list of keys that do not count is derived from those marks.

Probing, not restating: each leaf key of a resolved training config is changed in turn, and exactly the marked ones
leave the run's digest unchanged; the same for the evaluation backend's keys and a result's settings hash.
"""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from align.config import Config, compose, to_container
from align.run_folder import RunFolderError, config_digest, runtime_keys
from common import identity
from common.records import shown_paths

# What the schema marks runtime() today; a change here is a change of what counts as the same run (docs/reliability.md).
TRAINING_RUNTIME = {
    "paths",
    "output_dir",
    "resume",
    "skip_if_complete",
    "distributed",
    "evaluate",
    "trainer.cpu_threads",
    "trainer.progress_bar",
    "trainer.tensorboard",
    "trainer.wandb_project",
    "trainer.save_steps",
    "trainer.save_total_limit",
}


def leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out += leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return out


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return [*value, "x"]
    return f"{value}-changed" if value is not None else "set"


def set_other_value(cfg, key: str, value) -> None:
    """Set ``key`` to a value other than ``value`` that its (typed) node accepts."""
    from omegaconf.errors import ValidationError

    candidates = (
        [{"x": 1}] if isinstance(value, dict) else [changed(value)] + ([7, True] if value is None else [])
    )
    for candidate in candidates:
        try:
            OmegaConf.update(cfg, key, candidate, merge=False)
            return
        except ValidationError:
            continue
    raise AssertionError(f"no other value for {key}")


def covered_by(key: str, marked: set[str]) -> bool:
    return any(key == m or key.startswith(m + ".") for m in marked)


def test_the_schema_marks_the_runtime_keys():
    assert set(runtime_keys()) == set(identity.runtime_keys(Config)) == TRAINING_RUNTIME


def test_exactly_the_runtime_keys_leave_a_runs_digest_unchanged():
    resolved = to_container(compose(["output_dir=x", "model=tiny", "dataset=tiny"]))
    base, marked = config_digest(resolved), set(runtime_keys())
    for key in leaves(resolved):
        probe = OmegaConf.create(resolved)
        OmegaConf.update(probe, key, changed(OmegaConf.select(probe, key)), merge=False)
        same = config_digest(OmegaConf.to_container(probe)) == base
        assert same == covered_by(key, marked), key


def test_a_clone_of_the_checkout_computes_the_same_run(tmp_path, monkeypatch):
    """Paths under the working directory count relative to it: the same config resolved in two clones (absolute
    paths under each) has one digest and no differing keys, so a clone skips a committed completed run instead of
    refusing it as "a different config" (found by running make reproduce-table1 in a fresh clone)."""
    from align.run_folder import changed_keys

    def in_clone(clone):
        """The resolved config in ``clone``, what its config.yaml records, and its digest, computed there."""
        clone.mkdir()
        monkeypatch.chdir(clone)
        overrides = [
            f"output_dir={clone}/outputs/x",
            "model=tiny",
            "dataset=tiny",
            f"paths.cache_dir={clone}/.cache",
        ]
        resolved = to_container(compose(overrides))
        return resolved, shown_paths(resolved), config_digest(resolved)

    a, a_yaml, a_digest = in_clone(tmp_path / "a")
    b, _, b_digest = in_clone(tmp_path / "b")  # the cwd is b from here on
    assert a["model"]["name_or_path"] != b["model"]["name_or_path"]  # absolute, each under its clone
    assert a_yaml["model"]["name_or_path"] == ".cache/models/tiny-llama"
    assert a_digest == b_digest and changed_keys(a_yaml, b) == []
    other = dict(b, model=dict(b["model"], name_or_path=str(tmp_path / "elsewhere")))
    assert changed_keys(a_yaml, other) == ["model.name_or_path"]  # a path outside the clone counts as it is


def test_training_and_evaluation_agree_on_cpu_threads():
    """The keys both schemas have: speed only in both (the old hand lists disagreed on trainer.cpu_threads)."""
    from eval.config import SPEED_ONLY_BACKEND_KEYS, EvalConfig

    assert "trainer.cpu_threads" in runtime_keys()
    assert "backend.cpu_threads" in identity.runtime_keys(EvalConfig)
    assert SPEED_ONLY_BACKEND_KEYS == ("cpu_threads",)


def test_exactly_the_runtime_backend_keys_leave_a_results_key_unchanged():
    from eval import harness
    from eval.config import EvalConfig
    from eval.config import compose as compose_eval
    from eval.results import settings_hash

    cfg = compose_eval(["checkpoint=some/model", "output_dir=x"])
    checkpoint = {"content_hash": "hub:some/model@main"}
    base = settings_hash(harness.common_settings(cfg, checkpoint))
    marked = {
        k.removeprefix("backend.") for k in identity.runtime_keys(EvalConfig) if k.startswith("backend.")
    }
    for key, value in OmegaConf.to_container(cfg.backend, resolve=True).items():
        probe = cfg.copy()
        set_other_value(probe, f"backend.{key}", value)
        same = settings_hash(harness.common_settings(probe, checkpoint)) == base
        assert same == (key in marked), key


def test_a_runtime_change_keeps_a_finished_run_and_a_real_change_refuses_it(tiny_cfg, tmp_path):
    from align.run import run

    out = tmp_path / "run"
    first = run(tiny_cfg("trainer.max_steps=2", out=out))
    again = run(
        tiny_cfg("trainer.max_steps=2", "trainer.cpu_threads=1", "trainer.save_total_limit=5", out=out)
    )
    assert again == first, "a runtime-only change reuses the finished run"
    assert json.loads((out / "results.json").read_text())["wall_seconds"] == first["wall_seconds"]
    with pytest.raises(RunFolderError, match="trainer.learning_rate"):
        run(tiny_cfg("trainer.max_steps=2", "trainer.learning_rate=0.5", out=out))


def test_is_done_needs_the_key_and_a_complete_record():
    record = {"key": "abc", "status": "completed"}
    done = lambda r: r["status"] == "completed"  # noqa: E731
    assert identity.is_done(record, "abc", "key", done)
    assert not identity.is_done(record, "abd", "key", done)
    assert not identity.is_done(record | {"status": "failed"}, "abc", "key", done)
    assert not identity.is_done(None, "abc", "key", done)
