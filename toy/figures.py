"""Matplotlib figures of the toy experiments (Agg backend), drawn only from the data tables the runs write.

Each ``fig_*`` function takes DataFrames as saved in ``toy/results/`` and a path stem, and writes
``<stem>.png`` and ``<stem>.pdf``. Called by ``toy/run.py``; nothing here computes an experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def save(fig: plt.Figure, stem: Path, dpi: int) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf and close the figure."""
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=dpi)
    fig.savefig(paths[1], metadata={"CreationDate": None})  # same bytes on every run
    plt.close(fig)
    return paths


def fig_setup(setup: pd.DataFrame, labels: Mapping[str, str], stem: Path, dpi: int) -> list[Path]:
    """Fig 1: the optimal policy, the preference set built from it, and each scenario's initial policy.

    ``setup`` is one seed's rows of ``fig1_toy_setup.csv`` (prompt, response, role, optimal, scenario, init_prob).
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
        title="(a) optimal policy $\\pi^*$: $y_w$ = best, $y_l$ = worst response per prompt",
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
        title="(b) preference set: one pair per prompt, the rest unseen",
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
    return save(fig, stem, dpi)


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


def _two_lines(label: str) -> str:
    """'(1) chosen small, rejected small' -> two lines at the comma, for row labels."""
    return label.replace(", ", ",\n", 1)


def fig_dynamics(
    records: pd.DataFrame, methods: Sequence[str], labels: Mapping[str, str], stem: Path, dpi: int
) -> list[Path]:
    """Fig 2: per scenario (rows), the probability mass (chosen, rejected, unseen) under each of ``methods``,
    then the magnitude of d loss / d pi on the chosen and on the rejected, methods overlaid, over epochs."""
    scen = list(labels)
    cols = len(methods) + 2
    method_colors = dict(zip(methods, ["#1f77b4", "#d62728", "#9467bd", "#8c564b"], strict=False))
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
                _band(ax, d, column, method_colors[method], METHOD_LABELS.get(method, method), log=True)
                ax.set_yscale("log")
                _sparse_log_ticks(ax)
                role = "chosen" if sign == "+" else "rejected"
                ax.set_title(f"{role}: $|\\partial\\ell/\\partial\\pi^{sign}|$", fontsize=9)
        axes[r, 0].set_ylabel(_two_lines(labels[name]), fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=7, loc="center right")
    axes[0, len(methods)].legend(fontsize=7)
    fig.suptitle("Toy policy (4 prompts x 10 responses): mean over seeds (line), min-max (band)", y=1.0)
    fig.tight_layout()
    return save(fig, stem, dpi)


def fig_all_methods(
    records: pd.DataFrame, methods: Sequence[str], labels: Mapping[str, str], stem: Path, dpi: int
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
    fig.suptitle("Every loss in align.losses: probability mass over epochs (mean over seeds)", fontsize=10)
    fig.tight_layout()
    return save(fig, stem, dpi)


def fig_variants(
    records: pd.DataFrame, methods: Sequence[str], labels: Mapping[str, str], stem: Path, dpi: int
) -> list[Path]:
    """Fig 2c: pi(chosen) of ``methods`` per optimizer (rows, column ``variant``) and scenario (columns)."""
    scen, variants = list(labels), list(dict.fromkeys(records.variant))
    colors = dict(zip(methods, ["#1f77b4", "#d62728", "#9467bd", "#8c564b"], strict=False))
    fig, axes = plt.subplots(
        len(variants),
        len(scen),
        figsize=(3.2 * len(scen), 2.2 * len(variants)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for r, variant in enumerate(variants):
        for c, name in enumerate(scen):
            ax = axes[r, c]
            for method in methods:
                d = records[
                    (records.variant == variant) & (records.scenario == name) & (records.method == method)
                ]
                _band(ax, d, "chosen", colors[method], METHOD_LABELS.get(method, method))
            if r == 0:
                ax.set_title(_two_lines(labels[name]), fontsize=9)
        axes[r, 0].set_ylabel(f"{variant}\n$\\pi$(chosen)", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Chosen likelihood under each optimizer (mean over seeds, min-max band)", fontsize=10)
    fig.tight_layout()
    return save(fig, stem, dpi)


def fig_gaussian(estimates: pd.DataFrame, variances: pd.DataFrame, stem: Path, dpi: int) -> list[Path]:
    """Fig 4: per sweep (rows), left the MI estimate vs rho with the truth, right the gradient variance.

    ``estimates``: sweep, rho, true_mi, objective, estimate (seed mean). ``variances``: sweep, rho, critic,
    objective, grad_variance. Solid: each objective at its own trained critic; dotted: at the JS-trained critic.
    """
    sweeps = list(dict.fromkeys(estimates.sweep))
    fig, axes = plt.subplots(len(sweeps), 2, figsize=(11, 3.8 * len(sweeps)), squeeze=False)
    for r, sweep in enumerate(sweeps):
        e = estimates[estimates.sweep == sweep]
        dim = int(e.dim.iloc[0])
        ax = axes[r, 0]
        truth = e.drop_duplicates("rho").sort_values("rho")
        ax.plot(truth.rho, truth.true_mi, "k--", lw=1.5, label=r"true MI $-\frac{d}{2}\log(1-\rho^2)$")
        lo, hi = -0.15 * truth.true_mi.max(), 1.35 * truth.true_mi.max()
        for obj, color in OBJ_COLORS.items():
            d = e[e.objective == obj].sort_values("rho")
            y = d.estimate.to_numpy()
            ax.plot(d.rho, np.clip(y, lo, hi), "o-", color=color, label=OBJ_LABELS[obj], ms=4)
            off = (y < lo) | (y > hi)
            ax.plot(d.rho[off], np.clip(y[off], lo, hi), "x", color="k", ms=8)
        ax.set(ylim=(lo, hi), xlabel=r"$\rho$", ylabel="MI (nats)")
        ax.set_title(
            f"d = {dim}: MI estimate (DV value of each trained critic on a fresh sample; x: off scale)",
            fontsize=9,
        )
        ax.legend(fontsize=8)
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
    return save(fig, stem, dpi)


def fig_propositions(
    rejected: pd.DataFrame, chosen: pd.DataFrame, descent: pd.DataFrame, stem: Path, dpi: int
) -> list[Path]:
    """Props 3.1/3.2: probability-space gradients of DPO and MIO (lines: closed forms; dots: autograd)."""
    colors = {"dpo": "#1f77b4", "mio": "#d62728"}
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
    for (beta, d), color in zip(mio.groupby("beta"), ["#d62728", "#9467bd", "#8c564b"], strict=False):
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
    return save(fig, stem, dpi)
