"""Matplotlib figures of the toy experiments (Agg backend), drawn only from the data tables the runs write.

Each ``fig_*`` function takes DataFrames as saved in ``toy/results/`` and a path stem, and writes
``<stem>.png`` and ``<stem>.pdf``. Called by ``toy/run.py``; nothing here computes an experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm  # noqa: E402
from matplotlib.ticker import LogLocator, NullLocator  # noqa: E402

ROLE_COLORS = {"chosen": "#2ca02c", "rejected": "#d62728", "unseen": "#7f7f7f"}
OBJ_COLORS = {"dv": "#1f77b4", "mine": "#ff7f0e", "js": "#2ca02c"}
OBJ_LABELS = {"dv": "DV (MINE, no correction)", "mine": "MINE (moving average)", "js": "JS (MIO)"}
METHOD_LABELS = {"dpo": "DPO", "mio": "MIO"}
# Method colours avoid the role colours (green chosen, red rejected, grey unseen), so a colour means one thing.
METHOD_COLORS = {"dpo": "#1f77b4", "mio": "#9467bd"}
EXTRA_COLORS = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf")
SETUP_TITLES = {
    "shared": "(a) optimal policy $\\pi^*$: $y_w$ = best, $y_l$ = worst response per prompt;\n"
    "responses are shared: each chosen is another prompt's rejected",
    "disjoint": "(a) optimal policy $\\pi^*$: $y_w$, $y_l$ = best and worst among the responses\n"
    "no earlier prompt used (disjoint pairs; from prompt 1 on $y_w$ may not be the best)",
}


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method: DPO blue, MIO purple, others from a list without red, green or grey."""
    extra = iter(EXTRA_COLORS * len(methods))
    return {m: METHOD_COLORS.get(m) or next(extra) for m in methods}


@dataclass(frozen=True)
class Output:
    """How figures are written: PNG resolution and the formats (``png``, ``pdf``)."""

    dpi: int = 100
    formats: tuple[str, ...] = ("png", "pdf")


def save(fig: plt.Figure, stem: Path, out: Output) -> list[Path]:
    """Write ``stem``.<format> for each of ``out.formats`` and close the figure."""
    paths = []
    for fmt in out.formats:
        path = stem.with_suffix(f".{fmt}")
        if fmt == "pdf":
            fig.savefig(path, metadata={"CreationDate": None})  # same bytes on every run
        else:
            fig.savefig(path, dpi=out.dpi)
        paths.append(path)
    plt.close(fig)
    return paths


def fig_setup(
    setup: pd.DataFrame, labels: Mapping[str, str], construction: str, stem: Path, out: Output
) -> list[Path]:
    """Fig 1: the optimal policy, the preference set built from it, and each scenario's initial policy.

    ``setup`` is one seed's rows of ``fig1_toy_setup.csv`` for one construction (prompt, response, role, optimal,
    scenario, init_prob).
    """
    scen = list(labels)
    first = setup[setup.scenario == scen[0]].sort_values(["prompt", "response"])
    num_p, num_v = first.prompt.max() + 1, first.response.max() + 1
    optimal = first.optimal.to_numpy().reshape(num_p, num_v)
    roles = first.role.to_numpy().reshape(num_p, num_v)
    fig = plt.figure(figsize=(13, 5.6))
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 1], hspace=0.55, wspace=0.5)
    ax = fig.add_subplot(grid[0, :2])
    im = ax.imshow(optimal, cmap="Blues", vmin=0, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.03, label=r"$\pi^*(y|x)$")
    for (p, v), role in np.ndenumerate(roles):
        if role != "unseen":
            ax.text(
                v,
                p,
                "w" if role == "chosen" else "l",
                ha="center",
                va="center",
                color=ROLE_COLORS[role],
                fontsize=12,
                fontweight="bold",
            )
    ax.set(
        title=SETUP_TITLES.get(construction, f"(a) optimal policy $\\pi^*$ ({construction} pairs)"),
        xlabel="response y",
        ylabel="prompt x",
        xticks=range(num_v),
        yticks=range(num_p),
    )
    ax = fig.add_subplot(grid[0, 2:])
    codes = np.vectorize({"unseen": 0, "chosen": 1, "rejected": 2}.get)(roles)
    ax.imshow(
        codes,
        cmap=ListedColormap(["#dddddd", ROLE_COLORS["chosen"], ROLE_COLORS["rejected"]]),
        vmin=0,
        vmax=2,
        aspect="auto",
    )
    ax.set(
        title="(b) preference set: one pair per prompt, the rest unseen\nfor that prompt",
        xlabel="response y",
        xticks=range(num_v),
        yticks=range(num_p),
    )
    for role, color in ROLE_COLORS.items():
        ax.plot([], [], "s", color=color if role != "unseen" else "#dddddd", label=role)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    for i, name in enumerate(scen):
        d = setup[setup.scenario == name].sort_values(["prompt", "response"])
        ax = fig.add_subplot(grid[1, i])
        probs = d.init_prob.to_numpy().reshape(num_p, num_v)
        im = ax.imshow(probs, cmap="Greys", norm=LogNorm(1e-3, 1), aspect="auto")
        for (p, v), role in np.ndenumerate(roles):
            if role != "unseen":
                ax.add_patch(plt.Rectangle((v - 0.5, p - 0.5), 1, 1, fill=False, lw=2, ec=ROLE_COLORS[role]))
        ax.set_title(_two_lines(labels[name]), fontsize=9)
        ax.set(xticks=[], yticks=range(num_p), xlabel="response y")
        if i == 0:
            ax.set_ylabel("(c) initial policy = reference\nprompt x", fontsize=9)
    fig.colorbar(im, ax=fig.axes[-4:], fraction=0.02, label=r"$\pi_{ref}(y|x)$ (log)")
    return save(fig, stem, out)


def _band(ax, d: pd.DataFrame, column: str, color: str, label: str, log: bool = False) -> None:
    """Seed mean (geometric for |values| on log axes) as a line, seed min-max as a band, against epoch."""
    values = d[column].abs() if log else d[column]
    g = values.groupby(d["epoch"])
    centre = np.exp(np.log(values.clip(lower=1e-300)).groupby(d["epoch"]).mean()) if log else g.mean()
    ax.plot(centre.index, centre.to_numpy(), color=color, label=label, lw=1.6)
    ax.fill_between(centre.index, g.min().to_numpy(), g.max().to_numpy(), color=color, alpha=0.18, lw=0)


def _sparse_log_ticks(ax) -> None:
    """A few major ticks and no minor ones: log axes spanning 60 decades otherwise take seconds to draw."""
    ax.yaxis.set_major_locator(LogLocator(numticks=5))
    ax.yaxis.set_minor_locator(NullLocator())


def _margins(
    fig, left: float = 0.9, right: float = 0.15, bottom: float = 0.5, top: float = 0.75, **space
) -> None:
    """Fixed margins in inches (and ``wspace``/``hspace`` as fractions): for grids of many panels, where
    ``tight_layout`` costs seconds per figure."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, **space)


def _two_lines(label: str) -> str:
    """'(1) chosen small, rejected small' -> two lines at the comma, for row labels."""
    return label.replace(", ", ",\n", 1)


def fig_dynamics(
    records: pd.DataFrame,
    methods: Sequence[str],
    labels: Mapping[str, str],
    title: str,
    stem: Path,
    out: Output,
) -> list[Path]:
    """Fig 2: per scenario (rows), the probability mass (chosen, rejected, unseen) under each of ``methods``,
    then the magnitude of d loss / d pi on the chosen and on the rejected, methods overlaid, over epochs.
    ``title`` states the settings (construction, beta, optimizer, lr, seeds)."""
    scen = list(labels)
    cols = len(methods) + 2
    colors = method_colors(methods)
    fig, axes = plt.subplots(
        len(scen), cols, figsize=(3.3 * cols, 2.4 * len(scen)), sharex=True, squeeze=False
    )
    for r, name in enumerate(scen):
        for c, method in enumerate(methods):
            d = records[(records.scenario == name) & (records.method == method)]
            ax = axes[r, c]
            for role in ROLE_COLORS:
                _band(ax, d, role, ROLE_COLORS[role], role)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{METHOD_LABELS.get(method, method)}: probability mass", fontsize=9)
            for k, (column, sign) in enumerate((("grad_pi_chosen", "+"), ("grad_pi_rejected", "-"))):
                ax = axes[r, len(methods) + k]
                _band(ax, d, column, colors[method], METHOD_LABELS.get(method, method), log=True)
                ax.set_yscale("log")
                _sparse_log_ticks(ax)
                role = "chosen" if sign == "+" else "rejected"
                ax.set_title(f"{role}: $|\\partial\\ell/\\partial\\pi^{sign}|$", fontsize=9)
        axes[r, 0].set_ylabel(_two_lines(labels[name]), fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=7, loc="center right")
    axes[0, len(methods)].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    _margins(fig, wspace=0.3, hspace=0.35)
    return save(fig, stem, out)


def fig_all_methods(
    records: pd.DataFrame,
    methods: Sequence[str],
    labels: Mapping[str, str],
    title: str,
    stem: Path,
    out: Output,
) -> list[Path]:
    """Fig 2 for every registered loss: scenario rows, method columns, chosen/rejected/unseen mass."""
    scen = list(labels)
    fig, axes = plt.subplots(
        len(scen),
        len(methods),
        figsize=(1.9 * len(methods), 1.8 * len(scen)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for r, name in enumerate(scen):
        for c, method in enumerate(methods):
            d = records[(records.scenario == name) & (records.method == method)]
            ax = axes[r, c]
            for role, color in ROLE_COLORS.items():
                mean = d.groupby("epoch")[role].mean()
                ax.plot(mean.index, mean.to_numpy(), color=color, lw=1.3, label=role)
            if r == 0:
                ax.set_title(method, fontsize=9)
            if c == 0:
                ax.set_ylabel(_two_lines(labels[name]), fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6, loc="center right")
    fig.suptitle(title, fontsize=10)
    _margins(fig, left=0.75, top=0.6, wspace=0.12, hspace=0.15)
    return save(fig, stem, out)


def fig_chosen_grid(
    records: pd.DataFrame,
    row_key: str,
    row_labels: Mapping,
    methods: Sequence[str],
    labels: Mapping[str, str],
    title: str,
    stem: Path,
    out: Output,
    fixed_point: Mapping | None = None,
) -> list[Path]:
    """pi(chosen) of ``methods`` (seed mean, min-max band), one row per value of column ``row_key`` (its
    label in ``row_labels``) and one column per scenario.

    Fig 2c (rows: optimizer variants, linear axis) and Fig 2d (rows: beta, log axis). ``fixed_point`` maps
    (row value, scenario) to MIO's chosen fixed point 2^(1/beta) pi_ref+ (seed mean): a dotted line where it
    lies in (0, 1], its value in the panel where it lies above 1.
    """
    scen, rows = list(labels), list(row_labels)
    colors = method_colors(methods)
    fig, axes = plt.subplots(
        len(rows),
        len(scen),
        figsize=(3.2 * len(scen), 2.2 * len(rows) + 0.4),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for r, value in enumerate(rows):
        for c, name in enumerate(scen):
            ax = axes[r, c]
            for method in methods:
                d = records[
                    (records[row_key] == value) & (records.scenario == name) & (records.method == method)
                ]
                _band(ax, d, "chosen", colors[method], METHOD_LABELS.get(method, method))
            star = (fixed_point or {}).get((value, name))
            if star is not None and star <= 1.0:
                ax.axhline(star, color=colors.get("mio", "k"), ls=":", lw=1.2, label="MIO fixed point")
            elif star is not None:
                ax.text(0.97, 0.05, f"MIO fixed point {star:.3g} > 1", transform=ax.transAxes, ha="right",
                        fontsize=7, color=colors.get("mio", "k"))  # fmt: skip
            if fixed_point is not None:
                ax.set_yscale("log")
                ax.set_ylim(3e-3, 1.3)
                _sparse_log_ticks(ax)
            if r == 0:
                ax.set_title(_two_lines(labels[name]), fontsize=9)
        axes[r, 0].set_ylabel(f"{row_labels[value]}\n$\\pi$(chosen)", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    by_label = {}
    for ax in axes.ravel():  # every line's label once
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            by_label.setdefault(label, h)
    axes[0, 0].legend(by_label.values(), by_label.keys(), fontsize=7)
    fig.suptitle(title, fontsize=10)
    _margins(fig, left=1.0, top=0.85, wspace=0.08, hspace=0.12)
    return save(fig, stem, out)


def fig_gaussian(
    estimates: pd.DataFrame,
    variances: pd.DataFrame,
    panels: Mapping[str, str | None],
    eval_samples: int,
    stem: Path,
    out: Output,
) -> list[Path]:
    """Fig 4: per sweep (rows), left the MI estimate vs rho with the truth, right the gradient variance.

    ``estimates``: ``gaussian_mi.summarise``'s (sweep, dim, iterations, rho, true_mi, objective, mean, std,
    count). Lines: the mean at the sweep's last step. A sweep with a ``panels`` entry has no row: it is drawn in
    that sweep's estimate panel, and wherever a rho has several critics its mean +- sd is an error bar, filled at
    the sweep's last step and hollow at earlier evaluated steps. ``variances``: sweep, rho, critic, objective,
    grad_variance. Solid: each objective at its own trained critic; dotted: at the JS-trained critic.
    """
    rows = [s for s in dict.fromkeys(estimates.sweep) if not panels.get(s)]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.9 * len(rows)), squeeze=False)
    for r, sweep in enumerate(rows):
        every = estimates[estimates.sweep == sweep]
        steps = int(every.iterations.max())
        e = every[every.iterations == steps]
        dim = int(e.dim.iloc[0])
        drawn_here = estimates[estimates.sweep.isin([sweep, *(s for s, p in panels.items() if p == sweep)])]
        ax = axes[r, 0]
        truth = e.drop_duplicates("rho").sort_values("rho")
        ax.plot(truth.rho, truth.true_mi, "k--", lw=1.5, label=r"true MI $-\frac{d}{2}\log(1-\rho^2)$")
        lo, hi = -0.15 * truth.true_mi.max(), 1.35 * truth.true_mi.max()
        spread_all = drawn_here[drawn_here["count"] > 1]
        # The spread's error bars sit at a few rho values: drawn in a zoomed inset, offset per objective and step.
        zoom = ax.inset_axes([0.09, 0.4, 0.36, 0.36]) if len(spread_all) else None
        for j, (obj, color) in enumerate(OBJ_COLORS.items()):
            d = e[e.objective == obj].sort_values("rho")
            y = d["mean"].to_numpy()
            ax.plot(d.rho, np.clip(y, lo, hi), "o-", color=color, label=OBJ_LABELS[obj], ms=4)
            off = (y < lo) | (y > hi)
            ax.plot(d.rho[off], np.clip(y[off], lo, hi), "x", color="k", ms=8)
            spread = spread_all[spread_all.objective == obj]
            for k, ((name, step), x) in enumerate(spread.groupby(["sweep", "iterations"], sort=False)):
                last = step == drawn_here[drawn_here.sweep == name].iterations.max()
                zoom.errorbar(
                    3 * j + k, x["mean"], yerr=x["std"], fmt="s", color=color, ms=4, capsize=3,
                    mfc=color if last else "white",
                )  # fmt: skip
            if zoom is not None:
                one = d[d.rho.isin(spread.rho)]
                zoom.plot([3 * j + 2] * len(one), one["mean"], "o", color=color, ms=4)
        if zoom is not None:
            rhos = sorted(set(spread_all.rho))
            for r_ in rhos:
                zoom.axhline(truth[truth.rho == r_].true_mi.item(), color="k", ls="--", lw=1)
            steps_seen = sorted(set(spread_all.iterations))
            n = int(spread_all["count"].max())
            zoom.set_xticks([1, 4, 7], list(OBJ_COLORS), fontsize=7)
            zoom.set_title(
                f"$\\rho$ = {', '.join(f'{r_:g}' for r_ in rhos)}: {n} critics, mean $\\pm$ sd\n"
                f"hollow {steps_seen[0]}, filled {steps_seen[-1]} steps; dot: the line's critic",
                fontsize=7,
            )
            zoom.tick_params(labelsize=7)
        ax.set(ylim=(lo, hi), xlabel=r"$\rho$", ylabel="MI (nats)")
        ax.set_title(
            f"d = {dim}: DV value of each trained critic on {eval_samples:,} fresh pairs\n"
            f"(lines: {steps} steps, {int(e.groupby('rho')['count'].max().min())} critic per $\\rho$; "
            "x: off scale)",
            fontsize=9,
        )
        ax.legend(fontsize=7, loc="lower right")
        ax = axes[r, 1]
        v = variances[variances.sweep == sweep]
        for obj, color in OBJ_COLORS.items():
            own = v[(v.critic == obj) & (v.objective == obj)].sort_values("rho")
            ax.plot(
                own.rho, own.grad_variance, "o-", color=color, label=f"{OBJ_LABELS[obj]}, own critic", ms=4
            )
            if obj != "js":  # at the JS-trained critic the JS line is the solid one
                common = v[(v.critic == "js") & (v.objective == obj)].sort_values("rho")
                ax.plot(
                    common.rho,
                    common.grad_variance,
                    ":",
                    color=color,
                    label=f"{obj}, at the JS-trained critic",
                )
        ax.set(yscale="log", xlabel=r"$\rho$", ylabel=r"tr Cov of $\nabla_\phi$ objective")
        ax.set_title(
            f"d = {dim}: gradient variance at fixed critic parameters, fresh batches (K = 1)", fontsize=9
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, stem, out)


def fig_propositions(
    rejected: pd.DataFrame, chosen: pd.DataFrame, descent: pd.DataFrame, stem: Path, out: Output
) -> list[Path]:
    """Props 3.1/3.2: probability-space gradients of DPO and MIO (lines: closed forms; dots: autograd)."""
    colors = METHOD_COLORS
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for method, d in rejected.groupby("method"):
        ax = axes[0]
        ax.plot(
            d.pi_rejected,
            d.closed_grad_chosen.abs(),
            color=colors[method],
            label=f"{method.upper()} closed form",
        )
        ax.plot(
            d.pi_rejected[::3], d.grad_chosen.abs()[::3], "o", color=colors[method], ms=3, label="autograd"
        )
        ax = axes[1]
        ax.plot(d.pi_rejected, d.closed_grad_rejected, color=colors[method], label=f"{method.upper()}")
        ax.plot(d.pi_rejected[::3], d.grad_rejected[::3], "o", color=colors[method], ms=3)
    beta, pc = rejected.beta.iloc[0], rejected.pi_chosen.iloc[0]
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel=r"$\pi^-$",
        ylabel=r"$|\partial\ell/\partial\pi^+|$",
        title=f"(a) Prop 3.1: chosen gradient as $\\pi^-\\to 0$\n($\\pi^+$ = {pc}, $\\beta$ = {beta})",
    )
    axes[0].legend(fontsize=7)
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel=r"$\pi^-$",
        ylabel=r"$\partial\ell/\partial\pi^-$",
        title="(b) rejected gradient as $\\pi^-\\to 0$",
    )
    axes[1].legend(fontsize=7)
    ax = axes[2]
    mio = chosen[chosen.method == "mio"]
    for (beta, d), color in zip(mio.groupby("beta"), [METHOD_COLORS["mio"], *EXTRA_COLORS], strict=False):
        ax.plot(d.ratio, d.closed_grad_chosen * d.pi_chosen, color=color, label=f"MIO, $\\beta$ = {beta}")
        ax.plot(d.ratio[::3], (d.grad_chosen * d.pi_chosen)[::3], "o", color=color, ms=3)
        ax.axvline(2 ** (1 / beta), color=color, ls=":", lw=1)
    dpo = chosen[(chosen.method == "dpo") & (chosen.beta == chosen.beta.min())]
    ax.plot(
        dpo.ratio,
        dpo.closed_grad_chosen * dpo.pi_chosen,
        color=colors["dpo"],
        label=f"DPO, $\\beta$ = {dpo.beta.iloc[0]}",
    )
    ax.axhline(0, color="k", lw=0.6)
    ax.set(
        xscale="log",
        xlabel=r"$\pi^+/\pi^+_{ref}$ (dotted: $2^{1/\beta}$)",
        ylabel=r"$\pi^+\,\partial\ell/\partial\pi^+$ (sign of the chosen gradient)",
        title="(c) Prop 3.2: MIO's chosen gradient changes sign\nat $\\pi^+ = 2^{1/\\beta}\\pi^+_{ref}$",
    )
    ax.legend(fontsize=7)
    ax = axes[3]
    for (method, start), d in descent.groupby(["method", "start"]):
        ax.plot(
            d.step,
            d.pi_chosen,
            color=colors[method],
            ls="-" if start < 0.5 else "--",
            label=f"{method.upper()}, start {start}",
        )
    ax.set(
        yscale="log",
        xlabel="step",
        ylabel=r"$\pi^+$",
        title=f"(d) descent on $\\pi^+$ alone ($\\beta$ = {descent.beta.iloc[0]}):\nMIO settles at $2^{{1/\\beta}}\\pi^+_{{ref}}$",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, stem, out)
