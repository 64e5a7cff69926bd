"""Reliability (issue 11): no silent corruption on resume, from the reference cache or from bad data, nothing
executed from a run folder, every config value checked before anything loads. One test (or more) per class of
failure of docs/reliability.md; each fails on the code before the fix."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import align.trainer as trainer_mod
from align.config import ConfigValueError, compose
from align.engine import TorchEngine
from align.preference_data import MalformedDataError
from align.run import RunFolderError, run, validate

LN4 = math.log(4.0)
REPO = Path(__file__).resolve().parents[1]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out: Path, split: str = "train") -> list[float]:
    return [r["loss"] for r in metrics(out) if r["split"] == split]


TIMING = ("tokens_per_s", "mfu")


def comparable_rows(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in metrics(out)]


def assert_same_rows(a: Path, b: Path) -> None:
    ra, rb = comparable_rows(a), comparable_rows(b)
    assert [(r["step"], r["split"]) for r in ra] == [(r["step"], r["split"]) for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            same = x[k] == y[k] if isinstance(x[k], str) else x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-6)
            assert same, (x["step"], k, x[k], y[k])


def kill_at_forward(monkeypatch, n: int) -> None:
    """The n-th training forward raises KeyboardInterrupt (a kill between two checkpoints)."""
    real, calls = trainer_mod.Trainer._policy_forward, {"n": 0}

    def dies(self, batch):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt("simulated kill")
        return real(self, batch)

    monkeypatch.setattr(trainer_mod.Trainer, "_policy_forward", dies)


def killed_run(tiny_cfg, monkeypatch, out: Path, *overrides: str, at: int = 5) -> None:
    kill_at_forward(monkeypatch, at)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_cfg(*overrides, out=out))
    monkeypatch.undo()


def tiny_rows(n: int) -> list[dict]:
    lines = (REPO / "data" / "tiny_prefs" / "train.jsonl").read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------ 1. the reference cache


def test_skipped_row_then_deleted_row_does_not_reuse_a_shifted_table(tiny_cfg, tmp_path):
    """Skip mode drops row 1 (rows 0, 2, 3, ...); the same file with row 1 deleted renumbers the same tokens
    (0, 1, 2, ...). The old key (tokens only) reused the first table under the new row ids: step-1 loss 1.374."""
    rows = tiny_rows(40)
    bad = dict(rows[1], rejected=rows[1]["chosen"])  # chosen identical to rejected: malformed
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    common = ("dataset=local_file", "dataset.eval_fraction=0", "dataset.on_malformed=skip", cache)
    common += ("trainer.max_steps=1", "trainer.save_steps=0", "dataset.max_eval_samples=null")
    with_bad = write_jsonl(tmp_path / "with_bad.jsonl", [rows[0], bad, *rows[2:]])
    run(tiny_cfg(*common, f"dataset.path={with_bad}", out=tmp_path / "a"))
    deleted = write_jsonl(tmp_path / "deleted.jsonl", [rows[0], *rows[2:]])
    run(tiny_cfg(*common, f"dataset.path={deleted}", out=tmp_path / "b"))
    assert losses(tmp_path / "a")[0] == pytest.approx(LN4, abs=1e-6)
    assert losses(tmp_path / "b")[0] == pytest.approx(LN4, abs=1e-6)


def test_an_edited_cache_table_is_not_trusted(tiny_cfg, tmp_path, caplog):
    """50 added to every cached sum was accepted before; now the table fails its digest and is computed again."""
    cache = tmp_path / "cache"
    common = (f"paths.cache_dir={cache}", "trainer.max_steps=1", "trainer.save_steps=0")
    run(tiny_cfg(*common, out=tmp_path / "a"))
    for f in (cache / "reference_logps").glob("*.pt"):
        data = torch.load(f, weights_only=True)
        data["sums"] = data["sums"] + 50.0
        torch.save(data, f)
    run(tiny_cfg(*common, out=tmp_path / "b"))
    assert losses(tmp_path / "b")[0] == pytest.approx(LN4, abs=1e-6)
    assert "does not verify" in caplog.text and "digest" in caplog.text


def test_two_base_models_on_the_same_data_get_their_own_tables(tiny_cfg, tiny_model_dir, tmp_path):
    """The key holds the model's fingerprint: a second model (other weights) computes its own tables."""
    import shutil

    other = tmp_path / "other_model"
    shutil.copytree(tiny_model_dir, other)
    weights = load_file(str(other / "model.safetensors"))
    save_file(
        {k: v + 0.01 for k, v in weights.items()}, str(other / "model.safetensors"), metadata={"format": "pt"}
    )
    cache = tmp_path / "cache"
    common = (f"paths.cache_dir={cache}", "trainer.max_steps=1", "trainer.save_steps=0")
    run(tiny_cfg(*common, out=tmp_path / "a"))
    run(tiny_cfg(*common, f"model.name_or_path={other}", out=tmp_path / "b"))
    assert len(list((cache / "reference_logps").glob("*.pt"))) == 4  # train and eval, per model
    assert losses(tmp_path / "b")[0] == pytest.approx(LN4, abs=1e-6)


# --------------------------------------------------------------------------- 2. resume and the run folder

STEPS = ("trainer.max_steps=6", "trainer.save_steps=2", "trainer.eval_steps=3")


def test_resume_with_another_config_is_refused_naming_the_keys(tiny_cfg, tmp_path, monkeypatch):
    out = tmp_path / "run"
    killed_run(tiny_cfg, monkeypatch, out, *STEPS)
    before = (out / "config.yaml").read_text()
    with pytest.raises(
        RunFolderError, match=r"method.name.*trainer.learning_rate|trainer.learning_rate.*method"
    ):
        run(tiny_cfg(*STEPS, "resume=true", "method=dpo", "trainer.learning_rate=0.01", out=out))
    assert (out / "config.yaml").read_text() == before
    # runtime-only keys may differ
    run(tiny_cfg(*STEPS, "resume=true", "trainer.progress_bar=true", "trainer.cpu_threads=1", out=out))
    assert json.loads((out / "results.json").read_text())["status"] == "completed"


def test_fresh_run_in_a_folder_with_an_unfinished_run_is_refused(tiny_cfg, tmp_path, monkeypatch):
    out = tmp_path / "run"
    killed_run(tiny_cfg, monkeypatch, out, *STEPS)
    with pytest.raises(RunFolderError, match=r"holds checkpoints of an earlier run .*resume=true"):
        run(tiny_cfg(*STEPS, out=out))
    assert [p.name for p in sorted((out / "checkpoints").glob("step-*"))] == ["step-000002", "step-000004"]


def test_redoing_a_completed_run_removes_its_checkpoints(tiny_cfg, tmp_path):
    """skip_if_complete=false trains again: the old run's checkpoints must not outrank the new run's."""
    out = tmp_path / "run"
    run(tiny_cfg("trainer.save_steps=1", "trainer.save_total_limit=0", out=out))
    run(tiny_cfg("trainer.save_steps=2", "skip_if_complete=false", out=out))
    assert [p.name for p in sorted((out / "checkpoints").glob("step-*"))] == ["step-000002"]


def test_a_second_run_in_the_same_folder_is_locked_out(tiny_cfg, tmp_path):
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / ".lock")), pytest.raises(RunFolderError, match="in use by another run"):
        run(tiny_cfg(out=out))
    assert not (out / "metrics.jsonl").exists()


def test_partial_last_metrics_line_is_dropped_on_resume(tiny_cfg, tmp_path, monkeypatch):
    run(tiny_cfg(*STEPS, out=tmp_path / "whole"))
    out = tmp_path / "run"
    killed_run(tiny_cfg, monkeypatch, out, *STEPS)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "split": "train", "lo')  # killed while writing a row
    run(tiny_cfg(*STEPS, "resume=true", out=out))
    assert_same_rows(out, tmp_path / "whole")


def test_a_bad_metrics_line_before_the_last_is_named(tiny_cfg, tmp_path, monkeypatch):
    out = tmp_path / "run"
    killed_run(tiny_cfg, monkeypatch, out, *STEPS)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(["{oops", *lines]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 1: not a metrics row"):
        run(tiny_cfg(*STEPS, "resume=true", out=out))


def test_resume_between_logging_steps_logs_the_same_rows_and_tokens(tiny_cfg, tmp_path, monkeypatch):
    """Checkpoint at step 4, rows every 3 steps: the row at step 6 averages steps 4-6 either way."""
    steps = ("trainer.max_steps=6", "trainer.save_steps=2", "trainer.logging_steps=3")
    whole = run(tiny_cfg(*steps, out=tmp_path / "whole"))
    out = tmp_path / "run"
    killed_run(tiny_cfg, monkeypatch, out, *steps)
    resumed = run(tiny_cfg(*steps, "resume=true", out=out))
    assert_same_rows(out, tmp_path / "whole")
    assert resumed["tokens"] == whole["tokens"]


# -------------------------------------------------------------------- 3. nothing executed from a run folder


class _Planted:
    """A pickle that runs code when unpickled: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.mark.parametrize("name", ["rng-0.pt", "optimizer.pt"])
def test_a_planted_checkpoint_file_is_refused_not_run(tiny_cfg, tmp_path, monkeypatch, name):
    out = tmp_path / "run"
    killed_run(tiny_cfg, monkeypatch, out, *STEPS)
    marker = tmp_path / "marker"
    with open(out / "checkpoints" / "step-000004" / name, "wb") as f:
        pickle.dump({"state": _Planted(marker)}, f)
    with pytest.raises(Exception, match=r"refusing to load it"):
        run(tiny_cfg(*STEPS, "resume=true", out=out))
    assert not marker.exists()


# ------------------------------------------------------------------------------------- 4. the NaN guard


def test_nonfinite_weights_stop_the_run_and_are_never_named_last_good(tiny_cfg, tmp_path, monkeypatch):
    """Weights turned NaN by step 2 while its loss and gradient norm were finite: the old guard saved step 2 and
    named it the last good checkpoint at step 3's NaN loss."""
    real = TorchEngine.step

    def step(self):
        norm = real(self)
        if self.micro_steps == 2:
            with torch.no_grad():
                next(self.policy.parameters()).fill_(float("nan"))
        return norm

    monkeypatch.setattr(TorchEngine, "step", step)
    out = tmp_path / "run"
    with pytest.raises(
        trainer_mod.NonFiniteLossError, match=r"weights are non-finite after step 2.*step-000001"
    ):
        run(tiny_cfg("trainer.save_steps=1", "trainer.save_total_limit=0", out=out))
    for ckpt in (out / "checkpoints").glob("step-*"):
        assert all(torch.isfinite(v).all() for v in load_file(str(ckpt / "model.safetensors")).values()), ckpt


def test_resume_refuses_a_checkpoint_with_nonfinite_weights(tiny_cfg, tmp_path, monkeypatch):
    out = tmp_path / "run"
    killed_run(tiny_cfg, monkeypatch, out, *STEPS)
    opt = out / "checkpoints" / "step-000004" / "optimizer.pt"
    state = torch.load(opt, weights_only=True)
    name = next(iter(state["trainable"]))
    state["trainable"][name] = torch.full_like(state["trainable"][name], float("inf"))
    torch.save(state, opt)
    with pytest.raises(Exception, match=r"step-000004 holds non-finite weights"):
        run(tiny_cfg(*STEPS, "resume=true", out=out))


# ------------------------------------------------------------------------------------------ 5. bad data

GOOD = {"prompt": "q", "chosen": "a", "rejected": "b"}


def lines(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


DATA_CASES = {
    # name: (file content, what the error must say)
    "invalid_json_line": (lines(GOOD, GOOD) + '{"prompt": "q", "chosen": \n' + lines(GOOD), r"\.jsonl:3: row 2: invalid JSON"),
    "empty_file": ("", r"empty file"),
    "blank_lines_only": ("\n \n\n", r"empty file"),
    "binary_file": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 8, r"NUL byte at offset 8.*binary"),
    "utf16_without_bom": (lines(GOOD, GOOD).encode("utf-16-le"), r"UTF-16 without a byte-order mark"),
    "latin1_line": (lines(GOOD).encode() + '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"), r"\.jsonl:2: row 1: not UTF-8 text \(byte 0xe9"),
    "mixed_type_column": (lines(dict(GOOD, chosen="5"), dict(GOOD, chosen="5"), dict(GOOD, chosen=5), dict(GOOD, chosen="5")), r"\.jsonl:3: row 2: field 'chosen': expected a string like the other rows, got a number"),
    "not_an_object": (lines(GOOD) + "[1, 2]\n" + lines(GOOD), r"\.jsonl:2: row 1: expected a JSON object"),
    "all_rows_malformed": (lines(*[dict(GOOD, rejected="a")] * 3), r"\.jsonl:1: row 0: field 'rejected': identical .*all 3 rows are malformed"),
}  # fmt: skip


def load(path: Path, *overrides: str):
    from transformers import AutoTokenizer

    from align.preference_data import load_preference_data

    cfg = compose(["output_dir=unused", "dataset=local_file", f"dataset.path={path}", "dataset.eval_fraction=0",
                   "dataset.format=strings", *overrides]).dataset  # fmt: skip
    return load_preference_data(cfg, AutoTokenizer.from_pretrained(load.tokenizer), seed=0)


@pytest.fixture
def data_loader(tiny_model_dir):
    load.tokenizer = str(tiny_model_dir)
    return load


@pytest.mark.parametrize("mode", ["error", "skip"])
@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_is_named_by_file_row_and_field(data_loader, tmp_path, case, mode):
    content, needle = DATA_CASES[case]
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    row_level = case in ("invalid_json_line", "latin1_line", "mixed_type_column", "not_an_object")
    if mode == "skip" and row_level:
        data = data_loader(path, "dataset.on_malformed=skip")
        assert data.stats["train"]["dropped"] == 1  # the bad row, never a valid one
        assert all(data.train.dataset[i]["chosen_ids"] for i in range(len(data.train.dataset)))
        return
    with pytest.raises(MalformedDataError, match=needle) as e:
        data_loader(path, f"dataset.on_malformed={mode}")
    assert str(path) in str(e.value)


def test_mixed_types_keep_strings_as_written(data_loader, tmp_path):
    """datasets read the column as JSON and turned the string "5" into the number 5, blaming the valid rows."""
    rows = [dict(GOOD, chosen="5"), dict(GOOD, chosen=5), dict(GOOD, chosen="5")]
    data = data_loader(write_jsonl(tmp_path / "p.jsonl", rows), "dataset.on_malformed=skip")
    assert data.train.dataset["row"] == [0, 2]


def test_utf16_with_a_byte_order_mark_is_read(data_loader, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(lines(GOOD, dict(GOOD, chosen="c")).encode("utf-16"))
    assert data_loader(path).stats["train"]["kept"] == 2


def test_an_unreadable_parquet_file_is_named(data_loader, tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(MalformedDataError, match=r"p\.parquet: not a readable parquet file"):
        data_loader(path)


# ---------------------------------------------------------------------------- 6. configs that cannot work


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (
            "trainer.per_device_train_batch_size=0",
            "trainer.per_device_train_batch_size=0: must be at least 1",
        ),
        ("trainer.per_device_eval_batch_size=0", "trainer.per_device_eval_batch_size=0: must be at least 1"),
        (
            "trainer.gradient_accumulation_steps=0",
            "trainer.gradient_accumulation_steps=0: must be at least 1",
        ),
        ("trainer.logging_steps=0", "trainer.logging_steps=0: must be at least 1"),
        ("trainer.learning_rate=0", "trainer.learning_rate=0.0: must be a positive number"),
        ("trainer.learning_rate=-1e-5", "trainer.learning_rate=-1e-05: must be a positive number"),
        ("method.beta=0", "method.beta=0.0: must be a positive number"),
        ("method.beta=-0.1", "method.beta=-0.1: must be a positive number"),
        ("dataset.max_length=32", "dataset.max_length=32 is below dataset.max_prompt_length=64"),
        ("+trainer.learning_rat=1e-5", "trainer.learning_rat: not a key of TrainerConfig"),
        ("+method.bta=0.3", "method.bta: not a key of mio_method"),
        ("+model.build.hiden_size=8", "model.build.hiden_size: not a key of TinyBuildConfig"),
        ("dataset.on_malformed=drop", "dataset.on_malformed='drop': expected one of error, skip"),
        ("trainer.max_steps=0", "trainer.max_steps=0: must be -1"),
        ("trainer.adam_epsilon=0", "trainer.adam_epsilon=0.0: must be a positive number"),
        ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio=1.5: must be in [0, 1]"),
        ("method=cdpo method.label_smoothing=0.7", "method.label_smoothing=0.7: must be in [0, 0.5]"),
        ("device=gpu", "device='gpu': expected auto, cpu, cuda"),
        ("model.share_prompt=true model.attn_implementation=eager", "model.share_prompt=true needs sdpa"),
    ],
)
def test_a_value_that_cannot_work_fails_before_anything_loads(tiny_cfg, tmp_path, override, needle):
    out = tmp_path / "run"
    with pytest.raises(ConfigValueError) as e:
        run(tiny_cfg(*override.split(), out=out))
    assert needle in str(e.value)
    assert not out.exists(), "nothing may be written before the config is checked"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("trainer.precision=fp16", "Invalid value 'fp16', expected one of [auto, fp32, bf16]"),
        ("trainer.reference=none", "Invalid value 'none', expected one of [precompute, model]"),
        ("trainer.lr_scheduler=cosin", "Invalid value 'cosin', expected one of [linear, cosine, "),
        (
            "dataset.truncation_mode=keep_middle",
            "Invalid value 'keep_middle', expected one of [keep_end, keep_start]",
        ),
        (
            "model.attn_implementation=flash",
            "Invalid value 'flash', expected one of [sdpa, eager, flash_attention_2]",
        ),
        (
            "distributed.launcher=mpirun",
            "Invalid value 'mpirun', expected one of [none, torchrun, deepspeed]",
        ),
    ],
)
def test_a_choice_outside_its_list_fails_at_compose_time(tiny_cfg, tmp_path, override, needle):
    """Typed choices (align/config.py's Choice enums): the composed config never holds such a value."""
    from hydra.errors import ConfigCompositionException

    out = tmp_path / "run"
    with pytest.raises(ConfigCompositionException) as e:
        tiny_cfg(override, out=out)
    assert needle in str(e.value.__cause__) and override.split("=")[0] in str(e.value.__cause__)
    assert not out.exists()


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ("evaluate.overrides=[]", "unsafe_code=true"),  # mio8_mini runs model-written code
        ("evaluate.overrides=['unsafe_code=true','prompt.protocol=fancy']", "prompt.protocol='fancy'"),
        ("evaluate.overrides=['unsafe_code=true','backend.batch_sze=8']", "batch_sze"),
    ],
)
def test_evaluation_settings_are_checked_before_training(tiny_cfg, tmp_path, overrides, needle):
    out = tmp_path / "run"
    with pytest.raises(ConfigValueError, match=r"evaluate\.") as e:
        run(tiny_cfg("evaluate.benchmarks=mio8_mini", overrides, out=out))
    assert needle in str(e.value)
    assert not (out / "metrics.jsonl").exists()
    with pytest.raises(ConfigValueError, match="evaluate.benchmarks=nope"):
        validate(tiny_cfg("evaluate.benchmarks=nope", out=out))


def readme_training_commands() -> list[list[str]]:
    import shlex

    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    return [
        shlex.split(line.split("#")[0])[2:]
        for line in text.splitlines()
        if line.startswith("python align/run.py")
    ]


def test_every_readme_training_command_line_parses():
    """`"evaluate.overrides=[unsafe_code=true]"` did not parse (an unquoted `=` inside a list)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    commands = readme_training_commands()
    assert len(commands) >= 8
    parser = OverridesParser.create()
    for args in commands:
        parser.parse_overrides([a for a in args if a != "-m"])


def test_the_readme_evaluation_example_composes():
    line = next(c for c in readme_training_commands() if any(a.startswith("evaluate.overrides") for a in c))
    overrides = [a for a in line if a.startswith("evaluate.")]
    cfg = compose(["output_dir=x", *overrides])
    assert "unsafe_code=true" in cfg.evaluate.overrides


def test_a_truncated_weights_file_is_named(tiny_cfg, tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match=r"model\.safetensors"):
        run(tiny_cfg(f"model.name_or_path={model}", out=tmp_path / "run"))


# ------------------------------------------------------------------------------- 7. one line per error


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, str(REPO / "align" / "run.py"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_errors_print_as_one_line_with_the_traceback_behind_a_switch(tmp_path):
    args = ("trainer.per_device_train_batch_size=0", f"hydra.run.dir={tmp_path / 'x'}")
    p = cli(*args, env={"HYDRA_FULL_ERROR": "0"})
    assert p.returncode == 1
    assert "error: ConfigValueError: trainer.per_device_train_batch_size=0: must be at least 1" in p.stderr
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    full = cli(*args, env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr


# ------------------------------------------------------------------------ 8. tests that notice one-line bugs
