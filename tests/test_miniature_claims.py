"""analysis/claims.py on synthetic run folders: each of the paper's claims (a)-(d) judged over seeds, both ways."""

from __future__ import annotations

import json

import pytest
import yaml
from test_analysis_builders import make_run, scores_of

from analysis import claims
from analysis.collect import collect


def _run(root, method, seed, *, score, displacement, beta=0.1, margins=None):
    d = make_run(root / f"b{beta}" / f"s{seed}", "m", method, scores_of(score, 0, 0, 0, 0, 0, 0, 0))
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["seed"], cfg["method"]["beta"] = seed, beta
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r["displacement/chosen_per_token"] = displacement * r["step"] / 15
        if margins is not None:
            r["rewards/margins"] = margins
        r.setdefault("loss", 0.5)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _by_letter(root):
    return {c.letter: c for c in claims.check(collect(root), "mio8_mini")}


def test_claims_hold_when_every_seed_agrees(tmp_path):
    """DPO's chosen falls in every seed, MIO's rises; MIO ahead on the benchmark by 0.1 +- 0.01; NCA-Pair equal."""
    for seed in range(3):
        _run(tmp_path, "dpo", seed, score=0.30 + 0.01 * seed, displacement=-0.8)
        _run(tmp_path, "mio", seed, score=0.40 + 0.01 * seed + 0.001 * seed**2, displacement=0.2, margins=1.0)
        _run(
            tmp_path,
            "nca_pair",
            seed,
            score=0.40 + 0.01 * seed + 0.001 * seed**2,
            displacement=0.2,
            margins=1.0,
        )
    found = _by_letter(tmp_path)
    assert found["a"].verdict == "holds" and found["a"].numbers["dpo"]["below"] == 3
    assert found["a"].numbers["dpo"]["mean"] == pytest.approx(-0.8)
    assert found["b"].verdict == "holds" and found["b"].numbers["average"]["mio_wins"] == 3
    assert found["c"].verdict == "holds" and found["c"].numbers["score"] == 0
    assert found["d"].verdict == "not measured"


def test_claims_do_not_hold_or_are_mixed_when_the_seeds_say_so(tmp_path):
    """MIO's chosen falls too; MIO ahead in two seeds and behind in one (within the spread); NCA-Pair differs."""
    for seed, (mio, dpo) in enumerate([(0.40, 0.38), (0.35, 0.41), (0.42, 0.40)]):
        _run(tmp_path, "dpo", seed, score=dpo, displacement=-0.8)
        _run(tmp_path, "mio", seed, score=mio, displacement=-0.5)
        _run(tmp_path, "nca_pair", seed, score=mio + 0.05, displacement=-0.5)
    found = _by_letter(tmp_path)
    assert found["a"].verdict == "does not hold" and found["a"].numbers["mio"]["below"] == 3
    assert found["b"].verdict == "mixed" and found["b"].numbers["average"]["mio_wins"] == 2
    assert found["c"].verdict == "does not hold" and found["c"].numbers["score"] == pytest.approx(0.05)
    text = claims.markdown(list(found.values()))
    assert text.count("| (") == 4 and "**mixed**" in text


def test_the_best_beta_is_named_with_its_spread(tmp_path):
    """MIO at beta 0.1: 0.50 +- 0.01; at beta 1: 0.30 +- 0.01: clearly best at 0.1. DPO: 0.40 vs 0.41 +- 0.05."""
    for seed in range(3):
        for beta, mio, dpo in (
            (0.1, 0.49 + 0.01 * seed, 0.35 + 0.05 * seed),
            (1.0, 0.29 + 0.01 * seed, 0.36 + 0.05 * seed),
        ):
            _run(tmp_path, "mio", seed, score=mio, displacement=0.1, beta=beta)
            _run(tmp_path, "dpo", seed, score=dpo, displacement=-0.1, beta=beta)
    d = _by_letter(tmp_path)["d"]
    assert d.numbers["mio"]["best_beta"] == 0.1 and d.numbers["mio"]["clear"]
    assert d.numbers["dpo"]["best_beta"] == 1.0 and not d.numbers["dpo"]["clear"]
    assert d.verdict == "mixed" and "within the spread of beta=0.1" in d.detail


def test_fig3_over_seeds_plots_the_mean_displacement(tmp_path):
    import pandas as pd

    from analysis import figures

    for seed in range(3):
        _run(tmp_path / "runs", "dpo", seed, score=0.3, displacement=-0.3 * (seed + 1))
        _run(tmp_path / "runs", "mio", seed, score=0.4, displacement=0.1)
    (written,) = figures.fig3_over_seeds(collect(tmp_path / "runs"), tmp_path / "fig")
    assert written.png.stat().st_size > 1000 and written.kind == "fig3"
    data = pd.read_csv(written.csv)
    last = data[(data["metric"] == "displacement/chosen_per_token") & (data["step"] == 15)]
    assert last.groupby("method")["value"].mean().to_dict() == pytest.approx({"dpo": -0.6, "mio": 0.1})
