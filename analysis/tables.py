"""Table 1 (methods per base model x the benchmarks and their average) as CSV, Markdown and LaTeX, and a training
summary table, built from ``analysis.collect`` frames.

Scores are the ``scores`` of each run's ``<run>/eval/<preset>/summary.json`` and the average is that file's
``average`` (``eval.benchmarks.average``: the one definition, None until every benchmark is scored), so nothing
here recomputes a score. CSV holds the fractions in [0, 1] with the run folder and summary file of every row;
Markdown and LaTeX show them x 100 with one decimal. Best per column, within each base model's block, is bold
(ties all bold); a column where every method ties has no bold. A run without a score shows "n/a", never 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.collect import Sweep

# Row order inside a model's block: the baselines, then NCA-Pair and MIO last, the pair Fig 5 compares.
METHOD_ORDER = (
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
}
AVERAGE = "average"
MISSING = "n/a"


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def _method_rank(name: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(name), "") if name in METHOD_ORDER else (len(METHOD_ORDER), str(name))


def labelled_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` sorted by model then ``METHOD_ORDER``, with ``label``: the method's display name, plus the run
    folder's name when a (model, method) pair occurs more than once (another beta, another seed)."""
    df = runs.copy()
    df["label"] = df["method"].map(method_label)
    dup = df.duplicated(["model", "method"], keep=False)
    df.loc[dup, "label"] = df.loc[dup, "label"] + " (" + df.loc[dup, "run"] + ")"
    df["_rank"] = df["method"].map(_method_rank)
    return df.sort_values(["model", "_rank", "run"]).drop(columns="_rank").reset_index(drop=True)


def choose_preset(sweep: Sweep) -> str | None:
    """The benchmark preset the runs were configured with (the most common), else the most common one scored."""
    configured = sweep.runs["preset"].dropna() if "preset" in sweep.runs else pd.Series(dtype=object)
    if len(configured):
        return configured.value_counts().index[0]
    if len(sweep.scores):
        return sweep.scores["preset"].value_counts().index[0]
    return None


def table1_frame(sweep: Sweep, preset: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per run: model, method, label, a column per benchmark, ``average``, run_dir, summary.

    Returns the frame and the benchmark columns in the preset's order (as its summary.json lists them).
    Runs with no summary for the preset are kept with NaN scores.
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
    runs = labelled_runs(sweep.runs)[["run_dir", "model", "method", "label"]]
    df = runs.merge(wide.reindex(columns=benchmarks), left_on="run_dir", right_index=True, how="left")
    df = df.merge(per_run, left_on="run_dir", right_index=True, how="left")
    cols = ["model", "method", "label", *benchmarks, AVERAGE, "run_dir", "summary"]
    return df[cols], benchmarks


def best_mask(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """True where a value is its model block's column maximum, unless the whole block's column ties."""
    mask = pd.DataFrame(False, index=df.index, columns=columns)
    for _, block in df.groupby("model", sort=False):
        for col in columns:
            values = block[col].dropna()
            if values.nunique() > 1:
                mask.loc[values.index[values == values.max()], col] = True
    return mask


def _fmt(value: float) -> str:
    return (
        MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"
    )


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def to_markdown(df: pd.DataFrame, benchmarks: list[str]) -> str:
    """Table 1 as a Markdown table: scores x 100, best per column in bold, the model named on its block's first row."""
    cols = [*benchmarks, AVERAGE]
    best = best_mask(df, cols)
    header = ["Model", "Method", *(BENCHMARK_LABELS.get(b, b) for b in benchmarks), "Avg."]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * len(cols)]
    previous = None
    for i, row in df.iterrows():
        cells = [row["model"] if row["model"] != previous else "", row["label"]]
        previous = row["model"]
        for c in cols:
            text = _fmt(row[c])
            cells.append(f"**{text}**" if best.loc[i, c] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, benchmarks: list[str]) -> str:
    """Table 1 as a booktabs tabular: scores x 100, best per column in \\textbf, a rule between model blocks."""
    cols = [*benchmarks, AVERAGE]
    best = best_mask(df, cols)
    header = ["Model", "Method", *(BENCHMARK_LABELS.get(b, b) for b in benchmarks), "Avg."]
    lines = [
        r"\begin{tabular}{ll" + "r" * len(cols) + "}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
    ]
    previous = None
    for i, row in df.iterrows():
        if row["model"] != previous:
            lines.append(r"\midrule")
        cells = [_latex_escape(row["model"]) if row["model"] != previous else "", _latex_escape(row["label"])]
        previous = row["model"]
        for c in cols:
            text = "--" if _fmt(row[c]) == MISSING else _fmt(row[c])
            cells.append(rf"\textbf{{{text}}}" if best.loc[i, c] else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


TRAINING_COLUMNS = {
    "model": "Model",
    "label": "Method",
    "beta": "beta",
    "learning_rate": "lr",
    "steps": "steps",
    "status": "status",
    "eval/rewards/accuracies": "held-out acc.",
    "eval/rewards/margins": "held-out margin",
    "eval/logps/chosen": "held-out logp(chosen)",
    "eval/loss": "held-out loss",
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
    """Write table1.{csv,md,tex} and training_summary.{csv,md} into ``out_dir``; returns the paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df, benchmarks = table1_frame(sweep, preset)
    paths = {
        "table1_csv": out / "table1.csv",
        "table1_md": out / "table1.md",
        "table1_tex": out / "table1.tex",
        "training_csv": out / "training_summary.csv",
        "training_md": out / "training_summary.md",
    }
    df.to_csv(paths["table1_csv"], index=False)
    paths["table1_md"].write_text(to_markdown(df, benchmarks))
    paths["table1_tex"].write_text(to_latex(df, benchmarks))
    training = training_frame(sweep)
    training.to_csv(paths["training_csv"], index=False)
    paths["training_md"].write_text(training_markdown(training))
    return paths
