"""The paper's claims measured on a sweep's result files, each stated whatever the outcome.

(a) the chosen log-prob over training: DPO's falls below the reference ("synchronous collapse", Fig 3), MIO's not;
(b) MIO against DPO on the benchmarks (Table 1's question);
(c) MIO and NCA-Pair identical at default knobs;
(d) the beta at which each method does best.

Each claim is judged over seeds: it "holds" only when it holds in every seed (and, for a difference of means, when
the mean difference is larger than its spread). ``check(sweep, preset)`` returns one ``Claim`` per letter with the
numbers behind its verdict; ``markdown(claims)`` writes them for the report. Reads only ``analysis.collect`` frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from align.losses import LOSSES, hyperparameters
from analysis.collect import Sweep
from analysis.tables import AVERAGE, choose_preset, labelled_runs, table1_frame

DISPLACEMENT = (
    "displacement/chosen_per_token"  # policy minus reference log-prob of the chosen, nats per token
)


@dataclass
class Claim:
    letter: str
    statement: str  # what the paper claims
    verdict: str  # "holds", "does not hold", "mixed" or "not measured"
    detail: str  # the numbers, in a sentence or two
    numbers: dict = field(default_factory=dict)


def _mean_sd(values) -> tuple[float, float]:
    values = [v for v in values if v == v]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


def _fmt(mean: float, sd: float, scale: float = 1.0, digits: int = 3) -> str:
    if mean != mean:
        return "n/a"
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}"


def final_values(sweep: Sweep, metric: str, split: str = "eval") -> pd.DataFrame:
    """Per run: the value of ``metric`` at the run's last logged step of ``split`` (run_dir, model, method, beta,
    seed, value)."""
    cols = ["run_dir", "model", "method", "beta", "seed", "value"]
    curves = sweep.curves
    if curves.empty or metric not in curves:
        return pd.DataFrame(columns=cols)
    rows = curves[(curves["split"] == split)].dropna(subset=[metric])
    last = rows.sort_values("step").groupby("run_dir").tail(1)[["run_dir", metric]]
    runs = labelled_runs(sweep.runs)
    out = runs[["run_dir", "model", "method", "beta", "seed"]].merge(last, on="run_dir")
    return out.rename(columns={metric: "value"})[cols]


def _default_beta(df: pd.DataFrame) -> pd.DataFrame:
    """Rows at each method's default beta (conf/method/, Table 1's setting) where a beta sweep shares the folder;
    a method run at one beta only keeps its rows."""
    if df.empty:
        return df

    def keep(block: pd.DataFrame) -> pd.DataFrame:
        name = block["method"].iloc[0]
        if block["beta"].nunique() < 2 or name not in LOSSES:
            return block
        return block[block["beta"] == hyperparameters(name).get("beta")]

    return pd.concat([keep(b) for _, b in df.groupby("method", sort=False)], ignore_index=True)


def claim_a(sweep: Sweep) -> Claim:
    statement = "DPO's chosen log-prob falls during training (the synchronous collapse of Fig 3) while MIO's does not."
    df = _default_beta(final_values(sweep, DISPLACEMENT))
    per = {m: df[df["method"] == m]["value"].tolist() for m in sorted(set(df["method"]))}
    if not per.get("dpo") or not per.get("mio"):
        return Claim("a", statement, "not measured", "no DPO and MIO runs with displacement/* rows")
    stats = {m: {"mean": _mean_sd(v)[0], "sd": _mean_sd(v)[1], "below": sum(x < 0 for x in v), "seeds": len(v)}
             for m, v in per.items()}  # fmt: skip
    dpo, mio = stats["dpo"], stats["mio"]
    if dpo["below"] == dpo["seeds"] and mio["below"] == 0:
        verdict = "holds"
    elif dpo["below"] == 0 or mio["below"] == mio["seeds"]:
        verdict = "does not hold"
    else:
        verdict = "mixed"
    detail = (
        f"Held-out chosen log-prob minus the reference's at the end of training, nats per token (mean ± sd over "
        f"seeds): DPO {_fmt(dpo['mean'], dpo['sd'])} (below the reference in {dpo['below']} of {dpo['seeds']} "
        f"seeds), MIO {_fmt(mio['mean'], mio['sd'])} ({mio['below']} of {mio['seeds']}). Every method: "
        + "; ".join(
            f"{m} {_fmt(s['mean'], s['sd'])} ({s['below']}/{s['seeds']} below)" for m, s in stats.items()
        )
        + "."
    )
    return Claim("a", statement, verdict, detail, stats)


def _paired(df: pd.DataFrame, a: str, b: str, col: str) -> tuple[list[float], list[float]]:
    """Per (base model, seed) that both have, the values of ``col`` for methods ``a`` and ``b``."""
    x = df[df["method"] == a].groupby(["model", "seed"], dropna=False)[col].first()
    y = df[df["method"] == b].groupby(["model", "seed"], dropna=False)[col].first()
    keys = sorted(set(x.index) & set(y.index), key=str)
    return [float(x[k]) for k in keys], [float(y[k]) for k in keys]


def _scores(sweep: Sweep, preset: str | None) -> tuple[pd.DataFrame, list[str]]:
    df, benchmarks = table1_frame(sweep, preset)
    runs = sweep.runs.set_index("run_dir")
    df["beta"] = df["run_dir"].map(runs["beta"]) if "beta" in runs else None
    return _default_beta(df), benchmarks


def claim_b(sweep: Sweep, preset: str | None) -> Claim:
    statement = "MIO beats DPO on the reasoning and math benchmarks (Table 1)."
    df, benchmarks = _scores(sweep, preset)
    cols = [c for c in ("miniature", AVERAGE) if c in df] or benchmarks[:1]
    if not cols or df[df["method"].isin(["mio", "dpo"])].empty:
        return Claim("b", statement, "not measured", "no scored MIO and DPO runs")
    parts, numbers, verdicts = [], {}, []
    for col in cols:
        mio, dpo = _paired(df.dropna(subset=[col]), "mio", "dpo", col)
        if not mio:
            continue
        diff = [m - d for m, d in zip(mio, dpo, strict=True)]
        mean, sd = _mean_sd(diff)
        wins = sum(d > 0 for d in diff)
        numbers[col] = {
            "mio": mio,
            "dpo": dpo,
            "difference_mean": mean,
            "difference_sd": sd,
            "mio_wins": wins,
        }
        if wins == len(diff) and mean > sd:
            verdicts.append("holds")
        elif wins == 0 and -mean > sd and all(d < 0 for d in diff):
            verdicts.append("does not hold")
        else:
            verdicts.append("mixed")
        parts.append(
            f"{col}: MIO {_fmt(*_mean_sd(mio), 100, 1)}, DPO {_fmt(*_mean_sd(dpo), 100, 1)}; MIO - DPO per seed "
            f"{', '.join(f'{100 * d:+.1f}' for d in diff)} (mean {100 * mean:+.1f} ± {100 * sd:.1f}; MIO ahead in "
            f"{wins} of {len(diff)} seeds)"
        )
    if not verdicts:
        return Claim("b", statement, "not measured", "no seed with both an MIO and a DPO score")
    verdict = verdicts[0] if len(set(verdicts)) == 1 else "mixed"
    detail = (
        "Scores x 100, paired by seed. "
        + "; ".join(parts)
        + (
            ". 'holds' needs MIO ahead in every seed by more than the spread of the difference; 'mixed': within it."
        )
    )
    return Claim("b", statement, verdict, detail, numbers)


def claim_c(sweep: Sweep, preset: str | None) -> Claim:
    statement = "MIO and NCA-Pair are the same loss at MIO's default knobs; the paper still reports them apart (Fig 5)."
    df, benchmarks = _scores(sweep, preset)
    cols = [c for c in [*benchmarks, AVERAGE] if c in df]
    mio_runs = df[df["method"] == "mio"]
    if mio_runs.empty or df[df["method"] == "nca_pair"].empty:
        return Claim("c", statement, "not measured", "no MIO and NCA-Pair runs on the same data")
    score_diff = 0.0
    for col in cols:
        mio, nca = _paired(df.dropna(subset=[col]), "mio", "nca_pair", col)
        score_diff = max([score_diff, *(abs(m - n) for m, n in zip(mio, nca, strict=True))])
    curve_diff = math.nan
    curves = sweep.curves
    if not curves.empty and "loss" in curves:
        runs = sweep.runs.set_index("run_dir")
        c = curves[curves["run_dir"].isin(df[df["method"].isin(["mio", "nca_pair"])]["run_dir"])].copy()
        c["method"], c["seed"] = c["run_dir"].map(runs["method"]), c["run_dir"].map(runs["seed"])
        wide = c.pivot_table(index=["seed", "split", "step"], columns="method", values="rewards/margins")
        if {"mio", "nca_pair"} <= set(wide.columns):
            curve_diff = float((wide["mio"] - wide["nca_pair"]).abs().max())
    verdict = (
        "holds" if score_diff == 0 and (curve_diff != curve_diff or curve_diff < 1e-3) else "does not hold"
    )
    detail = (
        f"Largest |MIO - NCA-Pair| over seeds: benchmark scores {100 * score_diff:.2f} points; logged reward "
        f"margins {curve_diff:.2g} (floating-point rounding of two formulas, amplified over steps). The losses "
        "are equal term for term (tests/test_losses.py); no difference is claimed that was not measured."
    )
    return Claim("c", statement, verdict, detail, {"score": score_diff, "margins": curve_diff})


def claim_d(sweep: Sweep, preset: str | None) -> Claim:
    statement = "Each method has a beta at which it does best (the paper's choices are not known)."
    df, benchmarks = table1_frame(sweep, preset)
    runs = sweep.runs.set_index("run_dir")
    df["beta"] = df["run_dir"].map(runs["beta"]) if "beta" in runs else math.nan
    col = "miniature" if "miniature" in df else AVERAGE
    swept = df.dropna(subset=[col, "beta"]).groupby("method").filter(lambda g: g["beta"].nunique() > 1)
    if swept.empty:
        return Claim(
            "d", statement, "not measured", "no method was run at more than one beta (ARGS='--grid beta')"
        )
    parts, numbers = [], {}
    for method, block in swept.groupby("method"):
        by_beta = {float(b): _mean_sd(g[col].tolist()) for b, g in block.groupby("beta")}
        best = max(by_beta, key=lambda b: by_beta[b][0])
        runner = max((b for b in by_beta if b != best), key=lambda b: by_beta[b][0])
        clear = by_beta[best][0] - by_beta[runner][0] > max(by_beta[best][1], by_beta[runner][1])
        numbers[method] = {"best_beta": best, "clear": clear, "by_beta": by_beta}
        parts.append(
            f"{method}: best at beta={best:g}"
            + ("" if clear else f" (within the spread of beta={runner:g})")
            + " ["
            + ", ".join(f"{b:g}: {_fmt(m, s, 100, 1)}" for b, (m, s) in sorted(by_beta.items()))
            + "]"
        )
    clear = all(v["clear"] for v in numbers.values())
    detail = f"{col} x 100, mean ± sd over seeds per beta. " + "; ".join(parts) + "."
    return Claim("d", statement, "holds" if clear else "mixed", detail, numbers)


def check(sweep: Sweep, preset: str | None = None) -> list[Claim]:
    preset = preset or choose_preset(sweep)
    return [claim_a(sweep), claim_b(sweep, preset), claim_c(sweep, preset), claim_d(sweep, preset)]


def markdown(claims: list[Claim]) -> str:
    lines = ["| claim | what the paper says | measured here | verdict |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| ({c.letter}) | {c.statement} | {c.detail} | **{c.verdict}** |")
    return "\n".join(lines) + "\n"


def family_table(sweep: Sweep, preset: str | None = None, benchmark: str = "miniature") -> str:
    """The benchmark's per-part scores (the miniature's families) per setting: mean ± sd over seeds, x 100."""
    preset = preset or choose_preset(sweep)
    scores = sweep.scores
    sub = [c for c in scores.columns if c.startswith("sub/")]
    rows = scores[(scores["preset"] == preset) & (scores["benchmark"] == benchmark)]
    if rows.empty or not sub:
        return f"(no {benchmark} scores with per-part results)\n"
    runs = labelled_runs(sweep.runs)[["run_dir", "model", "group", "method"]]
    rows = runs.merge(rows, on="run_dir")
    parts = [c for c in sub if rows[c].notna().any()]
    head = ["model", "method", "seeds", *(c[4:] for c in parts), "all"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * (len(parts) + 1)]
    for (model, group), block in rows.groupby(["model", "group"], sort=False):
        cells = [model, group, str(len(block))]
        cells += [_fmt(*_mean_sd(block[c].tolist()), 100, 1) for c in [*parts, "score"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
