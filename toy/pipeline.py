"""The toy experiments end to end: run each part, write its data (CSV), its figures (PNG + PDF) and a summary.

``run(cfg)`` takes the composed ``conf/toy`` config; ``toy/run.py`` is its Hydra entry point (``make toy``).
Files written to ``cfg.out_dir`` (names are fixed; the README links them; figures as ``cfg.formats``, PNG + PDF):

- per construction ``c`` of ``dynamics.constructions`` (``shared``, ``disjoint``): ``fig1_toy_setup_<c>`` (optimal
  policy, preference set, initial policies), ``fig2_likelihood_dynamics_<c>`` (DPO vs MIO), ``fig2b_all_methods_<c>``
  (every loss; constructions in ``all_methods``), ``fig2c_optimizers_<c>`` (Adam vs SGD), ``fig2d_beta_sweep_<c>``
  (the beta sweep and MIO's fixed point); their data in ``fig1_toy_setup.csv``, ``dynamics_records.csv`` (every
  run, every ``record_every``-th epoch) and ``dynamics_summary.csv`` (every run: initial, peak, final chosen).
- ``fig4_gaussian_mi`` (+ ``fig4_estimates.csv``, ``fig4_grad_variance.csv``).
- ``props_gradients`` (+ ``props_rejected_sweep.csv``, ``props_chosen_sweep.csv``, ``props_descent.csv``).
- ``summary.json``: resolved config, versions, wall and CPU timings, files, and the numbers behind every claim.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from align.losses import get_method
from toy import dynamics, figures, gaussian_mi, propositions
from toy.gaussian_mi import OBJECTIVES

PARTS = ("dynamics", "gaussian", "propositions")
FLOAT_FORMAT = "%.6g"
RECORD_FORMAT = "%.4g"  # the per-epoch records: enough for the figures, and the CSV stays a few MB


def validate(cfg) -> None:
    """Fail early, naming the valid choices, on unknown parts, constructions, methods or loss hyperparameters."""
    unknown = set(cfg.parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; valid: {', '.join(PARTS)}")
    d = cfg.dynamics
    bad = (set(d.constructions) | set(d.all_methods)) - set(dynamics.CONSTRUCTIONS)
    if bad or not d.constructions:
        raise ValueError(
            f"dynamics.constructions {list(d.constructions)}, all_methods {list(d.all_methods)}: "
            f"choose from {', '.join(dynamics.CONSTRUCTIONS)}"
        )
    for method in d.methods:
        get_method(method)
        dynamics.loss_kwargs_for(method, d.loss_kwargs)
    for method in d.loss_kwargs:
        get_method(method)
    missing = set(d.figure_methods) - set(d.methods)
    if missing:
        raise ValueError(f"dynamics.figure_methods names methods not in dynamics.methods: {sorted(missing)}")


def out_dir(path: str) -> Path:
    """``path`` as given if absolute, else relative to the repository root (the folder above ``toy/``)."""
    p = Path(path)
    return p if p.is_absolute() else Path(dynamics.__file__).resolve().parents[1] / p


def _figure_output(cfg) -> figures.Output:
    return figures.Output(cfg.dpi, tuple(cfg.formats))


def _csv(df: pd.DataFrame, path: Path, float_format: str = FLOAT_FORMAT) -> Path:
    df.to_csv(path, index=False, float_format=float_format)
    return path


def _stats(summary: pd.DataFrame, by: list[str]) -> dict:
    """Seed statistics of ``peak_and_final`` rows per ``by`` group, keyed "a/b/c", rounded for summary.json."""
    table = summary.groupby(by, sort=False).agg(
        initial_mean=("initial", "mean"),
        peak_mean=("peak", "mean"),
        peak_epoch_min=("peak_epoch", "min"),
        peak_epoch_max=("peak_epoch", "max"),
        final_mean=("final", "mean"),
        final_min=("final", "min"),
        final_max=("final", "max"),
        ratio_mean=("ratio", "mean"),
        ratio_min=("ratio", "min"),
        ratio_max=("ratio", "max"),
        seeds_declining=("declines", "sum"),
        seeds=("declines", "size"),
    )
    return {
        "/".join(f"{k:g}" if isinstance(k, float) else str(k) for k in key): {
            k: float(f"{v:.4g}") for k, v in row.items()
        }
        for key, row in table.iterrows()
    }


def fixed_points(summary: pd.DataFrame) -> pd.Series:
    """MIO's chosen fixed point per run, ``2^(1/beta) pi_ref+`` (T_w = ln 2), from the initial pi(chosen): the
    prompts' mean, exact for the mean of per-prompt fixed points since the map is linear in pi_ref+."""
    return 2.0 ** (1.0 / summary["beta"]) * summary["initial"]


def _beta_claims(summary: pd.DataFrame) -> dict:
    """Per beta x scenario: MIO's fixed point and where MIO's final chosen is relative to it and to 1; DPO's
    final chosen."""
    out = {}
    for (beta, scenario), s in summary.groupby(["beta", "scenario"], sort=False):
        mio, dpo = s[s.method == "mio"], s[s.method == "dpo"]
        entry = {}
        if len(mio):
            star = fixed_points(mio)
            entry |= {
                "mio_fixed_point_mean": float(f"{star.mean():.4g}"),
                "fixed_point_inside": bool((star < 1).all()),
                "mio_final_over_fixed_point": _round((mio.final / star).agg(["min", "max"])),
                "mio_final_over_initial": _round((mio.final / mio.initial).agg(["min", "max"])),
                "mio_final": _round(mio.final.agg(["min", "max"])),
                "mio_seeds_declining": int(mio.declines.sum()),
            }
        if len(dpo):
            entry |= {
                "dpo_final": _round(dpo.final.agg(["min", "max"])),
                "dpo_seeds_declining": int(dpo.declines.sum()),
            }
        out[f"beta{beta:g}/{scenario}"] = entry | {"seeds": int(len(s) // max(1, s.method.nunique()))}
    return out


def _end_state(main: pd.DataFrame, methods: list[str]) -> dict:
    """From every epoch of the base runs: per scenario and method, the fall of |d loss / d pi+| from epoch 0 to
    the last (min, max over seeds) and the final pi(rejected) (min, max); and the largest |pi(chosen)| difference
    between ``mio`` and ``nca_pair`` (the same loss written twice) over every epoch, seed and scenario."""
    first, last = main.epoch.min(), main.epoch.max()
    out: dict = {}
    for (scenario, method), g in main[main.method.isin(methods)].groupby(["scenario", "method"], sort=False):
        g0 = g[g.epoch == first].set_index("seed").grad_pi_chosen.abs()
        g1 = g[g.epoch == last].set_index("seed")
        fall = g0 / g1.grad_pi_chosen.abs()
        out[f"{scenario}/{method}"] = {
            "chosen_grad_fall": _round(fall.agg(["min", "max"]), 3),
            "final_rejected": _round(g1.rejected.agg(["min", "max"]), 3),
        }
    if {"mio", "nca_pair"} <= set(main.method):
        key = ["seed", "scenario", "epoch"]
        a, b = (main[main.method == m].set_index(key).chosen for m in ("mio", "nca_pair"))
        out["mio_vs_nca_pair_max_abs_chosen"] = float(f"{(a - b).abs().max():.3g}")
    return out


def _settings(d, beta: float | None, variant: str | None = None) -> str:
    """A figure title's settings: beta, optimizer and lr, epochs and seeds."""
    opt = variant or f"{d.optimizer} lr {d.lr:g}"
    beta = "" if beta is None else f"$\\beta$ = {beta:g}, "
    return f"{beta}{opt}, {d.epochs} full-batch epochs, {len(d.seeds)} seeds (line: mean; band: min-max)"


def run_dynamics_part(cfg, out: Path) -> dict:
    """Figs 1-2 for every construction: train, write data and figures; returns the files and the claim numbers."""
    d, fo = cfg.dynamics, _figure_output(cfg)
    records, setup = dynamics.run_dynamics(d)
    summary = dynamics.peak_and_final(records)  # from every epoch, before the CSV's stride
    summary["declines"] = dynamics.declines(summary, d.claim_drop)
    strided = records[(records.epoch % d.record_every == 0) | (records.epoch == d.epochs)]
    files = [
        _csv(setup, out / "fig1_toy_setup.csv"),
        _csv(strided, out / "dynamics_records.csv", RECORD_FORMAT),
        _csv(summary, out / "dynamics_summary.csv"),
    ]
    labels = {name: sc.label for name, sc in d.scenarios.items()}
    fig_methods = list(d.figure_methods)
    betas = {dynamics.base_beta(m, d) for m in fig_methods}
    fig_beta = betas.pop() if len(betas) == 1 else None
    claims: dict = {"warmup_kl_max": float(setup.warmup_kl.max())}
    for c in d.constructions:
        rec, summ = strided[strided.construction == c], summary[summary.construction == c]
        main, main_s = dynamics.select(rec, d, "main"), dynamics.select(summ, d, "main")
        opts, opts_s = dynamics.select(rec, d, "optimizers"), dynamics.select(summ, d, "optimizers")
        bet, bet_s = dynamics.select(rec, d, "betas"), dynamics.select(summ, d, "betas")
        s = setup[(setup.construction == c) & (setup.seed == d.seeds[0])]
        files += figures.fig_setup(s, labels, c, out / f"fig1_toy_setup_{c}", fo)
        files += figures.fig_dynamics(
            main, fig_methods, labels,
            f"{c} pairs: DPO vs MIO, {_settings(d, fig_beta)}",
            out / f"fig2_likelihood_dynamics_{c}", fo,
        )  # fmt: skip
        if c in d.all_methods:
            files += figures.fig_all_methods(
                main, list(d.methods), labels,
                f"{c} pairs, every loss in align.losses at its default beta (simpo 2.0, others 0.1): "
                f"probability mass; {_settings(d, None)}",
                out / f"fig2b_all_methods_{c}", fo,
            )  # fmt: skip
        variants = {dynamics.base_variant(d): f"{d.optimizer} lr {d.lr:g}"}
        variants |= {v.name: f"{v.optimizer} lr {v.lr:g}" for v in d.variants}
        files += figures.fig_chosen_grid(
            opts, "variant", variants, fig_methods, labels,
            f"{c} pairs: chosen likelihood under each optimizer; {_settings(d, fig_beta, 'rows: optimizer')}",
            out / f"fig2c_optimizers_{c}", fo,
        )  # fmt: skip
        if len(bet):
            stars = (
                bet_s[bet_s.method == "mio"]
                .assign(star=fixed_points)
                .groupby(["beta", "scenario"])
                .star.mean()
            )
            files += figures.fig_chosen_grid(
                bet, "beta", {float(b): f"$\\beta$ = {b:g}" for b in sorted(set(d.betas))}, fig_methods, labels,
                f"{c} pairs: chosen likelihood per $\\beta$ (log scale); dotted: MIO's fixed point "
                f"$2^{{1/\\beta}}\\pi_{{ref}}^+$; {_settings(d, None)}",
                out / f"fig2d_beta_sweep_{c}", fo, fixed_point=stars.to_dict(),
            )  # fmt: skip
        late = {}
        for scenario, g in main_s[main_s.method.isin(fig_methods)].groupby("scenario", sort=False):
            late[scenario] = {
                f"{m}_seeds_declining": int(g[g.method == m].declines.sum()) for m in fig_methods
            }
            late[scenario]["seeds"] = len(d.seeds)
        claims[c] = {
            "late_chosen_decline": late,  # base optimizer and beta: seeds whose final chosen < (1 - drop) x peak
            "end_state": _end_state(
                dynamics.select(records[records.construction == c], d, "main"), fig_methods
            ),
            "chosen_by_scenario": _stats(main_s, ["scenario", "method"]),  # every method, base settings
            "by_optimizer": _stats(opts_s, ["variant", "scenario", "method"]),
            "by_beta": _stats(bet_s, ["beta", "scenario", "method"]),
            "beta_regimes": _beta_claims(bet_s),
        }
    return {"files": files, "claims": claims}


def _round(values, digits: int = 4) -> list[float]:
    return [float(f"{x:.{digits}g}") for x in values]


def run_gaussian_part(cfg, out: Path) -> dict:
    """Fig 4: train the critics, estimate MI and gradient variances; returns the files and claim numbers."""
    g, fo = cfg.gaussian, _figure_output(cfg)
    estimates, variances = gaussian_mi.run_gaussian(g)
    est, var = gaussian_mi.summarise(estimates, variances)
    files = [_csv(estimates, out / "fig4_estimates.csv"), _csv(variances, out / "fig4_grad_variance.csv")]
    panels = {s.name: s.panel for s in g.sweeps}
    files += figures.fig_gaussian(est, var, panels, g.eval_samples, out / "fig4_gaussian_mi", fo)
    claims = {}
    for sweep, every in est.groupby("sweep", sort=False):
        steps = int(every.iterations.max())
        e = every[every.iterations == steps]
        v = var[var.sweep == sweep]
        col = lambda name, e=e: e.pivot(index="rho", columns="objective", values=name)  # noqa: E731
        by_obj = col("mean")
        spread = every[every["count"] > 1]
        claims[sweep] = {
            "true_mi": dict(
                zip(map(float, by_obj.index), _round(e.drop_duplicates("rho").true_mi), strict=True)
            ),
            "iterations": steps,
            "estimate": {o: _round(by_obj[o]) for o in by_obj},  # means over the critics of each rho
            "estimate_increasing": {o: bool(np.all(np.diff(by_obj[o].to_numpy()) > 0)) for o in by_obj},
            # Where a rho has several critics: mean, sd, min, max and n of the estimate at each evaluated step.
            "spread": {
                f"rho{rho:g}/{o}/step{step}": _round(row[["mean", "std", "min", "max", "count"]])
                for (rho, o, step), row in spread.set_index(["rho", "objective", "iterations"]).iterrows()
            },
            # The critic's two DV terms on the fresh sample and its DV value on its last training batches: a critic
            # whose scores blew up has both terms far from the truth and batch values far above its fresh estimate.
            "critic_terms": {
                o: {k: _round(col(k)[o]) for k in ("pos_mean", "neg_logmeanexp", "train_dv_tail")}
                for o in by_obj
            },
        }
        if len(v):
            grid = lambda rows: rows.pivot(index="rho", columns="objective", values="grad_variance")  # noqa: E731
            at = {c: grid(v[v.critic == c]) for c in OBJECTIVES}
            own = grid(v[v.critic == v.objective])
            claims[sweep] |= {
                "grad_variance_own_critic": {o: _round(own[o]) for o in own},
                # DV/JS and MINE/JS variance ratios, each objective at its own critic, and all at the same critic.
                "variance_ratio_over_js": {
                    f"{o}/{where}": _round(t[o] / t["js"], 3)
                    for o in ("dv", "mine")
                    for where, t in [("own_critic", own)] + [(f"at_{c}_critic", at[c]) for c in OBJECTIVES]
                },
                "js_below_dv_and_mine_own_critic": bool((own.js < own[["dv", "mine"]].min(axis=1)).all()),
                "js_below_dv_and_mine_at_every_critic": bool(
                    all((t.js < t[["dv", "mine"]].min(axis=1)).all() for t in at.values())
                ),
            }
    return {"files": files, "claims": claims}


def run_propositions_part(cfg, out: Path) -> dict:
    """Props 3.1/3.2: probability-space gradient sweeps; returns the files and claim numbers."""
    p, fo = cfg.propositions, _figure_output(cfg)
    rej, cho, desc = (
        propositions.rejected_sweep(p),
        propositions.chosen_sweep(p),
        propositions.chosen_descent(p),
    )
    files = [
        _csv(rej, out / "props_rejected_sweep.csv"),
        _csv(cho, out / "props_chosen_sweep.csv"),
        _csv(desc, out / "props_descent.csv"),
    ]
    files += figures.fig_propositions(rej, cho, desc, out / "props_gradients", fo)
    rel = lambda a, b: float(np.max(np.abs(a / b - 1.0)))  # noqa: E731
    grad_c = {m: d.sort_values("pi_rejected") for m, d in rej.groupby("method")}
    last = desc.groupby(["method", "start"]).pi_chosen.last()
    return {
        "files": files,
        "claims": {
            "max_rel_err_autograd_vs_closed": max(
                rel(rej.grad_chosen, rej.closed_grad_chosen),
                rel(rej.grad_rejected, rej.closed_grad_rejected),
                rel(
                    cho.grad_chosen[cho.closed_grad_chosen != 0],
                    cho.closed_grad_chosen[cho.closed_grad_chosen != 0],
                ),
            ),
            "chosen_grad_at_min_and_max_pi_rejected": {
                m: [float(d.grad_chosen.iloc[0]), float(d.grad_chosen.iloc[-1])] for m, d in grad_c.items()
            },
            "descent_final_pi_chosen": {f"{m}/start{s}": float(v) for (m, s), v in last.items()},
            "mio_fixed_point": p.fixed_point,
        },
    }


RUNNERS = {
    "dynamics": run_dynamics_part,
    "gaussian": run_gaussian_part,
    "propositions": run_propositions_part,
}


def run(cfg) -> dict:
    """Run the configured parts, write everything to ``cfg.out_dir``, and return (and save) the summary."""
    validate(cfg)
    torch.set_num_threads(cfg.threads)
    out = out_dir(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "matplotlib": figures.matplotlib.__version__,
        },
        "seconds": {},  # wall clock, on a machine other jobs may share
        "cpu_seconds": {},  # this process's CPU time
        "files": {},
        "claims": {},
    }
    for part in cfg.parts:
        start, cpu = time.perf_counter(), time.process_time()
        result = RUNNERS[part](cfg, out)
        summary["seconds"][part] = round(time.perf_counter() - start, 1)
        summary["cpu_seconds"][part] = round(time.process_time() - cpu, 1)
        summary["files"][part] = sorted(p.name for p in result["files"])
        summary["claims"][part] = result["claims"]
        print(
            f"[toy] {part}: {summary['seconds'][part]} s ({summary['cpu_seconds'][part]} s CPU); wrote {', '.join(summary['files'][part])}"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
