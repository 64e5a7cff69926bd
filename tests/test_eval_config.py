"""eval/ configs: every preset composes, misspelt keys fail, unsafe or unknown settings stop before any work, the
prompt protocol is one explicit setting (Table 1's recipe sets it), and any model config can be evaluated."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from eval import benchmarks as bm
from eval import harness
from eval.config import checkpoint_slug, compose
from pipeline.evaluate import resolve_checkpoint

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (REPO / "conf" / "benchmarks").glob("**/*.yaml"))


def test_presets_found():
    assert {"mio8", "mio8_mini", "open_llm_math"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_names_known_benchmarks(preset, tmp_path):
    cfg = compose([f"benchmarks={preset}", f"output_dir={tmp_path}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    names = list(cfg.benchmarks.suite)
    assert names and all(name in bm.BENCHMARKS for name in names)
    assert cfg.benchmarks.name == preset


def test_default_config_composes_to_the_tiny_model_on_the_mini_copies():
    cfg = compose()
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["checkpoint"] is None and resolved["model"]["build"]["kind"] == "tiny"
    assert resolved["benchmarks"]["name"] == "mio8_mini"
    assert Path(resolved["benchmarks"]["local_data"]).is_dir()
    assert resolved["unsafe_code"] is False  # executing generated code is opt-in
    assert resolved["prompt"]["protocol"] == "chat"
    assert resolved["output_dir"].endswith(checkpoint_slug(resolved["model"]["name_or_path"]))


def test_any_model_config_is_evaluated_through_prepare_model_source(monkeypatch, tmp_path):
    """`python eval/run.py model=smollm2_135m`: the model group's config goes to align.models.prepare_model_source
    (which builds its folder: the tiny model, or the shipped GGUF); an explicit checkpoint skips it."""
    import align.models

    seen = []
    monkeypatch.setattr(
        align.models, "prepare_model_source", lambda m: seen.append(m.build.kind) or str(tmp_path)
    )
    cfg = compose(["model=smollm2_135m"])
    assert cfg.output_dir.endswith("HuggingFaceTB__SmolLM2-135M-Instruct")
    resolved = resolve_checkpoint(cfg)
    assert resolved.checkpoint == str(tmp_path) and seen == ["gguf"]
    assert resolved.output_dir == cfg.output_dir  # beside the run's logs, not in the folder's slug
    assert cfg.checkpoint is None  # the caller's config is left as it was
    given = compose([f"checkpoint={tmp_path}"])
    assert resolve_checkpoint(given) is given and seen == ["gguf"]


def test_table1_sets_the_prompt_protocol_explicitly():
    """The paper-scale recipe must not inherit a default: its evaluation overrides name the protocol."""
    import align.config

    train = align.config.compose(["experiment=table1_paper", "output_dir=unused"])
    overrides = list(train.evaluate.overrides)
    assert "prompt.protocol=chat" in overrides
    cfg = compose([f"benchmarks={train.evaluate.benchmarks}", *overrides])
    assert cfg.prompt.protocol == "chat" and cfg.benchmarks.name == "mio8"
    assert harness.protocol(cfg) == {
        "name": "chat",
        "apply_chat_template": True,
        "fewshot_as_multiturn": True,
        "system_instruction": None,
    }


def test_each_benchmark_runs_its_task_for_the_protocol():
    chat, plain = compose(["prompt.protocol=chat"]), compose(["prompt.protocol=plain"])
    tasks = {
        p: {b.name: harness.benchmark_task(c, b, e) for b, e in harness.preset_benchmarks(c)}
        for p, c in (("chat", chat), ("plain", plain))
    }
    assert (
        tasks["chat"]["humaneval"] == "mio_humaneval_instruct"
        and tasks["plain"]["humaneval"] == "mio_humaneval"
    )
    assert {k: v for k, v in tasks["chat"].items() if k != "humaneval"} == {
        k: v for k, v in tasks["plain"].items() if k != "humaneval"
    }
    assert harness.protocol(plain)["apply_chat_template"] is False


def test_mio8_is_the_papers_eight_and_the_mini_preset_mirrors_it():
    mio8 = compose(["benchmarks=mio8"]).benchmarks
    mini = compose(["benchmarks=mio8_mini"]).benchmarks
    eight = ["bbh", "humaneval", "leetcode", "gsm_plus", "math", "theoremqa", "svamp", "asdiv"]
    assert list(mio8.suite) == eight and list(mini.suite) == [*eight, "miniature"]  # + the miniature's own
    assert mio8.local_data is None and mini.local_data is not None
    for name in eight:
        assert (Path(mini.local_data) / name).is_dir(), f"no mini copy for {name}"


@pytest.mark.parametrize(
    "override",
    [
        "backend.batchsize=3",
        "benchmarks.suite.bbh.num_fewshots=3",
        "prompt.protocols=chat",
        "seed.random=1",
    ],
)
def test_misspelt_keys_fail_at_compose_time(override):
    with pytest.raises(ConfigCompositionException):
        compose([override])


def test_wrongly_typed_value_fails():
    with pytest.raises(ConfigCompositionException):
        compose(["code_timeout_s=soon"])


def test_code_benchmarks_need_the_unsafe_code_opt_in(tmp_path):
    cfg = compose([f"output_dir={tmp_path}", "checkpoint=/nonexistent/never-loaded"])
    with pytest.raises(PermissionError, match="unsafe_code=true"):
        harness.run(cfg)
    assert not any(tmp_path.iterdir())


def test_unknown_benchmark_in_a_preset_is_reported_with_the_known_names(tmp_path):
    from eval.config import BenchmarkEntry

    cfg = compose([f"output_dir={tmp_path}"])
    with open_dict(cfg):
        cfg.benchmarks.suite["gsm9k"] = BenchmarkEntry(num_fewshot=5)  # as a preset file naming it would
    with pytest.raises(KeyError, match="known: bbh"):
        harness.preset_benchmarks(cfg)


def test_an_unknown_protocol_fails_before_any_work(tmp_path):
    cfg = compose([f"output_dir={tmp_path}", "unsafe_code=true", "prompt.protocol=chatml"])
    with pytest.raises(ValueError, match="chat.*plain"):
        harness.check(cfg, harness.preset_benchmarks(cfg))
    cfg = compose(
        [f"output_dir={tmp_path}", "unsafe_code=true", "prompt.protocol=plain", "prompt.chat_template=x"]
    )
    with pytest.raises(ValueError, match="protocol=chat"):
        harness.check(cfg, harness.preset_benchmarks(cfg))


def test_generation_overrides_layer_preset_then_entry_then_top_level():
    cfg = compose(["+benchmarks.suite.bbh.gen_kwargs.max_gen_toks=8", "generation.temperature=0.5"])
    entries = dict((b.name, e) for b, e in harness.preset_benchmarks(cfg))
    assert harness.gen_kwargs(cfg, entries["bbh"]) == {"max_gen_toks": 8, "temperature": 0.5}
    assert harness.gen_kwargs(cfg, entries["asdiv"]) == {"max_gen_toks": 32, "temperature": 0.5}
    cfg = compose(["generation.max_gen_toks=4"])
    assert harness.gen_kwargs(cfg, {}) == {"max_gen_toks": 4}


def test_compose_works_inside_another_hydra_app(tmp_path):
    """The end of a training run composes the eval config while the training app's Hydra is initialised."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import align.config

    align.config.register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        assert GlobalHydra.instance().is_initialized()
        cfg = compose([f"checkpoint={tmp_path}", "benchmarks=mio8", f"output_dir={tmp_path / 'eval'}"])
    assert cfg.checkpoint == str(tmp_path) and list(cfg.benchmarks.suite)[0] == "bbh"


def test_checkpoint_slug():
    assert checkpoint_slug("HuggingFaceH4/mistral-7b-sft-beta") == "HuggingFaceH4__mistral-7b-sft-beta"
    a, b = checkpoint_slug("/runs/a/final"), checkpoint_slug("/runs/b/final")
    assert a.startswith("final-") and b.startswith("final-") and a != b
