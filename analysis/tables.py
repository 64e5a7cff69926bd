"""Table 1 (methods per base model x the benchmarks and their average) as CSV, Markdown and LaTeX, and a training
summary table, built from ``analysis.collect`` frames.

Scores are the ``scores`` of each run's ``<run>/eval/<preset>/summary.json`` and the average is that file's
``average`` (``eval.benchmarks.average``: the one definition, None until every benchmark is scored), so nothing
here recomputes a score. ``table1.csv`` holds every run's fractions in [0, 1] with its run folder and summary file.
The Markdown and LaTeX tables have one row per (model, method, beta) over its seeds: the mean x 100 with one decimal,
``± spread`` where there are several seeds, and each benchmark's item count in its header. The spread is the
standard deviation over seeds (ddof 1); with one seed, the binomial standard error over the n items. Within each
base model's block a cell is bold only when its mean beats every other row's by more than the larger of the two
spreads (so ties and differences within the spread are never bold). A run without a score shows "n/a", never 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.collect import Sweep

# The starting (SFT) model itself, evaluated without preference training (analysis/reproduce.py): its method name.
START = "start"
# Row order inside a model's block: the start, the baselines, then NCA-Pair and MIO last, the pair Fig 5 compares.
METHOD_ORDER = (
    START,
    "dpo",
    "cdpo",
    "ipo",
    "hinge",
    "bco_pair",
    "apo_zero",
    "sppo_hard",
    "orpo",
    "simpo",
    "nca_pair",
    "mio",
)
METHOD_LABELS = {
    START: "start (SFT, no preference training)",
    "mio": "MIO",
    "dpo": "DPO",
    "cdpo": "cDPO",
    "ipo": "IPO",
    "hinge": "Hinge (SLiC)",
    "nca_pair": "NCA-Pair",
    "bco_pair": "BCO-Pair",
    "orpo": "ORPO",
    "simpo": "SimPO",
    "apo_zero": "APO-zero",
    "sppo_hard": "SPPO-hard",
}
BENCHMARK_LABELS = {
    "bbh": "BBH",
    "humaneval": "HumanEval",
    "leetcode": "LeetCode",
    "gsm_plus": "GSM-Plus",
    "math": "MATH",
    "theoremqa": "TheoremQA",
    "svamp": "SVAMP",
    "asdiv": "ASDiv",
    "miniature": "Miniature",
}
AVERAGE = "average"
MISSING = "n/a"


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def _method_rank(name: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(name), "") if name in METHOD_ORDER else (len(METHOD_ORDER), str(name))


def labelled_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` sorted by model then ``METHOD_ORDER``, with ``label``: the method's display name, plus its beta when
    the model has that method at several betas, plus the run folder's name when a (model, method, beta) still
    occurs more than once (another seed)."""
    df = runs.copy()
    if "beta" not in df:
        df["beta"] = None
    df["label"] = df["method"].map(method_label)
    betas = df.groupby(["model", "method"], dropna=False)["beta"].transform(lambda b: b.nunique() > 1)
    if betas.any():
        df.loc[betas, "label"] = [
            f"{lab} (beta={_num(b)})"
            for lab, b in zip(df.loc[betas, "label"], df.loc[betas, "beta"], strict=True)
        ]
    df["group"] = df["label"]
    dup = df.duplicated(["model", "label"], keep=False)
    if dup.any():
        df.loc[dup, "label"] = [
            f"{lab} ({run})" for lab, run in zip(df.loc[dup, "label"], df.loc[dup, "run"], strict=True)
        ]
    df["_rank"] = df["method"].map(_method_rank)
    df["_beta"] = pd.to_numeric(df["beta"], errors="coerce")
    df = df.sort_values(["model", "_rank", "_beta", "run"]).drop(columns=["_rank", "_beta"])
    return df.reset_index(drop=True)


def _num(value) -> str:
    return "?" if value is None or value != value else f"{float(value):g}"


def choose_preset(sweep: Sweep) -> str | None:
    """The benchmark preset the runs were configured with (the most common), else the most common one scored."""
    configured = sweep.runs["preset"].dropna() if "preset" in sweep.runs else pd.Series(dtype=object)
    if len(configured):
        return configured.value_counts().index[0]
    if len(sweep.scores):
        return sweep.scores["preset"].value_counts().index[0]
    return None


def table1_frame(sweep: Sweep, preset: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per run: model, method, label, group, seed, a column per benchmark, ``average``, run_dir, summary.

    Returns the frame and the benchmark columns in the preset's order (as its summary.json lists them).
    Runs with no summary for the preset are kept with NaN scores. ``group`` names the row of Table 1 the run
    belongs to (its method and beta: the seeds of one setting share it).
    """
    preset = preset or choose_preset(sweep)
    scores = sweep.scores[sweep.scores["preset"] == preset]
    benchmarks = list(dict.fromkeys(scores["benchmark"]))
    wide = (
        scores.pivot_table(
            index="run_dir", columns="benchmark", values="score", aggfunc="first", dropna=False
        )
        if len(scores)
        else pd.DataFrame(index=pd.Index([], name="run_dir"))
    )
    per_run = scores.groupby("run_dir").agg(average=("average", "first"), summary=("summary", "first"))
    runs = labelled_runs(sweep.runs)
    if "seed" not in runs:
        runs["seed"] = None
    runs = runs[["run_dir", "model", "method", "label", "group", "seed"]]
    df = runs.merge(wide.reindex(columns=benchmarks), left_on="run_dir", right_index=True, how="left")
    df = df.merge(per_run, left_on="run_dir", right_index=True, how="left")
    cols = ["model", "method", "label", *benchmarks, AVERAGE, "run_dir", "summary", "group", "seed"]
    return df[cols], benchmarks


def item_counts(sweep: Sweep, preset: str | None = None) -> dict[str, int]:
    """{benchmark: items scored}, where every run scored the same number (the column header's n)."""
    preset = preset or choose_preset(sweep)
    scores = sweep.scores[sweep.scores["preset"] == preset]
    if "n" not in scores:
        return {}
    out = {}
    for bench, n in scores.groupby("benchmark")["n"]:
        n = n.dropna().unique()
        if len(n) == 1:
            out[bench] = int(n[0])
    return out


def seed_summary(df: pd.DataFrame, columns: list[str], n: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per (model, group) of ``table1_frame``'s runs: ``seeds`` (runs), and per column the mean over the
    runs (``<col>``) and its spread (``<col>/spread``): the standard deviation over seeds (ddof 1), or with one run
    the binomial standard error sqrt(p (1 - p) / n) when the column's item count ``n`` is known (else 0)."""
    n = n or {}
    rows = []
    for (model, group), block in df.groupby(["model", "group"], sort=False):
        row = {"model": model, "label": group, "method": block["method"].iloc[0], "seeds": len(block)}
        for col in columns:
            values = block[col].dropna()
            if len(values) < len(block):  # a seed without the score: the mean would hide it
                row[col], row[f"{col}/spread"] = math.nan, math.nan
                continue
            mean = float(values.mean())
            if len(values) > 1:
                spread = float(values.std(ddof=1))
            elif col in n and n[col] > 0:
                spread = math.sqrt(mean * (1 - mean) / n[col])
            else:
                spread = 0.0
            row[col], row[f"{col}/spread"] = mean, spread
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=["model", "label", "method", "seeds"]
        + [c for col in columns for c in (col, f"{col}/spread")],
    )


def best_mask(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """True where a row's value beats every other row of its model block by more than the larger of the two
    spreads (``<col>/spread`` columns; 0 where absent). Ties, and differences within the spread, are never bold."""
    mask = pd.DataFrame(False, index=df.index, columns=columns)
    for _, block in df.groupby("model", sort=False):
        for col in columns:
            values = block[col].dropna()
            if len(values) < 2:
                continue
            spread = block.get(f"{col}/spread", pd.Series(0.0, index=block.index)).fillna(0.0)
            top = values.idxmax()
            others = values.drop(top)
            if all(values[top] - v > max(spread[top], spread[i]) for i, v in others.items()):
                mask.loc[top, col] = True
    return mask


def _fmt(value: float) -> str:
    return (
        MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"
    )


def _cell(row, col: str) -> str:
    text = _fmt(row[col])
    spread = row.get(f"{col}/spread")
    if text != MISSING and row.get("seeds", 1) > 1 and spread == spread:
        text += f" ± {100 * spread:.1f}"
    return text


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def _as_summary(df: pd.DataFrame, benchmarks: list[str], n: dict[str, int] | None) -> pd.DataFrame:
    """``table1_frame``'s runs folded over seeds (a frame that is already a seed summary passes through)."""
    return df if "seeds" in df else seed_summary(df, [*benchmarks, AVERAGE], n)


def _header(benchmarks: list[str], n: dict[str, int] | None, seeds: bool) -> list[str]:
    n = n or {}
    names = [BENCHMARK_LABELS.get(b, b) + (f" (n={n[b]})" if b in n else "") for b in benchmarks]
    return ["Model", "Method", *(["seeds"] if seeds else []), *names, "Avg."]


def to_markdown(df: pd.DataFrame, benchmarks: list[str], n: dict[str, int] | None = None) -> str:
    """Table 1 as a Markdown table: one row per setting over its seeds, mean x 100 (± spread), bold as
    ``best_mask``; the model named on its block's first row, each benchmark's item count in its header."""
    df = _as_summary(df, benchmarks, n)
    cols = [*benchmarks, AVERAGE]
    best = best_mask(df, cols)
    seeds = bool(len(df)) and df["seeds"].max() > 1
    header = _header(benchmarks, n, seeds)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * (2 + seeds) + "---:|" * len(cols)]
    previous = None
    for i, row in df.iterrows():
        cells = [row["model"] if row["model"] != previous else "", row["label"]]
        cells += [str(row["seeds"])] if seeds else []
        previous = row["model"]
        for c in cols:
            text = _cell(row, c)
            cells.append(f"**{text}**" if best.loc[i, c] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, benchmarks: list[str], n: dict[str, int] | None = None) -> str:
    """Table 1 as a booktabs tabular: as ``to_markdown``, bold in \\textbf, a rule between model blocks."""
    df = _as_summary(df, benchmarks, n)
    cols = [*benchmarks, AVERAGE]
    best = best_mask(df, cols)
    seeds = bool(len(df)) and df["seeds"].max() > 1
    header = _header(benchmarks, n, seeds)
    lines = [
        r"\begin{tabular}{ll" + "r" * (len(cols) + seeds) + "}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
    ]
    previous = None
    for i, row in df.iterrows():
        if row["model"] != previous:
            lines.append(r"\midrule")
        cells = [_latex_escape(row["model"]) if row["model"] != previous else "", _latex_escape(row["label"])]
        cells += [str(row["seeds"])] if seeds else []
        previous = row["model"]
        for c in cols:
            text = _cell(row, c).replace("±", r"$\pm$")
            text = "--" if text == MISSING else text
            cells.append(rf"\textbf{{{text}}}" if best.loc[i, c] else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


TRAINING_COLUMNS = {
    "model": "Model",
    "label": "Method",
    "seed": "seed",
    "beta": "beta",
    "learning_rate": "lr",
    "steps": "steps",
    "status": "status",
    "eval/rewards/accuracies": "held-out acc.",
    "eval/rewards/margins": "held-out margin",
    "eval/logps/chosen": "held-out logp(chosen)",
    "eval/loss": "held-out loss",
    "eval/displacement/chosen_per_token": "held-out logp(chosen) - ref, per token",
    "wall_seconds": "run s",
}


def training_frame(sweep: Sweep) -> pd.DataFrame:
    """One row per run: its hyperparameters, status and final held-out metrics (results.json "eval")."""
    if sweep.runs.empty:
        return pd.DataFrame(columns=[*TRAINING_COLUMNS, "run_dir"])
    df = labelled_runs(sweep.runs)
    return df[[c for c in TRAINING_COLUMNS if c in df] + ["run_dir"]]


def training_markdown(df: pd.DataFrame) -> str:
    cols = [c for c in TRAINING_COLUMNS if c in df]
    lines = [
        "| " + " | ".join(TRAINING_COLUMNS[c] for c in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                cells.append(MISSING if math.isnan(v) else f"{v:.3g}" if c != "wall_seconds" else f"{v:.0f}")
            else:
                cells.append(MISSING if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(sweep: Sweep, out_dir: str | Path, preset: str | None = None) -> dict[str, Path]:
    """Write table1.{csv,md,tex}, table1_seeds.csv and training_summary.{csv,md} into ``out_dir``; returns the
    paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df, benchmarks = table1_frame(sweep, preset)
    n = item_counts(sweep, preset)
    paths = {
        "table1_csv": out / "table1.csv",
        "table1_seeds_csv": out / "table1_seeds.csv",
        "table1_md": out / "table1.md",
        "table1_tex": out / "table1.tex",
        "training_csv": out / "training_summary.csv",
        "training_md": out / "training_summary.md",
    }
    df.to_csv(paths["table1_csv"], index=False)
    summary = seed_summary(df, [*benchmarks, AVERAGE], n)
    summary.to_csv(paths["table1_seeds_csv"], index=False)
    paths["table1_md"].write_text(to_markdown(summary, benchmarks, n))
    paths["table1_tex"].write_text(to_latex(summary, benchmarks, n))
    training = training_frame(sweep)
    training.to_csv(paths["training_csv"], index=False)
    paths["training_md"].write_text(training_markdown(training))
    return paths
