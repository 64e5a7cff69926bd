"""The toy experiments end to end: run each part, write its data (CSV), its figures (PNG + PDF) and a summary.

``run(cfg)`` takes the composed ``conf/toy`` config; ``toy/run.py`` is its Hydra entry point (``make toy``).
Files written to ``cfg.out_dir`` (names are fixed; the README links them):

- ``fig1_toy_setup`` (+ ``fig1_toy_setup.csv``): optimal policy, preference set, initial policies.
- ``fig2_likelihood_dynamics`` and ``fig2b_all_methods`` (+ ``dynamics_records.csv``, ``dynamics_summary.csv``).
- ``fig2c_optimizers`` (+ ``dynamics_variants.csv``, ``dynamics_variants_summary.csv``): Fig 2's methods
  under other optimizers.
- ``fig4_gaussian_mi`` (+ ``fig4_estimates.csv``, ``fig4_grad_variance.csv``).
- ``props_gradients`` (+ ``props_rejected_sweep.csv``, ``props_chosen_sweep.csv``, ``props_descent.csv``).
- ``summary.json``: resolved config, versions, timings, files, and the numbers behind every claim.
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

PARTS = ("dynamics", "gaussian", "propositions")
FLOAT_FORMAT = "%.6g"


def validate(cfg) -> None:
    """Fail early, naming the valid choices, on unknown parts, methods, scenarios or loss hyperparameters."""
    unknown = set(cfg.parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; valid: {', '.join(PARTS)}")
    d = cfg.dynamics
    for method in d.methods:
        get_method(method)
        dynamics.loss_kwargs_for(method, d.loss_kwargs)
    for method in d.loss_kwargs:
        get_method(method)
    missing = set(d.figure_methods) - set(d.methods)
    if missing:
        raise ValueError(f"dynamics.figure_methods names methods not in dynamics.methods: {sorted(missing)}")
    if d.claim_scenario not in d.scenarios:
        raise ValueError(f"dynamics.claim_scenario {d.claim_scenario!r} is not one of {list(d.scenarios)}")


def out_dir(path: str) -> Path:
    """``path`` as given if absolute, else relative to the repository root (the folder above ``toy/``)."""
    p = Path(path)
    return p if p.is_absolute() else Path(dynamics.__file__).resolve().parents[1] / p


def _csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False, float_format=FLOAT_FORMAT)
    return path


def run_dynamics_part(cfg, out: Path) -> dict:
    """Figs 1-2: train every method in every scenario; returns the files and the late-decline claim numbers."""
    d = cfg.dynamics
    records, variants, setup = dynamics.run_dynamics(d)
    summary = dynamics.peak_and_final(records)  # from every epoch, before the CSV's stride
    summary["declines"] = dynamics.declines(summary, d.claim_drop)
    base = f"{d.optimizer}_lr{d.lr:g}"
    both = pd.concat([records[records.method.isin(d.figure_methods)].assign(variant=base), variants])
    var_summary = dynamics.peak_and_final(both, keys=("variant",))
    var_summary["declines"] = dynamics.declines(var_summary, d.claim_drop)
    labels = {name: sc.label for name, sc in d.scenarios.items()}
    keep = lambda r: r[(r.epoch % d.record_every == 0) | (r.epoch == d.epochs)]  # noqa: E731
    strided, strided_both = keep(records), keep(both)
    files = [
        _csv(setup, out / "fig1_toy_setup.csv"),
        _csv(strided, out / "dynamics_records.csv"),
        _csv(summary, out / "dynamics_summary.csv"),
        _csv(keep(variants), out / "dynamics_variants.csv"),
        _csv(var_summary, out / "dynamics_variants_summary.csv"),
    ]
    files += figures.fig_setup(setup[setup.seed == d.seeds[0]], labels, out / "fig1_toy_setup", cfg.dpi)
    files += figures.fig_dynamics(
        strided, list(d.figure_methods), labels, out / "fig2_likelihood_dynamics", cfg.dpi
    )
    files += figures.fig_all_methods(strided, list(d.methods), labels, out / "fig2b_all_methods", cfg.dpi)
    files += figures.fig_variants(
        strided_both, list(d.figure_methods), labels, out / "fig2c_optimizers", cfg.dpi
    )
    by_variant = var_summary.groupby(["variant", "scenario", "method"]).agg(
        final_mean=("final", "mean"), ratio_mean=("ratio", "mean"), seeds_declining=("declines", "sum")
    )
    table = summary.groupby(["scenario", "method"]).agg(
        initial_mean=("initial", "mean"),
        peak_mean=("peak", "mean"),
        final_mean=("final", "mean"),
        ratio_mean=("ratio", "mean"),
        ratio_min=("ratio", "min"),
        ratio_max=("ratio", "max"),
        seeds_declining=("declines", "sum"),
        seeds=("declines", "size"),
    )
    claim = summary[summary.scenario == d.claim_scenario].set_index(["method", "seed"])
    return {
        "files": files,
        "claims": {
            "late_chosen_decline": {
                "scenario": d.claim_scenario,
                "drop": d.claim_drop,
                "final_over_peak": {
                    f"{m}/seed{s}": round(float(r), 4) for (m, s), r in sorted(claim["ratio"].items())
                },
                "dpo_declines_mio_not": bool(
                    claim.loc["dpo", "declines"].all() and not claim.loc["mio", "declines"].any()
                )
                if {"dpo", "mio"} <= set(d.methods)
                else None,
            },
            "chosen_by_scenario": {  # seed means of pi(chosen) at epoch 0, at its peak, at the end
                f"{s}/{m}": {k: round(float(v), 4) for k, v in row.items()}
                for (s, m), row in table.iterrows()
            },
            "by_optimizer": {  # figure_methods under the configured optimizer and each variant
                f"{v}/{sc}/{m}": {k: round(float(x), 4) for k, x in row.items()}
                for (v, sc, m), row in by_variant.iterrows()
            },
            "warmup_kl_max": float(setup.warmup_kl.max()),
        },
    }


def run_gaussian_part(cfg, out: Path) -> dict:
    """Fig 4: train the critics, estimate MI and gradient variances; returns the files and claim numbers."""
    estimates, variances = gaussian_mi.run_gaussian(cfg.gaussian)
    est, var = gaussian_mi.summarise(estimates, variances)
    files = [_csv(estimates, out / "fig4_estimates.csv"), _csv(variances, out / "fig4_grad_variance.csv")]
    files += figures.fig_gaussian(
        est.rename(columns={"mean": "estimate"}), var, out / "fig4_gaussian_mi", cfg.dpi
    )
    claims = {}
    for sweep, e in est.groupby("sweep", sort=False):
        v = var[var.sweep == sweep]
        own = v[v.critic == v.objective].pivot(index="rho", columns="objective", values="grad_variance")
        at_js = v[v.critic == "js"].pivot(index="rho", columns="objective", values="grad_variance")
        by_obj = e.pivot(index="rho", columns="objective", values="mean")
        claims[sweep] = {
            "true_mi": dict(
                zip(
                    map(float, e.drop_duplicates("rho").rho),
                    map(float, e.drop_duplicates("rho").true_mi),
                    strict=True,
                )
            ),
            "estimate": {o: [round(float(x), 4) for x in by_obj[o]] for o in by_obj},
            "estimate_increasing": {o: bool(np.all(np.diff(by_obj[o].to_numpy()) > 0)) for o in by_obj},
            "grad_variance_own_critic": {o: [float(f"{x:.4g}") for x in own[o]] for o in own},
            "js_below_dv_and_mine_own_critic": bool((own.js < own[["dv", "mine"]].min(axis=1)).all()),
            "js_below_dv_and_mine_at_js_critic": bool((at_js.js < at_js[["dv", "mine"]].min(axis=1)).all()),
        }
    return {"files": files, "claims": claims}


def run_propositions_part(cfg, out: Path) -> dict:
    """Props 3.1/3.2: probability-space gradient sweeps; returns the files and claim numbers."""
    p = cfg.propositions
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
    files += figures.fig_propositions(rej, cho, desc, out / "props_gradients", cfg.dpi)
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
        "seconds": {},
        "files": {},
        "claims": {},
    }
    for part in cfg.parts:
        start = time.perf_counter()
        result = RUNNERS[part](cfg, out)
        summary["seconds"][part] = round(time.perf_counter() - start, 1)
        summary["files"][part] = sorted(p.name for p in result["files"])
        summary["claims"][part] = result["claims"]
        print(f"[toy] {part}: {summary['seconds'][part]} s; wrote {', '.join(summary['files'][part])}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
