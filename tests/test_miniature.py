"""The miniature: task generators and verifiers, the benchmark, the base-model build (test-size spec) and its cache,
the on-policy pair builder, and the lm-eval task scored through its verifiers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from align.config import compose
from align.models import prepare_model_source
from miniature import pairs, tasks
from miniature.build import build_tokenizer, corpora, spec_key

REPO = Path(__file__).resolve().parents[1]
# A test-size build: the same builder and tokenizer, a 2-layer 32-wide model, a few steps, a few pair prompts.
SMALL = [
    "model.build.hidden_size=32",
    "model.build.intermediate_size=64",
    "model.build.num_layers=2",
    "model.build.num_heads=2",
    "model.build.pretrain_docs=400",
    "model.build.fact_docs=40",
    "model.build.pretrain_steps=6",
    "model.build.batch_size=8",
    "model.build.sft_docs=100",
    "model.build.sft_steps=3",
    "model.build.max_new_tokens=8",
    "model.build.pairs.train_prompts=20",
    "model.build.pairs.test_prompts=10",
    "model.build.pairs.samples=2",
    "model.build.threads=1",
]


def small_cfg(root: Path, *overrides: str):
    return compose(
        [
            "output_dir=unused",
            "model=mini_sft",
            f"model.name_or_path={root / 'model'}",
            f"model.build.pairs.dir={root / 'pairs'}",
            *SMALL,
            *overrides,
        ]
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("miniature")
    cfg = small_cfg(root)
    return cfg, Path(prepare_model_source(cfg.model))


@pytest.mark.parametrize(
    "family, text, gold, ok",
    [
        ("add", "7+5=12 -> 2; 4+8+1=13 -> 32; carry 1 -> 132. Answer: 132", "132", True),
        ("add", "Answer: 0132.", "132", True),  # numbers compare as integers; a final period is dropped
        ("add", "Answer: 131", "132", False),
        ("add", "132", "132", False),  # no "Answer:"
        ("add", "Answer: 132\nAnswer: 7", "132", True),  # the first answer counts (a run-on is not scored)
        ("add", "Answer: 7\nAnswer: 132", "132", False),
        ("word", "Answer: 12 apples", "12", False),  # a number task wants the number alone
        ("parity", "Last digit 7, so odd. Answer: odd", "odd", True),
        ("string", "Answer: BUKAM", "BUKAM", True),
        ("string", "Answer: bukam", "BUKAM", False),  # words compare exactly
    ],
)
def test_verifier_by_hand(family, text, gold, ok):
    assert tasks.verify(family, text, gold) is ok


@pytest.mark.parametrize("family", sorted(tasks.FAMILIES))
def test_every_demonstration_verifies_and_generation_is_seeded(family):
    drawn = tasks.problems(family, 300, seed=7)
    assert drawn == tasks.problems(family, 300, seed=7) and drawn != tasks.problems(family, 300, seed=8)
    assert len({p.question for p in drawn}) == len(drawn)
    for p in drawn:
        assert tasks.verify(family, p.solution, p.answer), p
        assert len(p.question) + len(p.solution) < 200  # fits max_length with the chat template


def test_column_addition_is_right():
    """The worked solution's partial results grow a digit at a time and end at the sum."""
    for p in tasks.problems("add", 500, seed=3):
        a, b = (
            int(x)
            for x in p.question.rstrip("?.")
            .replace("What is ", "")
            .replace("Add ", "")
            .replace(" and ", " + ")
            .split(" + ")
        )
        assert int(p.answer) == a + b
        assert p.solution.split(" -> ")[-1].split(".")[0] == str(a + b)


def test_benchmark_is_fixed_and_its_local_copy_matches():
    rows = tasks.benchmark_rows()
    assert len(rows) == 500 and len({r["question"] for r in rows}) == 500
    assert {r["family"] for r in rows} == set(tasks.FAMILIES)
    copy = REPO / "eval" / "tasks" / "mini" / "miniature" / "mio_miniature.jsonl"
    assert [json.loads(line) for line in copy.read_text().splitlines()] == rows, (
        "python -m miniature benchmark"
    )


def test_training_corpora_hold_no_benchmark_or_pair_question(tmp_path):
    cfg = compose(["output_dir=x", "model=mini_sft", *SMALL, f"model.build.pairs.dir={tmp_path}"])
    spec = OmegaConf.to_container(cfg.model.build, resolve=True)
    data = corpora(spec)
    held = {p.question for p in tasks.benchmark()}
    held |= {
        p.question for split in pairs.pair_prompts(spec["families"], spec["pairs"]).values() for p in split
    }
    assert not any(p.question in held for p in data["sft"])
    assert not any(
        d.split("\n")[0].removeprefix("Question: ") in held for d in data["pretrain"] if d.startswith("Q")
    )
    prompts = pairs.pair_prompts(spec["families"], spec["pairs"])
    assert not {p.question for p in prompts["train"]} & {p.question for p in prompts["test"]}


def test_tokenizer_is_character_level_and_matches_the_chat_prompt_the_model_is_trained_on():
    from align.preference_data import Tokenize

    tok = build_tokenizer(256)
    text = "What is 47 + 85?"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert len(tok(text, add_special_tokens=False).input_ids) == len(text)
    out = Tokenize(tok, 256, 128, "keep_end")(
        [{"role": "user", "content": text}], "Answer: 132", "Answer: 131"
    )
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    assert (
        out["prompt_ids"] == tok(rendered).input_ids
    )  # BOS once, then the template: what lm-eval's chat path sends
    assert tok.decode(out["chosen_ids"]) == "Answer: 132</s>"


def test_build_loads_through_from_pretrained_and_is_cached_by_its_spec(built, tmp_path):
    cfg, folder = built
    spec = OmegaConf.to_container(cfg.model.build, resolve=True)
    record = json.loads((folder / "miniature_build.json").read_text())
    assert record["key"] == spec_key(spec) and record["benchmark_accuracy"]["add"]["n"] == 100
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert Path(prepare_model_source(cfg.model)) == folder  # same spec: reused, not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert model.config.vocab_size == len(tok) and tok.chat_template
    # the pairs' settings are not the model's: changing them keeps the model
    assert spec_key({**spec, "pairs": {"samples": 9}}) == record["key"]
    assert spec_key({**spec, "seed": 1}) != record["key"]


def test_same_spec_gives_the_same_weights(built, tmp_path):
    from safetensors.torch import load_file

    _, folder = built
    again = Path(prepare_model_source(small_cfg(tmp_path).model))
    a, b = load_file(str(folder / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
    assert (folder / "../pairs/train.jsonl").resolve().read_text() == (
        tmp_path / "pairs" / "train.jsonl"
    ).read_text()


def test_pairs_record_how_many_prompts_gave_a_pair(built):
    cfg, _ = built
    record = json.loads((Path(cfg.model.build.pairs.dir) / "pairs_build.json").read_text())
    for split, n in (("train", 20), ("test", 10)):
        counts = record["splits"][split]["all"]
        assert counts["prompts"] == n and counts["pairs"] + counts["all_right"] + counts["all_wrong"] == n
        rows = (Path(cfg.model.build.pairs.dir) / f"{split}.jsonl").read_text().splitlines()
        assert len(rows) == counts["pairs"]


def test_a_pair_is_a_verified_right_answer_against_a_wrong_one(monkeypatch):
    """A scripted sampler: per prompt, answers that are all right, all wrong, or mixed."""
    import miniature.generate

    probs = tasks.problems("add", 3, seed=0)
    script = [
        [probs[0].solution, probs[0].solution],  # all right: no pair
        ["Answer: 1", "Answer: 2"],  # all wrong: no pair
        ["Answer: 1", probs[2].solution],  # a pair
    ]
    monkeypatch.setattr(miniature.generate, "generate", lambda *a, **k: script)
    rows, counts = pairs.make_pairs(None, None, probs, {"samples": 2, "temperature": 1.0}, 8, seed=0)
    assert counts["all"] == {"prompts": 3, "pairs": 1, "all_right": 1, "all_wrong": 1}
    (row,) = rows
    assert row["chosen"][-1]["content"] == probs[2].solution and row["rejected"][-1]["content"] == "Answer: 1"
    assert (
        row["chosen"][0] == {"role": "user", "content": probs[2].question} and row["gold"] == probs[2].answer
    )
    assert counts["add"]["sample_accuracy"] == pytest.approx(3 / 6)


def test_the_default_training_config_is_the_miniature():
    cfg = compose(["output_dir=x"])
    assert cfg.model.build.kind == "miniature" and cfg.dataset.path == cfg.model.build.pairs.dir
    assert cfg.evaluate.benchmarks == "mio8_mini" and "benchmarks.name=miniature" in cfg.evaluate.overrides


def test_benchmark_scores_through_the_verifier_in_lm_eval(tmp_path):
    """The real task definition (eval/tasks/miniature) with a scripted model: gold solutions score 1, per family."""
    from eval_fixtures import ScriptedLM

    from eval.config import compose as eval_compose
    from eval.harness import run
    from miniature.train import parts

    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    keep = [
        f"~benchmarks.suite.{n}"
        for n in ("bbh", "humaneval", "leetcode", "gsm_plus", "math", "theoremqa", "svamp", "asdiv")
    ]
    for mode, score in (("right", 1.0), ("wrong", 0.0), ("run_on", 1.0)):
        cfg = eval_compose(
            [f"checkpoint={checkpoint}", f"output_dir={tmp_path / mode}", "bootstrap_iters=0", *keep]
        )
        summary = run(cfg, lm=ScriptedLM(mode=mode))
        assert summary["scores"] == {"miniature": score}
        record = json.loads((tmp_path / mode / "mio8_mini" / "miniature.json").read_text())
        per_family = record["metrics"]["mio_miniature"]
        assert {f: per_family[f"exact_match_{f},none"] for f in tasks.FAMILIES} == dict.fromkeys(
            tasks.FAMILIES, score
        )
        assert parts(tmp_path / mode / "mio8_mini") == {"miniature": dict.fromkeys(tasks.FAMILIES, score)}


def test_before_and_after_of_a_run(tiny_cfg, tmp_path):
    """make train's report on a finished run: held-out pairs' likelihood accuracy of the start and final models."""
    from align.run import run
    from miniature.train import compare, describe

    out = tmp_path / "run"
    run(tiny_cfg(out=out))
    numbers = compare(out)
    pairs_ = numbers["held_out_pairs"]
    assert pairs_["n"] == 16 and 0 <= pairs_["likelihood_accuracy_before"] <= 1
    assert json.loads((out / "before_after.json").read_text()) == numbers
    assert (
        "held-out pairs (n=16)" in describe(numbers) and "benchmarks" not in numbers
    )  # no evaluation configured


def test_make_trains_report_shows_each_family_before_and_after():
    from miniature.train import describe

    numbers = {
        "run": "r",
        "start_model": "s",
        "benchmarks": {
            "preset": "miniature",
            "before": {"miniature": 0.2},
            "after": {"miniature": 0.3},
            "parts_before": {"miniature": {"add": 0.1, "word": 0.3}},
            "parts_after": {"miniature": {"add": 0.25}},
        },
    }
    lines = describe(numbers).splitlines()
    assert lines[-3:] == [
        "  miniature      20.0 ->   30.0",
        "    add          10.0 ->   25.0",
        "    word         30.0 ->    n/a",
    ]
