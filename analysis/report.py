"""Rebuild Table 1, the training figures and a Markdown report from whatever result files a sweep folder holds.

    python -m analysis.report --scale tiny           # reads outputs/table1/tiny/runs, writes outputs/table1/tiny/
    python -m analysis.report --runs DIR --out DIR   # any sweep folder (or a folder of run folders)
    make report SCALE=paper

It reads only result files (analysis.collect) and trains or evaluates nothing, so it also serves a sweep that is
still running or partly failed: missing runs and scores are listed as missing. Outputs in ``--out``: table1.{csv,
md,tex}, training_summary.{csv,md}, figures/ (PNG, PDF and the plotted data as CSV) and report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml

from analysis import claims, figures, tables
from analysis.collect import Sweep, collect
from common.records import shown_path

REPO = Path(__file__).resolve().parents[1]
SCALES = ("tiny", "paper")

SCALE_NOTES = {
    "tiny": (
        "**Scale: tiny (the miniature).** Every method trained from the miniature SFT model (a 0.23M-parameter "
        "Llama-style model pre-trained and SFT'd on this CPU on five verifiable task families, `miniature/`) on "
        "on-policy pairs sampled from it, 3 seeds, scored on its held-out benchmark (`miniature`: 500 problems, "
        "greedy, verified) and the offline mini copies of the eight (`mio8_mini`: a few dozen items, which this "
        "model cannot solve: pipeline checks only). A laptop-scale test of the paper's claims, not a reproduction "
        "of its numbers (which are not known)."
    ),
    "paper": (
        "**Scale: paper.** 7-8B SFT models, UltraInteract pairs and the eight benchmarks on the hub data. The paper's "
        "own hyperparameters and numbers are not known (shared/PAPER.md), so nothing here is a reproduction of its "
        "values: each cell is what our runs measured."
    ),
}


def default_out_dir(scale: str) -> Path:
    """``<paths.log_dir>/table1/<scale>``, with log_dir resolved as conf/paths/default.yaml does."""
    root = Path(os.environ.get("MIO_ROOT", REPO))
    return Path(os.environ.get("MIO_LOG_DIR", root / "outputs")) / "table1" / scale


def _rel(path: str | Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), start.resolve())


def _sweep_overrides(runs_dir: Path) -> list[str] | None:
    """The overrides of the sweep that made ``runs_dir`` (Hydra's multirun.yaml), if there is one."""
    f = runs_dir / "multirun.yaml"
    if not f.exists():
        return None
    overrides = (yaml.safe_load(f.read_text()) or {}).get("hydra", {}).get("overrides", {})
    return list(overrides.get("task") or []) + list(overrides.get("hydra") or [])


def _known(value) -> bool:
    return value is not None and value == value  # NaN != NaN


def _num(value) -> str:
    """A config value for the runs table: integers without ".0", "?" when unknown."""
    if not _known(value):
        return "?"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))
    return str(value)


def _run_table(sweep: Sweep, out: Path) -> str:
    """Each run's configuration in one line, with links to its config.yaml and results.json."""
    if sweep.runs.empty:
        return "No run folders found.\n"
    runs = tables.labelled_runs(sweep.runs)
    head = "| run folder | model | method | beta | lr | steps | batch x accum x ranks | dataset | seed | status | git |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for _, r in runs.iterrows():
        d = Path(r["run_dir"])
        links = f"[{r['run']}]({_rel(d, out)}) ([config]({_rel(d / 'config.yaml', out)})"
        links += f", [results]({_rel(d / 'results.json', out)}))" if (d / "results.json").exists() else ")"
        steps = r["steps"] if _known(r["steps"]) else r["max_steps"]
        cells = [
            links,
            f"{r['model']} (`{r['model_path']}`)",
            r["label"],
            _num(r["beta"]),
            _num(r["learning_rate"]),
            _num(steps),
            f"{_num(r['batch_per_device'])} x {_num(r['grad_accum'])} x {_num(r.get('world_size'))}",
            f"`{r['dataset']}`",
            _num(r["seed"]),
            r["status"],
            r["git"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _missing(df, benchmarks: list[str], sweep: Sweep) -> list[str]:
    """A line per run whose Table 1 row is incomplete, saying what is missing and why (its status)."""
    status = dict(zip(sweep.runs["run_dir"], sweep.runs["status"], strict=False))
    lines = []
    for _, row in df.iterrows():
        gaps = [b for b in benchmarks if row[b] != row[b]]
        if not benchmarks or gaps or row["summary"] != row["summary"]:
            what = (
                "no benchmark summary"
                if row["summary"] != row["summary"]
                else "no score for " + ", ".join(gaps)
            )
            lines.append(
                f"- {row['model']} / {row['label']}: {what} (training status: {status[row['run_dir']]})"
            )
    return lines


def _difference_table(diff) -> str:
    if diff.empty:
        return "(no model has both an MIO and an NCA-Pair run yet)\n"
    lines = ["| model | split | metric | steps compared | max abs difference |", "|---|---|---|---:|---:|"]
    for _, r in diff.iterrows():
        lines.append(
            f"| {r['model']} | {r['split']} | {r['metric']} | {r['steps']} | {r['max_abs_difference']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def _figure_section(written: list[figures.FigureFiles], kind: str, out: Path) -> list[str]:
    lines = []
    for f in (w for w in written if w.kind == kind):
        lines += [
            f"![{f.caption}]({_rel(f.png, out)})",
            "",
            f"{f.caption} [PDF]({_rel(f.pdf, out)}), [data]({_rel(f.csv, out)}).",
            "",
        ]
    return lines or ["(no runs with the needed metrics yet)", ""]


def _toy_section(toy_dir: Path, out: Path) -> list[str]:
    pngs = sorted(toy_dir.glob("*.png")) if toy_dir.exists() else []
    if not pngs:
        return [f"No toy figures under `{toy_dir}` yet (`make toy` writes them).", ""]
    lines = [f"From `{_rel(toy_dir, REPO) if toy_dir.is_relative_to(REPO) else toy_dir}` (`make toy`)."]
    readme = toy_dir.parent / "README.md"
    if readme.exists():
        lines[0] += f" What each shows: [toy/README.md]({_rel(readme, out)})."
    lines.append("")
    for p in pngs:
        lines += [f"**{p.stem}**", "", f"![{p.stem}]({_rel(p, out)})", ""]
    return lines


def build(
    runs_dir: str | Path,
    out_dir: str | Path,
    scale: str = "tiny",
    preset: str | None = None,
    toy_dir: str | Path = REPO / "toy" / "results",
) -> Path:
    """Collect ``runs_dir``, write the tables, figures and ``report.md`` into ``out_dir``; returns report.md."""
    runs_dir, out = Path(runs_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sweep = collect(runs_dir)
    preset = preset or tables.choose_preset(sweep)
    paths = tables.write_tables(sweep, out, preset)
    written = figures.write_figures(sweep, out / "figures")
    df, benchmarks = tables.table1_frame(sweep, preset)
    status = sweep.runs["status"].value_counts().to_dict() if not sweep.runs.empty else {}
    overrides = _sweep_overrides(runs_dir)
    log = out / "reproduce_log.jsonl"
    invocations = [json.loads(line) for line in log.read_text().splitlines() if line] if log.exists() else []

    lines = [
        f"# Table 1 sweep: SCALE={scale}",
        "",
        SCALE_NOTES.get(scale, ""),
        "",
        f"Built {time.strftime('%Y-%m-%d %H:%M:%S')} by `python -m analysis.report` from `{shown_path(runs_dir)}`: "
        f"{len(sweep.runs)} run folders ({', '.join(f'{n} {s}' for s, n in status.items()) or 'none'}).",
    ]
    if overrides is not None:
        lines.append(f"Sweep overrides (Hydra's multirun.yaml): `{' '.join(overrides)}`.")
    if invocations:
        lines += [
            "",
            f"`make reproduce-table1` invocations on this folder ({_rel(log, out)}; a rerun that finds every job "
            "done only checks, in seconds):",
            "",
            "| started | sweep seconds | exit code | command |",
            "|---|---:|---:|---|",
            *(
                f"| {r['started']} | {r['sweep_seconds']:.0f} | {r['returncode']} | `{r['command']}` |"
                for r in invocations[-10:]
            ),
        ]
    found = claims.check(sweep, preset)
    (out / "claims.json").write_text(json.dumps([c.__dict__ for c in found], indent=1, default=str) + "\n")
    lines += [
        "",
        f"## Table 1: benchmark scores (preset `{preset}`)",
        "",
        "Scores x 100: the mean over seeds, ± the standard deviation over seeds where there are several (with one "
        "seed the spread is the binomial standard error over the n items, shown in each header). **Bold**: better "
        "than every other method on the same base model by more than the larger of the two spreads; ties and "
        "differences within the spread are not bold. Avg.: the mean of the preset's benchmarks as `summary.json` "
        f"records it. {tables.MISSING}: no score. Files: [CSV]({_rel(paths['table1_csv'], out)}) (every run's "
        f"fractions, with its run folder and summary file), [per setting]({_rel(paths['table1_seeds_csv'], out)}) "
        f"(means and spreads), [Markdown]({_rel(paths['table1_md'], out)}), "
        f"[LaTeX]({_rel(paths['table1_tex'], out)}).",
        "",
        paths["table1_md"].read_text() if len(df) else "No runs yet.\n",
        "## The paper's claims at this scale",
        "",
        "Each claim judged over seeds ('holds': in every seed, and a difference of means larger than its spread; "
        "'mixed': not every seed agrees or the difference is within the spread). Numbers from `metrics.jsonl` and "
        "the benchmark summaries; also in [claims.json](claims.json).",
        "",
        claims.markdown(found),
        "## The miniature benchmark per family",
        "",
        "`exact_match_<family>` of each run's miniature result, x 100, mean ± sd over seeds.",
        "",
        claims.family_table(sweep, preset),
    ]
    missing = _missing(df, benchmarks, sweep)
    if missing:
        lines += ["Missing:", "", *missing, ""]
    lines += [
        "## Training summary (held-out set at the end of training)",
        "",
        "From each run's `results.json` (`eval`: the held-out pairs at the last step). "
        f"[CSV]({_rel(paths['training_csv'], out)}).",
        "",
        tables.training_markdown(tables.training_frame(sweep)),
        "## Fig 3: training curves",
        "",
        *_figure_section(written, "fig3", out),
        "## Fig 5: MIO vs NCA-Pair",
        "",
        "At its default knobs MIO's per-pair loss equals NCA-Pair's term for term "
        "(`tests/test_losses.py::test_mio_equals_nca_pair_at_default_knobs`), so with the same beta, data and seed "
        "the two runs should coincide up to floating-point rounding (the two formulas round differently, and "
        "training can amplify that over steps); the largest difference between their logged values, measured "
        "from metrics.jsonl:",
        "",
        _difference_table(figures.mio_nca_max_difference(sweep)),
        *_figure_section(written, "fig5", out),
        "## Batch MI estimates: DV (MINE) vs JS",
        "",
        *_figure_section(written, "mi", out),
        "## Toy figures",
        "",
        *_toy_section(Path(toy_dir), out),
        "## Runs and their configs",
        "",
        _run_table(sweep, out),
        "## Where every number comes from",
        "",
        "- Table 1 cell: `<run>/eval/<preset>/summary.json`, `scores[<benchmark>]`; that benchmark's full record "
        "is `<run>/eval/<preset>/<benchmark>.json` and its per-item answers `samples/<benchmark>.jsonl` "
        "(eval/README.md). Avg.: the same file's `average`.",
        "- Training summary: `<run>/results.json`, `eval` (held-out metrics at the last step), `steps`, "
        "`wall_seconds`; hyperparameters from `<run>/config.yaml`.",
        "- Curves: the rows of `<run>/metrics.jsonl` (`split` train: each logged step's batches; eval: the held-out "
        "set), exactly as in each figure's CSV.",
        "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="tiny", help="which sweep (default: tiny)")
    parser.add_argument("--runs", type=Path, help="sweep folder (default: <out>/runs)")
    parser.add_argument("--out", type=Path, help="output folder (default: outputs/table1/<scale>)")
    parser.add_argument("--preset", help="benchmark preset for Table 1 (default: the runs' configured one)")
    args = parser.parse_args(argv)
    out = args.out or default_out_dir(args.scale)
    report = build(args.runs or out / "runs", out, args.scale, args.preset)
    print(f"report: {report}")
    print(f"table:  {out / 'table1.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
