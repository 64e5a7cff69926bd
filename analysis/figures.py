"""Training-curve figures from each run's ``metrics.jsonl``: Fig 3 (rewards and log-probs over steps, per method),
Fig 5 (MIO vs NCA-Pair: reward accuracy and margins, train and held-out) and the batch DV bound and JS objective.

One figure per base model and kind, written as PNG and PDF with a CSV beside it holding exactly the plotted
points (model, method, label, run_dir, split, step, metric, value), so every point traces back to its run folder.
Rewards are each method's own (``LossOutput.chosen_rewards``): comparable across the DPO family, on other scales
for ORPO and SimPO; the log-probs (summed over response tokens) are comparable for every method.
Uses matplotlib's object API (``Figure``), so no pyplot state or display backend is involved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from align.losses import LOSSES
from analysis.collect import Sweep
from analysis.tables import METHOD_ORDER, labelled_runs

FIG3_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "rewards/accuracies",
)
FIG5_METRICS = ("rewards/accuracies", "rewards/margins")
MI_METRICS = ("mi/dv", "mi/js")
LOG_RATIO_REWARDS = ("rewards/chosen", "rewards/rejected", "rewards/margins")
TITLES = {
    "rewards/chosen": "reward of the chosen",
    "rewards/rejected": "reward of the rejected",
    "rewards/margins": "reward margin (chosen - rejected)",
    "logps/chosen": "log-prob of the chosen (sum)",
    "logps/rejected": "log-prob of the rejected (sum)",
    "rewards/accuracies": "reward accuracy",
    "mi/dv": "DV (MINE) bound on the MI, batch: ln 2 + log s(T_w - T_l) <= ln 2",
    "mi/js": "JS objective = -MIO loss, batch: -ln 4 = -1.386 at pi = pi_ref;\na bound on 2 JSD - ln 4, not an MI estimate",
}


@dataclass
class FigureFiles:
    """One written figure: its kind, base model, files and a one-line caption for the report."""

    kind: str
    model: str
    png: Path
    pdf: Path
    csv: Path
    caption: str


def curve_frame(sweep: Sweep, metrics: tuple[str, ...], split: str | None = None) -> pd.DataFrame:
    """The logged rows of ``metrics`` as a long frame: model, method, label, run_dir, split, step, metric, value."""
    cols = ["model", "method", "label", "run_dir", "split", "step", "metric", "value"]
    curves = sweep.curves
    present = [m for m in metrics if m in curves]
    if curves.empty or not present:
        return pd.DataFrame(columns=cols)
    if split is not None:
        curves = curves[curves["split"] == split]
    long = curves.melt(id_vars=["run_dir", "split", "step"], value_vars=present, var_name="metric").dropna(
        subset=["value"]
    )
    runs = labelled_runs(sweep.runs)[["run_dir", "model", "method", "label"]]
    long = runs.merge(long, on="run_dir")
    long["metric"] = pd.Categorical(long["metric"], categories=list(metrics), ordered=True)
    order = {d: i for i, d in enumerate(runs["run_dir"])}
    long["_order"] = long["run_dir"].map(order)
    long = long.sort_values(["_order", "split", "metric", "step"]).drop(columns="_order")
    long["metric"] = long["metric"].astype(str)
    return long[cols].reset_index(drop=True)


# The baselines' colours: tab10 without its red, which NCA-Pair has.
BASELINE_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)


def _style(method: str) -> dict:
    """A fixed style per method across every figure. MIO black dashed over a wider red NCA-Pair line, so where the
    two coincide (their losses are equal at MIO's default knobs) both stay visible."""
    if method == "mio":
        return {"color": "black", "linewidth": 1.8, "linestyle": "--", "zorder": 3}
    if method == "nca_pair":
        return {"color": "tab:red", "linewidth": 3.0, "alpha": 0.8, "zorder": 2}
    i = METHOD_ORDER.index(method) if method in METHOD_ORDER else sum(map(ord, method))
    return {"color": BASELINE_COLOURS[i % len(BASELINE_COLOURS)], "linewidth": 1.1, "alpha": 0.85}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def _save(fig, data: pd.DataFrame, out: Path, stem: str) -> tuple[Path, Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    png, pdf, csv = out / f"{stem}.png", out / f"{stem}.pdf", out / f"{stem}.csv"
    fig.savefig(png, dpi=130, bbox_inches="tight")
    fig.savefig(pdf, bbox_inches="tight")
    data.to_csv(csv, index=False)
    return png, pdf, csv


def _panels(data: pd.DataFrame, metrics: tuple[str, ...], ncols: int, title: str, split_label: str = ""):
    """A grid of panels, one per metric, one line per run; the legend below the grid."""
    from matplotlib.figure import Figure

    nrows = -(-len(metrics) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.1 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        panel = data[data["metric"] == metric]
        note = ""
        if metric in LOG_RATIO_REWARDS:
            # Reference-free methods (ORPO, SimPO) log beta x mean log-prob as "reward": another scale and meaning.
            free = panel["method"].map(lambda m: m in LOSSES and not LOSSES[m].needs_reference)
            note = " (methods with a reference)" if free.any() else ""
            panel = panel[~free]
        for (_, label, method), line in panel.groupby(["run_dir", "label", "method"], sort=False):
            ax.plot(line["step"], line["value"], label=label, **_style(method))
        ax.set_title(f"{TITLES.get(metric, metric)}{split_label}{note}", fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    by_label = {}
    for ax in axes:  # every line's label once, also those absent from the first panel
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            by_label.setdefault(label, h)
    handles, labels = list(by_label.values()), list(by_label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(labels)), fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def _train_curves_per_model(
    sweep: Sweep,
    out_dir: str | Path,
    metrics: tuple[str, ...],
    ncols: int,
    kind: str,
    stem: str,
    title: str,
    caption: str,
) -> list[FigureFiles]:
    """One figure per base model: ``metrics`` over training (train batches), one line per method.
    ``title`` and ``caption`` are formatted with ``model``."""
    data = curve_frame(sweep, metrics, split="train")
    written = []
    for model, block in data.groupby("model", sort=True):
        fig = _panels(block, metrics, ncols, title.format(model=model))
        files = _save(fig, block, Path(out_dir), f"{stem}_{_slug(model)}")
        written.append(FigureFiles(kind, model, *files, caption.format(model=model)))
    return written


def fig3_training_curves(sweep: Sweep, out_dir: str | Path) -> list[FigureFiles]:
    """Fig 3: rewards (chosen, rejected, margin, accuracy) and log-probs over training steps, every method, per model."""
    return _train_curves_per_model(
        sweep, out_dir, FIG3_METRICS, 3, "fig3", "fig3_training_curves",
        "Training curves (train batches), base model {model}",
        "Fig 3 analogue, base model {model}: rewards and summed log-probs of the chosen and rejected "
        "answers over optimizer steps (train batches, every logged step), one line per method.",
    )  # fmt: skip


def fig5_mio_vs_nca(sweep: Sweep, out_dir: str | Path) -> list[FigureFiles]:
    """Fig 5: MIO vs NCA-Pair on the same base model and data: reward accuracy and margin, train and held-out."""
    written = []
    train = curve_frame(sweep, FIG5_METRICS, split="train")
    held = curve_frame(sweep, FIG5_METRICS, split="eval")
    for model in sorted(set(train["model"])):
        t, h = (d[(d["model"] == model) & d["method"].isin(["mio", "nca_pair"])] for d in (train, held))
        if set(t["method"]) != {"mio", "nca_pair"}:
            continue  # Fig 5 needs both runs on this model
        from matplotlib.figure import Figure

        rows = [("train batches", t)] + ([("held-out", h)] if len(h) else [])
        fig = Figure(figsize=(9, 3.2 * len(rows) + 0.6), layout="constrained")
        axes = fig.subplots(len(rows), 2, squeeze=False)
        for r, (split_label, data) in enumerate(rows):
            for c, metric in enumerate(FIG5_METRICS):
                ax = axes[r][c]
                panel = data[data["metric"] == metric]
                for (_, label, method), line in panel.groupby(["run_dir", "label", "method"], sort=False):
                    marker = "o" if split_label == "held-out" else None
                    ax.plot(line["step"], line["value"], label=label, marker=marker, **_style(method))
                ax.set_title(f"{TITLES[metric]} ({split_label})", fontsize=10)
                ax.set_xlabel("optimizer step")
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"MIO vs NCA-Pair, base model {model}, same data", fontsize=11)
        files = _save(fig, pd.concat([t, h]), Path(out_dir), f"fig5_mio_vs_nca_pair_{_slug(model)}")
        written.append(
            FigureFiles(
                "fig5",
                model,
                *files,
                f"Fig 5 analogue, base model {model}: reward accuracy and margin of MIO and NCA-Pair over training "
                "(train batches; held-out set at each evaluation).",
            )
        )
    return written


def mio_nca_max_difference(sweep: Sweep) -> pd.DataFrame:
    """Per model, split and Fig 5 metric: the largest |MIO - NCA-Pair| over the steps both runs logged."""
    cols = ["model", "split", "metric", "steps", "max_abs_difference"]
    data = curve_frame(sweep, FIG5_METRICS)
    data = data[data["method"].isin(["mio", "nca_pair"])]
    if data.empty:
        return pd.DataFrame(columns=cols)
    wide = data.pivot_table(index=["model", "split", "metric", "step"], columns="method", values="value")
    if not {"mio", "nca_pair"} <= set(wide.columns):
        return pd.DataFrame(columns=cols)
    diff = (wide["mio"] - wide["nca_pair"]).abs().dropna().groupby(level=["model", "split", "metric"])
    return diff.agg(["size", "max"]).reset_index().set_axis(cols, axis=1)


def fig_mi_estimates(sweep: Sweep, out_dir: str | Path) -> list[FigureFiles]:
    """The batch DV bound and JS objective over training, per model, for the methods with a reference.

    Both are ``align.losses.mi_estimates`` of the logged rewards, i.e. of the critic ``T = beta log(pi/pi_ref)``
    with half-mix negatives. The DV value is the MI lower bound DPO maximises (at most ln 2 with these
    negatives). The JS value is the objective MIO maximises, -ln 4 at the start: a lower bound on
    ``2 JSD - ln 4`` between positives and negatives, plotted as what it is, not as an MI estimate. ORPO and
    SimPO log ``beta x mean log-prob`` as their reward, which is no critic of a density ratio: they are left out.
    """
    with_reference = sweep.runs["method"].map(lambda m: m in LOSSES and LOSSES[m].needs_reference)
    return _train_curves_per_model(
        replace(sweep, runs=sweep.runs[with_reference]), out_dir, MI_METRICS, 2, "mi", "fig_mi_dv_js",
        "Batch DV bound and JS objective over training (critic beta log pi/pi_ref), base model {model}",
        "Base model {model}, methods with a reference only: the DV (MINE) lower bound on the prompt-response MI "
        "and the JS objective (MIO's negative loss, -ln 4 at the reference; not an MI estimate) on each train "
        "batch, both align.losses.mi_estimates of the critic beta log(pi/pi_ref) with half-mix negatives, one "
        "line per method. ORPO and SimPO are left out: their logged rewards are no critic.",
    )  # fmt: skip


DISPLACEMENT_METRICS = ("displacement/chosen", "displacement/rejected", "displacement/chosen_per_token")
TITLES.update(
    {
        "displacement/chosen": "log-prob of the chosen minus the reference's (sum)",
        "displacement/rejected": "log-prob of the rejected minus the reference's (sum)",
        "displacement/chosen_per_token": "chosen minus reference, per token",
    }
)


def fig3_over_seeds(sweep: Sweep, out_dir: str | Path) -> list[FigureFiles]:
    """Fig 3 over seeds: each method's log-probs of the chosen and rejected against the reference (the likelihood
    displacement, logged for every method) on train batches, the mean over seeds with a band of +- one standard
    deviation. One figure per base model that has runs at several seeds."""
    from matplotlib.figure import Figure

    data = curve_frame(sweep, DISPLACEMENT_METRICS, split="train")
    if data.empty:
        return []
    seeds = sweep.runs.set_index("run_dir")["seed"] if "seed" in sweep.runs else None
    data["seed"] = data["run_dir"].map(seeds) if seeds is not None else 0
    written = []
    for model, block in data.groupby("model", sort=True):
        if block.groupby("method")["seed"].nunique().max() < 2:
            continue
        stats = (
            block.groupby(["method", "metric", "step"])["value"].agg(["mean", "std", "count"]).reset_index()
        )
        fig = Figure(figsize=(4.2 * len(DISPLACEMENT_METRICS), 4.0), layout="constrained")
        axes = fig.subplots(1, len(DISPLACEMENT_METRICS), squeeze=False).ravel()
        for ax, metric in zip(axes, DISPLACEMENT_METRICS, strict=True):
            panel = stats[stats["metric"] == metric]
            for method, line in sorted(
                panel.groupby("method"),
                key=lambda kv: METHOD_ORDER.index(kv[0]) if kv[0] in METHOD_ORDER else 99,
            ):
                style = _style(method)
                ax.plot(line["step"], line["mean"], label=method, **style)
                band = line["std"].fillna(0.0)
                ax.fill_between(
                    line["step"], line["mean"] - band, line["mean"] + band, color=style["color"], alpha=0.12
                )
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.set_title(TITLES[metric], fontsize=10)
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(labels)), fontsize=8)
        n = int(block.groupby("method")["seed"].nunique().max())
        fig.suptitle(
            f"Chosen and rejected log-probs against the reference, base model {model}, mean of {n} seeds",
            fontsize=11,
        )
        files = _save(fig, block, Path(out_dir), f"fig3_displacement_{_slug(model)}")
        caption = (
            f"Fig 3 over seeds, base model {model}: each method's summed log-prob of the chosen and of the rejected "
            f"answers minus the reference's, and the chosen per token, on train batches; mean over {n} seeds, band "
            "+- one standard deviation. Below 0: the likelihood has fallen below where training started."
        )
        written.append(FigureFiles("fig3", model, *files, caption))
    return written


def write_figures(sweep: Sweep, out_dir: str | Path) -> list[FigureFiles]:
    """Every training figure for ``sweep`` into ``out_dir``."""
    return [
        *fig3_training_curves(sweep, out_dir),
        *fig3_over_seeds(sweep, out_dir),
        *fig5_mio_vs_nca(sweep, out_dir),
        *fig_mi_estimates(sweep, out_dir),
    ]
