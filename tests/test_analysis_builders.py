"""analysis/ on small synthetic run folders: Table 1's cells, bold and average, missing runs, the curves' data,
Fig 5's pairing and the report's links, all checked against the values written into the folders."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis import figures, tables
from analysis.collect import collect
from analysis.report import build
from eval.benchmarks import average

BENCHES = ["bbh", "humaneval", "leetcode", "gsm_plus", "math", "theoremqa", "svamp", "asdiv"]


def make_run(
    root: Path,
    model: str,
    method: str,
    scores: dict[str, float | None] | None,
    steps: int = 15,
    log_every: int = 5,
    eval_every: int = 10,
    offset: float = 0.0,
) -> Path:
    """A run folder in align/'s layout; metric values are simple functions of the step (and ``offset``)."""
    d = root / f"method-{method}__model-{model}"
    (d / ".hydra").mkdir(parents=True)
    config = {
        "model": {"name_or_path": f"/models/{model}"},
        "method": {"name": method, "beta": 0.1},
        "trainer": {
            "learning_rate": 1e-3,
            "max_steps": steps,
            "num_epochs": 1.0,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1,
        },
        "dataset": {"path": "/data/tiny_prefs"},
        "seed": 42,
        "evaluate": {"benchmarks": "mio8_mini"},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    (d / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": model, "method": method}}}})
    )
    (d / "results.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "steps": steps,
                "wall_seconds": 12.0,
                "world_size": 1,
                "eval": {"loss": 0.5 + offset, "rewards/accuracies": 0.7 + offset},
            }
        )
    )
    rows = []
    for step in range(log_every, steps + 1, log_every):
        rows.append(
            {
                "step": step,
                "split": "train",
                "rewards/chosen": 0.01 * step + offset,
                "rewards/rejected": -0.02 * step,
                "rewards/margins": 0.03 * step + offset,
                "rewards/accuracies": 0.5 + 0.01 * step,
                "logps/chosen": -40.0 + step,
                "logps/rejected": -40.0 - step,
                "mi/dv": 0.001 * step,
                "mi/js": -1.386 + 0.001 * step,
            }
        )
        if step % eval_every == 0 or step == steps:
            rows.append(
                {
                    "step": step,
                    "split": "eval",
                    "rewards/accuracies": 0.6 + offset,
                    "rewards/margins": 0.2 * step,
                }
            )
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if scores is not None:
        summary = {
            "preset": "mio8_mini",
            "scores": scores,
            "average": average(scores),
            "complete": None not in scores.values(),
        }
        (d / "eval" / "mio8_mini").mkdir(parents=True)
        (d / "eval" / "mio8_mini" / "summary.json").write_text(json.dumps(summary))
    return d


def scores_of(*values: float | None) -> dict[str, float | None]:
    return dict(zip(BENCHES, values, strict=True))


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """Two models x three methods; on model a: DPO best on bbh, MIO best on gsm_plus, a tie on math, all tie on
    humaneval; on model b one run has no evaluation and one has an unscored benchmark."""
    root = tmp_path / "runs"
    a = {
        "dpo": scores_of(0.50, 0.0, 0.10, 0.20, 0.30, 0.05, 0.40, 0.25),
        "nca_pair": scores_of(0.25, 0.0, 0.20, 0.30, 0.30, 0.10, 0.40, 0.50),
        "mio": scores_of(0.25, 0.0, 0.20, 0.60, 0.10, 0.10, 0.45, 0.50),
    }
    for method, s in a.items():
        make_run(root, "a", method, s, offset=0.1 if method == "mio" else 0.0)
    make_run(root, "b", "dpo", scores_of(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8))
    make_run(root, "b", "mio", None)
    make_run(root, "b", "simpo", scores_of(0.1, None, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9))
    return root


def md_rows(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()[2:]]


def test_csv_and_markdown_cells_equal_the_summary_scores(sweep_dir, tmp_path):
    paths = tables.write_tables(collect(sweep_dir), tmp_path / "out")
    csv = pd.read_csv(paths["table1_csv"])
    assert list(csv.columns[3:11]) == BENCHES
    assert len(csv) == 6
    for _, row in csv.iterrows():
        summary_file = Path(row["run_dir"]) / "eval" / "mio8_mini" / "summary.json"
        if not summary_file.exists():
            continue
        summary = json.loads(summary_file.read_text())
        assert row["summary"] == str(summary_file)
        for b in BENCHES:
            expected = summary["scores"][b]
            assert (math.isnan(row[b]) and expected is None) or row[b] == pytest.approx(expected)
    md = md_rows(paths["table1_md"].read_text())
    models = []
    for r in md:
        models.append(r[0] or models[-1])
    a_mio = next(r for r, m in zip(md, models, strict=True) if (m, r[1]) == ("a", "MIO"))
    assert [c.strip("*") for c in a_mio[2:10]] == [
        f"{100 * v:.1f}" for v in (0.25, 0.0, 0.20, 0.60, 0.10, 0.10, 0.45, 0.50)
    ]
    # rows: within each model block the baselines first, NCA-Pair then MIO last
    assert [r[1] for r in md] == ["DPO", "NCA-Pair", "MIO", "DPO", "SimPO", "MIO"]


def test_average_is_the_mean_of_the_row_and_none_until_complete(sweep_dir):
    df, benches = tables.table1_frame(collect(sweep_dir))
    complete = df.dropna(subset=benches)
    assert len(complete) == 4
    for _, row in complete.iterrows():
        assert row["average"] == pytest.approx(sum(row[b] for b in benches) / len(benches))
    simpo = df[(df["model"] == "b") & (df["method"] == "simpo")].iloc[0]
    assert math.isnan(simpo["humaneval"]) and math.isnan(simpo["average"])


def test_one_seed_bolds_a_unique_block_maximum_only(sweep_dir):
    """One seed per setting and no item count: the spread is 0, so the bold is a block's unique maximum (ties and
    an all-equal column have none)."""
    sweep = collect(sweep_dir)
    df, benches = tables.table1_frame(sweep)
    summary = tables.seed_summary(df, [*benches, "average"])
    best = tables.best_mask(summary, [*benches, "average"])
    a = summary["model"] == "a"
    for col in [*benches, "average"]:
        block = summary.loc[a, col]
        expected = (block == block.max()) & ((block == block.max()).sum() == 1)
        assert best.loc[a, col].tolist() == expected.tolist(), col
    label = dict(zip(summary.index, summary["method"] + "@" + summary["model"], strict=True))

    def bold(col):
        return sorted(label[i] for i in best.index[best[col]])

    assert bold("bbh") == ["dpo@a"]  # block b ties (0.1, 0.1): no bold there
    assert bold("humaneval") == []  # block a all 0; block b has one score only
    assert bold("math") == []  # a tie at the maximum: not bold
    assert bold("gsm_plus") == ["mio@a"]
    assert bold("asdiv") == ["simpo@b"]  # block a: MIO and NCA-Pair tie at 0.50
    assert bold("average") == ["mio@a"]  # 0.275 vs 0.25625 vs 0.225; block b: one complete row
    md = tables.to_markdown(df, benches)
    assert "**60.0**" in md and "**50.0**" in md and "**0.0**" not in md  # GSM-Plus MIO, BBH DPO


def test_seeds_fold_into_mean_and_spread_and_bold_needs_more_than_the_spread(tmp_path):
    """Three seeds each of DPO, MIO and NCA-Pair on one model (bbh):
    DPO 0.40, 0.50, 0.60 (mean 0.5, sd 0.1); MIO 0.55, 0.60, 0.65 (mean 0.6, sd 0.05): 0.1 apart, not more than
    DPO's sd 0.1, so no bold. gsm_plus: MIO 0.80, 0.81, 0.82 (sd 0.01) against at most 0.5 (sd 0.1): bold."""
    root = tmp_path / "runs"
    bbh = {"dpo": (0.40, 0.50, 0.60), "mio": (0.55, 0.60, 0.65), "nca_pair": (0.30, 0.30, 0.30)}
    gsm = {"dpo": (0.40, 0.50, 0.60), "mio": (0.80, 0.81, 0.82), "nca_pair": (0.1, 0.1, 0.1)}
    for method in bbh:
        for seed in range(3):
            d = make_run(
                root / f"s{seed}",
                "a",
                method,
                scores_of(bbh[method][seed], 0, 0, gsm[method][seed], 0, 0, 0, 0),
            )
            cfg = yaml.safe_load((d / "config.yaml").read_text())
            (d / "config.yaml").write_text(yaml.safe_dump({**cfg, "seed": seed}))
    sweep = collect(root)
    df, benches = tables.table1_frame(sweep)
    summary = tables.seed_summary(df, [*benches, "average"])
    assert len(summary) == 3 and set(summary["seeds"]) == {3}
    mio = summary[summary["method"] == "mio"].iloc[0]
    assert mio["bbh"] == pytest.approx(0.6) and mio["bbh/spread"] == pytest.approx(0.05)
    best = tables.best_mask(summary, ["bbh", "gsm_plus"])
    assert not best["bbh"].any()
    assert best["gsm_plus"].tolist() == (summary["method"] == "mio").tolist()
    md = tables.to_markdown(summary, benches, {"bbh": 27})
    assert "60.0 ± 5.0" in md and "**81.0 ± 1.0**" in md and "BBH (n=27)" in md and "| seeds |" in md


def test_one_seed_spread_is_the_binomial_standard_error():
    df = pd.DataFrame({"model": ["a"], "group": ["MIO"], "method": ["mio"], "x": [0.36]})
    summary = tables.seed_summary(df, ["x"], {"x": 100})
    assert summary["x/spread"].iloc[0] == pytest.approx(math.sqrt(0.36 * 0.64 / 100))


def test_a_run_without_evaluation_is_missing_not_zero(sweep_dir, tmp_path):
    paths = tables.write_tables(collect(sweep_dir), tmp_path / "out")
    csv = pd.read_csv(paths["table1_csv"])
    row = csv[(csv["model"] == "b") & (csv["method"] == "mio")].iloc[0]
    assert all(math.isnan(row[b]) for b in [*BENCHES, "average"])
    md_row = [r for r in md_rows(paths["table1_md"].read_text()) if r[1] == "MIO"][-1]
    assert md_row[2:] == [tables.MISSING] * 9
    tex = paths["table1_tex"].read_text()
    mio_b = [line for line in tex.splitlines() if line.startswith(" & MIO")][-1]
    assert mio_b.count("--") == 9 and "0.0" not in mio_b


def test_latex_marks_the_best_and_separates_model_blocks(sweep_dir, tmp_path):
    sweep = collect(sweep_dir)
    df, benches = tables.table1_frame(sweep)
    tex = tables.to_latex(df, benches)
    assert tex.count(r"\midrule") == 2
    assert r"\textbf{60.0}" in tex and r"\textbf{0.0}" not in tex
    assert "NCA-Pair" in tex and r"\begin{tabular}{llrrrrrrrrr}" in tex


def test_fig3_csv_holds_each_metric_at_the_logged_steps(sweep_dir, tmp_path):
    written = figures.fig3_training_curves(collect(sweep_dir), tmp_path / "fig")
    assert sorted(w.model for w in written) == ["a", "b"]
    for w in written:
        assert w.png.stat().st_size > 1000 and w.pdf.stat().st_size > 1000
    data = pd.read_csv(next(w.csv for w in written if w.model == "a"))
    assert set(data["split"]) == {"train"} and set(data["metric"]) == set(figures.FIG3_METRICS)
    mio = data[(data["method"] == "mio") & (data["metric"] == "rewards/chosen")]
    assert mio["step"].tolist() == [5, 10, 15]
    assert mio["value"].tolist() == pytest.approx([0.01 * s + 0.1 for s in (5, 10, 15)])
    assert mio["run_dir"].iloc[0].endswith("method-mio__model-a")
    logps = data[(data["method"] == "dpo") & (data["metric"] == "logps/rejected")]
    assert logps["value"].tolist() == pytest.approx([-45.0, -50.0, -55.0])


def test_fig5_pairs_mio_with_nca_pair_on_the_same_model_only(sweep_dir, tmp_path):
    sweep = collect(sweep_dir)
    written = figures.fig5_mio_vs_nca(sweep, tmp_path / "fig")
    assert [w.model for w in written] == ["a"]  # model b has no NCA-Pair run
    data = pd.read_csv(written[0].csv)
    assert set(data["method"]) == {"mio", "nca_pair"}
    held = data[(data["split"] == "eval") & (data["metric"] == "rewards/accuracies")]
    assert held["step"].tolist() == [10, 15, 10, 15]
    assert held["value"].tolist() == pytest.approx([0.6, 0.6, 0.7, 0.7])  # NCA-Pair rows first, then MIO
    diff = figures.mio_nca_max_difference(sweep).set_index(["split", "metric"])
    assert diff.loc[("train", "rewards/margins"), "max_abs_difference"] == pytest.approx(0.1)
    assert diff.loc[("train", "rewards/accuracies"), "max_abs_difference"] == pytest.approx(0.0)
    assert diff.loc[("eval", "rewards/accuracies"), "steps"] == 2


def test_mi_figure_holds_both_values_for_the_methods_with_a_reference_only(sweep_dir, tmp_path):
    """SimPO and ORPO log beta x mean log-prob as reward, no critic: the DV/JS figure leaves them out."""
    written = figures.fig_mi_estimates(collect(sweep_dir), tmp_path / "fig")
    data = pd.read_csv(next(w.csv for w in written if w.model == "b"))
    assert set(data["method"]) == {"dpo", "mio"}  # model b's simpo run is left out
    dv = data[(data["method"] == "dpo") & (data["metric"] == "mi/dv")]
    assert dv["value"].tolist() == pytest.approx([0.005, 0.010, 0.015])
    assert set(data["metric"]) == {"mi/dv", "mi/js"}
    assert "not an MI estimate" in figures.TITLES["mi/js"]


def test_report_embeds_the_table_figures_runs_and_toy_figures(sweep_dir, tmp_path):
    toy = tmp_path / "toy" / "results"
    toy.mkdir(parents=True)
    (toy / "fig2_likelihood_dynamics.png").write_bytes(b"\x89PNG fake")
    out = tmp_path / "out"
    report = build(sweep_dir, out, "tiny", toy_dir=toy)
    text = report.read_text()
    assert (out / "table1.md").read_text() in text
    assert "laptop-scale test of the paper's claims" in text and "## The paper's claims at this scale" in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all((out / link).exists() for link in links), [
        link for link in links if not (out / link).exists()
    ]
    for d in sorted(sweep_dir.iterdir()):
        assert d.name in text
    assert "fig2_likelihood_dynamics.png" in text
    assert "fig5_mio_vs_nca_pair_a.png" in text and "fig3_training_curves_b.png" in text
    assert "- b / MIO: no benchmark summary" in text
    assert "- b / SimPO: no score for humaneval" in text


def test_an_empty_or_missing_sweep_folder_gives_a_report_not_an_error(tmp_path):
    report = build(tmp_path / "nothing", tmp_path / "out", "paper")
    assert "0 run folders" in report.read_text()
    assert pd.read_csv(tmp_path / "out" / "table1.csv").empty


def test_a_snapshot_keeps_the_result_files_only_and_rebuilds_the_same_tables(sweep_dir, tmp_path):
    from analysis.snapshot import snapshot

    src = sweep_dir.parent  # tmp_path: runs/ inside, as reproduce-table1 writes it
    for d in sweep_dir.iterdir():  # what a snapshot leaves behind
        (d / "final").mkdir()
        (d / "final" / "model.safetensors").write_bytes(b"weights")
        if (d / "eval" / "mio8_mini").is_dir():
            (d / "eval" / "mio8_mini" / "samples").mkdir()
            (d / "eval" / "mio8_mini" / "samples" / "bbh.jsonl").write_text("{}\n")
            (d / "eval" / "mio8_mini" / "bbh.json").write_text("{}")
    direct, _ = tables.table1_frame(collect(sweep_dir))
    dest = tmp_path / "snap"
    snapshot(src, dest, "tiny")
    kept = {str(p.relative_to(dest / "runs")) for p in (dest / "runs").rglob("*") if p.is_file()}
    assert not any("final" in k or "samples" in k for k in kept)
    assert "method-dpo__model-a/eval/mio8_mini/bbh.json" in kept
    assert "method-dpo__model-a/eval/mio8_mini/summary.json" in kept
    snap, _ = tables.table1_frame(collect(dest / "runs"))
    cols = [c for c in direct.columns if c not in ("run_dir", "summary")]
    pd.testing.assert_frame_equal(direct[cols], snap[cols])
    assert (dest / "table1.csv").exists() and (dest / "report.md").exists()
    with pytest.raises(ValueError, match="holds the sweep"):
        snapshot(src, src.parent, "tiny")
