"""Every file under conf/ composes; misspelt keys and unknown names fail at compose time, naming them."""

from __future__ import annotations

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from align.config import CONF_DIR, compose

TRAIN_GROUPS = ("model", "method", "dataset", "deepspeed", "distributed", "trainer", "experiment", "paths")


def training_group_files():
    for group in TRAIN_GROUPS:
        for f in sorted((CONF_DIR / group).glob("*.yaml")):
            yield f"{group}={f.stem}"


@pytest.mark.parametrize("override", list(training_group_files()))
def test_every_training_group_file_composes(override):
    extra = ["dataset.path=/data/prefs.jsonl"] if override == "dataset=local_file" else []
    cfg = compose(["output_dir=unused", override, *extra])
    from align.run import validate

    validate(cfg)  # resolves every interpolation and checks the method name


def test_per_model_trainer_files_apply_to_a_model_of_that_name():
    for f in (CONF_DIR / "trainer" / "for_model").glob("*.yaml"):
        assert (CONF_DIR / "model" / f.name).exists(), f"trainer/for_model/{f.name} names no model"
    assert compose(["output_dir=x", "model=tiny"]).trainer.learning_rate == 1e-3
    # model=tiny_sft trains with model=tiny's values, held in one file (its own file only includes that one)
    assert set(yaml.safe_load((CONF_DIR / "trainer/for_model/tiny_sft.yaml").read_text())) == {"defaults"}
    assert (
        compose(["output_dir=x", "model=tiny_sft"]).trainer == compose(["output_dir=x", "model=tiny"]).trainer
    )
    assert compose(["output_dir=x", "model=mistral7b"]).trainer.learning_rate == 5e-7


def test_hub_models_share_one_base():
    for name, hub in (
        ("mistral7b", "HuggingFaceH4/mistral-7b-sft-beta"),
        ("qwen2_5_1_5b", "Qwen/Qwen2.5-1.5B-Instruct"),
    ):
        m = compose(["output_dir=x", f"model={name}"]).model
        assert m.name_or_path == hub and m.gradient_checkpointing and m.build is None and m.lora.r == 16


def test_experiment_overrides_groups_and_values():
    cfg = compose(["output_dir=x", "experiment=zephyr_dpo"])
    assert cfg.model.name_or_path == "alignment-handbook/zephyr-7b-sft-full"
    assert cfg.method.name == "dpo" and cfg.method.beta == 0.01 and cfg.deepspeed.zero_stage == 3
    swapped = compose(["output_dir=x", "experiment=zephyr_dpo", "method=mio", "method.beta=0.01"])
    assert swapped.method.name == "mio" and swapped.trainer.learning_rate == 5e-7


@pytest.mark.parametrize("name", sorted(f.stem for f in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")))
def test_hydra_launcher_files_compose(name):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from align.config import register_configs

    register_configs()
    overrides = ["output_dir=x", f"hydra/launcher={name}"] + (
        ["hydra.launcher.partition=gpu"] if name == "slurm" else []
    )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    if name == "parallel":  # Hydra's joblib launcher, jobs handed out one at a time
        assert "joblib" in cfg.hydra.launcher._target_ and cfg.hydra.launcher.batch_size == "1"
        return
    assert "submitit" in cfg.hydra.launcher._target_
    assert cfg.hydra.launcher.tasks_per_node == 1


def test_every_yaml_under_conf_is_covered_by_a_compose_test():
    """Training groups here; conf/toy/ and the evaluation configs by the toy and eval test modules."""
    owned_elsewhere = {"toy", "benchmarks", "model_base"}  # model_base: composed inside every hub model file
    for f in CONF_DIR.rglob("*.yaml"):
        rel = f.relative_to(CONF_DIR)
        top = rel.parts[0]
        if len(rel.parts) == 1:
            assert rel.stem in ("config", "evaluate"), rel
        elif top in owned_elsewhere or rel.parts[:2] == ("hydra", "launcher"):
            continue
        else:
            assert top in TRAIN_GROUPS, f"{rel}: a config group no compose test covers"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("method.bta=0.2", "bta"),
        ("trainer.learning_rat=1e-5", "learning_rat"),
        ("model.nme_or_path=x", "nme_or_path"),
        ("dataset.max_lenght=10", "max_lenght"),
    ],
)
def test_misspelt_key_fails_naming_it(override, needle):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as e:
        compose(["output_dir=x", override])
    assert needle in str(e.value) or needle in str(e.value.__cause__)


def test_misspelt_key_in_a_method_file_fails(tmp_path):
    """A typo inside a YAML file (not only on the command line) is caught by the method's schema."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from align.config import register_configs

    conf = tmp_path / "conf"
    (conf / "method").mkdir(parents=True)
    (conf / "config.yaml").write_text("defaults:\n  - method: typo\n  - _self_\n")
    (conf / "method" / "typo.yaml").write_text(
        "defaults:\n  - /schema/method@_here_: mio\n  - _self_\nbetta: 0.1\n"
    )
    register_configs()
    with (
        initialize_config_dir(config_dir=str(conf), version_base="1.3"),
        pytest.raises(ConfigCompositionException) as e,
    ):
        hydra_compose(config_name="config")
    assert "betta" in str(e.value) or "betta" in str(e.value.__cause__)


def test_unknown_method_lists_the_options():
    with pytest.raises(ConfigCompositionException, match="Could not find 'method/mioo'"):
        compose(["output_dir=x", "method=mioo"])


def test_the_schedule_choices_are_the_transformers_schedulers():
    """align.config.Schedule lists transformers.SchedulerType's values by hand (importing transformers at compose
    time costs seconds): the two must not drift apart."""
    from transformers import SchedulerType

    from align.config import Schedule

    assert [s.value for s in Schedule] == [s.value for s in SchedulerType]


def test_typed_choices_read_and_write_as_plain_strings():
    """A choice compares, formats and is written (config.yaml, the run's digest) as its plain string."""
    from align.config import to_container

    cfg = compose(["output_dir=x", "trainer.precision=bf16"])
    assert cfg.trainer.precision == "bf16" and f"{cfg.trainer.precision}" == "bf16"
    resolved = to_container(cfg)
    assert (
        type(resolved["trainer"]["precision"]) is str
        and type(resolved["model"]["attn_implementation"]) is str
    )
