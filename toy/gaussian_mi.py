"""Mutual information of correlated Gaussians estimated with DV, MINE and JS critics (the paper's Fig 4).

The standard benchmark of Poole et al. (2019) and Song & Ermon (2020, SMILE code): ``x ~ N(0, I_d)``,
``y = rho x + sqrt(1 - rho^2) eps``, true MI ``-d/2 log(1 - rho^2)``. A concat critic ``T([x, y])`` (an MLP)
is trained with one objective: DV (MINE without its correction), MINE (DV with the moving-average
denominator in the gradient) or JS (the f-GAN Jensen-Shannon bound MIO uses). Each positive pair has K = 1
negative, made by rolling y by one place in the batch (SMILE's ``torch.roll``). All rho of a sweep train at
once as independent critics stacked on a leading axis: Adam is elementwise, so this equals separate runs.

Reported per critic: its DV value on a large fresh sample (the MI estimate; for the JS critic this is the
"DV value of the JS-trained critic", since the JS optimum is the log density ratio), and the gradient
variance of each objective at the trained critic's parameters over many fresh batches.
Run through the entry point (``make toy``); the functions are importable for tests.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toy.stacked import StackedMLP

OBJECTIVES = ("dv", "mine", "js")


def rho_to_mi(rho: float, dim: int) -> float:
    """True MI in nats of the correlated Gaussian: ``-d/2 log(1 - rho^2)`` (SMILE ``rho_to_mi``)."""
    return -0.5 * dim * math.log(1.0 - rho**2)


def sample(rhos: Tensor, dim: int, batch: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """x, y of shape (R, B, d): one correlated-Gaussian batch per rho in ``rhos`` (R,)."""
    x = torch.randn(len(rhos), batch, dim, generator=gen)
    eps = torch.randn(len(rhos), batch, dim, generator=gen)
    r = rhos.view(-1, 1, 1)
    return x, r * x + torch.sqrt(1.0 - r**2) * eps


class StackedCritic(nn.Module):
    """R independent concat critics ``T([x, y])``, stacked: SMILE's ``mlp`` (Linear+ReLU, ``layers`` x
    (Linear+ReLU), Linear) with weights of shape (R, in, out), so one batched matmul runs every rho."""

    def __init__(self, copies: int, dim: int, hidden: int, layers: int, gen: torch.Generator):
        super().__init__()
        self.mlp = StackedMLP.uniform(copies, [2 * dim] + [hidden] * (layers + 1) + [1], gen)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Scores (R, B) of the pairs (x, y), each (R, B, d)."""
        return self.mlp(torch.cat([x, y], dim=-1)).squeeze(-1)  # (R, B, 2d) -> (R, B)


def scores(critic: StackedCritic, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Critic scores (R, B) on the positive pairs and on K = 1 negative each (y rolled by one in the batch)."""
    return critic(x, y), critic(x, torch.roll(y, 1, dims=1))


def dv_bound(t_pos: Tensor, t_neg: Tensor) -> Tensor:
    """Donsker-Varadhan bound (R,): ``mean T(pos) - log mean exp T(neg)`` over the batch axis."""
    return t_pos.mean(-1) - (torch.logsumexp(t_neg, -1) - math.log(t_neg.shape[-1]))


def js_bound(t_pos: Tensor, t_neg: Tensor) -> Tensor:
    """Jensen-Shannon (f-GAN) bound (R,): ``-mean sp(-T(pos)) - mean sp(T(neg))`` (SMILE ``js_fgan_lower_bound``)."""
    return -F.softplus(-t_pos).mean(-1) - F.softplus(t_neg).mean(-1)


def mine_surrogate(
    t_pos: Tensor, t_neg: Tensor, log_ema: Tensor | None, momentum: float
) -> tuple[Tensor, Tensor]:
    """MINE (Belghazi et al. 2018): the DV value, with the gradient of the denominator taken through a moving
    average ``a`` of ``mean e^T(neg)``: ``grad = mean grad T(pos) - mean(e^T(neg) grad T(neg)) / a``, which
    removes the minibatch bias of ``grad log mean e^T``. As in SMILE's ``mine_lower_bound`` the average is
    updated with the current batch before it divides. It is kept as ``log a`` so large critics do not overflow.

    Returns the surrogate (R,), whose value is the DV bound, and the updated ``log a`` (R,). ``log_ema`` None
    (first step) starts the average at the batch value, so no zero-start bias needs correcting.
    """
    lme = torch.logsumexp(t_neg, -1) - math.log(t_neg.shape[-1])  # log mean e^T(neg), (R,)
    with torch.no_grad():
        if log_ema is None:
            new = lme
        else:
            new = torch.logaddexp(math.log(momentum) + log_ema, math.log(1.0 - momentum) + lme)
    ratio = torch.exp(lme - new)  # mean e^T(neg) / a, value ~1; its gradient is the corrected term
    surrogate = t_pos.mean(-1) - lme.detach() - (ratio - ratio.detach())
    return surrogate, new.detach()


def objective(name: str, t_pos: Tensor, t_neg: Tensor, log_ema: Tensor | None, momentum: float):
    """The quantity each method maximises (R,), and the log moving average (MINE only; None otherwise)."""
    if name == "dv":
        return dv_bound(t_pos, t_neg), None
    if name == "js":
        return js_bound(t_pos, t_neg), None
    if name == "mine":
        return mine_surrogate(t_pos, t_neg, log_ema, momentum)
    raise ValueError(f"unknown objective {name!r}; valid: {', '.join(OBJECTIVES)}")


def train_critic(
    name: str,
    rhos: list[float],
    dim: int,
    cfg,
    seed: int,
    iterations: int | None = None,
    on_step: Callable[[int, StackedCritic], None] | None = None,
):
    """Train one stacked critic (one copy per entry of ``rhos``) to maximise objective ``name`` for
    ``iterations`` steps (default ``cfg.iterations``); ``on_step(step, critic)`` runs after each step (step from 1).

    ``cfg`` holds hidden, layers, lr, batch_size, iterations, momentum. Returns the critic and the DV value of
    each training batch, shape (iterations, R).
    """
    gen = torch.Generator().manual_seed(seed)
    r = torch.tensor(rhos, dtype=torch.float32)
    critic = StackedCritic(len(rhos), dim, cfg.hidden, cfg.layers, gen)
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    log_ema, curve = None, []
    for step in range(1, 1 + (cfg.iterations if iterations is None else iterations)):
        x, y = sample(r, dim, cfg.batch_size, gen)
        t_pos, t_neg = scores(critic, x, y)
        value, log_ema = objective(name, t_pos, t_neg, log_ema, cfg.momentum)
        opt.zero_grad()
        (-value.sum()).backward()  # copies do not share parameters: the sum trains each on its own objective
        opt.step()
        curve.append(dv_bound(t_pos, t_neg).detach())
        if on_step is not None:
            on_step(step, critic)
    return critic, torch.stack(curve)


@torch.no_grad()
def evaluate_dv(
    critic: StackedCritic, rhos: list[float], dim: int, n: int, gen: torch.Generator
) -> dict[str, Tensor]:
    """The critic on one fresh sample of ``n`` pairs (rolled negatives), each (R,): its DV value (the MI
    estimate) and the two terms it is the difference of, the mean score of the positives and the log mean
    exp-score of the negatives (a critic whose scores blew up shows here: both terms far above the truth)."""
    x, y = sample(torch.tensor(rhos, dtype=torch.float32), dim, n, gen)
    t_pos, t_neg = scores(critic, x, y)
    pos, neg = t_pos.mean(-1), torch.logsumexp(t_neg, -1) - math.log(n)
    return {"estimate": pos - neg, "pos_mean": pos, "neg_logmeanexp": neg}


def gradient_variance(
    critic: StackedCritic,
    name: str,
    rhos: list[float],
    dim: int,
    batch_size: int,
    repeats: int,
    momentum: float,
    gen: torch.Generator,
    log_ema: Tensor | None = None,
) -> Tensor:
    """Trace of the covariance (R,) of the per-batch gradient of objective ``name`` w.r.t. the critic's
    parameters (held fixed), over ``repeats`` fresh batches: mean squared distance to the mean gradient.

    MINE's moving average runs over the batches as in training, starting from ``log_ema``; the per-batch gradient
    uses the updated average, as a training step would.
    """
    r = torch.tensor(rhos, dtype=torch.float32)
    params = list(critic.parameters())
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]  # running sum of gradients
    sq = torch.zeros(len(rhos), dtype=torch.float64)  # running sum of squared gradient norms, (R,)
    for _ in range(repeats):
        x, y = sample(r, dim, batch_size, gen)
        t_pos, t_neg = scores(critic, x, y)
        value, log_ema = objective(name, t_pos, t_neg, log_ema, momentum)
        grads = torch.autograd.grad(value.sum(), params)  # slice i of each gradient belongs to rho i
        for acc, g in zip(total, grads, strict=True):
            acc += g.double()
        sq += sum(g.double().pow(2).flatten(1).sum(1) for g in grads)
    mean_sq = sum(acc.pow(2).flatten(1).sum(1) for acc in total) / repeats**2  # ||mean grad||^2, (R,)
    return (sq / repeats - mean_sq) * repeats / (repeats - 1)


def _checkpoint(found: dict, steps, rhos, dim, n, gen, step: int, critic: StackedCritic) -> None:
    """``train_critic``'s ``on_step``: at each of ``steps``, ``found[step]`` = ``evaluate_dv`` of the critic."""
    if step in steps:
        found[step] = evaluate_dv(critic, rhos, dim, n, gen)


def run_gaussian(cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every sweep x seed x objective of ``cfg`` (the ``gaussian`` node); a sweep's own ``iterations`` and
    ``grad_repeats`` replace the node's (``grad_repeats`` 0: no gradient variance). A rho listed several times in a sweep gets that many independent critics (stacked copies), so its
    estimate has a spread. The fresh-sample estimate is also taken at each step of ``eval_at`` below the last
    (same training run: one critic seen at several lengths).

    Returns the estimates (one row per sweep, rho copy, objective, seed and evaluated step: truth, the critic's DV
    estimate on a fresh sample and its two terms, the mean DV of the last 10% of training batches before that
    step) and the gradient variances at the end of training (one row per sweep, rho copy, critic objective, seed,
    gradient objective)."""
    est_rows, var_rows = [], []
    for sweep in cfg.sweeps:
        dim, rhos = int(sweep.dim), [float(r) for r in sweep.rhos]
        steps = int(sweep.iterations or cfg.iterations)
        checks = sorted({int(s) for s in cfg.eval_at if 0 < s < steps} | {steps})
        copies, seen = [], {}  # copy index of each entry among the entries with the same rho
        for r in rhos:
            copies.append(seen.get(r, 0))
            seen[r] = copies[-1] + 1
        labels = [
            {"sweep": sweep.name, "dim": dim, "rho": r, "true_mi": rho_to_mi(r, dim), "copy": c}
            for r, c in zip(rhos, copies, strict=True)
        ]
        for seed in cfg.seeds:
            for k, name in enumerate(OBJECTIVES):
                gen = torch.Generator().manual_seed(
                    seed * 100 + 10 + k
                )  # evaluation only: training is untouched
                curve_at: dict[int, dict[str, Tensor]] = {}
                evaluate = functools.partial(_checkpoint, curve_at, checks, rhos, dim, cfg.eval_samples, gen)
                critic, curve = train_critic(
                    name, rhos, dim, cfg, seed=seed * 100 + k, iterations=steps, on_step=evaluate
                )
                for step, ev in curve_at.items():
                    tail = curve[step - max(1, step // 10) : step].mean(0)  # last 10% of batches before it
                    for i, label in enumerate(labels):
                        est_rows.append(
                            label
                            | {"objective": name, "seed": seed, "iterations": step}
                            | {c: v[i].item() for c, v in ev.items()}
                            | {"train_dv_tail": tail[i].item()}
                        )
                repeats = cfg.grad_repeats if sweep.grad_repeats is None else int(sweep.grad_repeats)
                if repeats == 0:
                    continue  # no gradient variance for this sweep
                # MINE's average at fixed parameters starts at its stationary value: log mean e^T(neg).
                x, y = sample(torch.tensor(rhos), dim, cfg.eval_samples, gen)
                with torch.no_grad():
                    t_neg = scores(critic, x, y)[1]  # (R, N)
                    start = torch.logsumexp(t_neg, -1) - math.log(t_neg.shape[-1])
                for grad_name in OBJECTIVES:
                    var = gradient_variance(
                        critic, grad_name, rhos, dim, cfg.batch_size, repeats, cfg.momentum, gen, start
                    )
                    for i, label in enumerate(labels):
                        var_rows.append(
                            label
                            | {
                                "critic": name,
                                "seed": seed,
                                "objective": grad_name,
                                "grad_variance": var[i].item(),
                            }
                        )
    var_columns = ["sweep", "dim", "rho", "true_mi", "copy", "critic", "seed", "objective", "grad_variance"]
    return pd.DataFrame(est_rows), pd.DataFrame(var_rows, columns=var_columns)


def summarise(estimates: pd.DataFrame, variances: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per sweep, evaluated step, rho and objective: the estimate's mean, sd, min, max and count over seeds and
    copies, and their means of the critic's terms; per critic and gradient objective, the geometric mean of the
    variances (they span orders of magnitude)."""
    keys = ["sweep", "dim", "iterations", "rho", "true_mi", "objective"]
    groups = estimates.groupby(keys, sort=False)
    est = groups["estimate"].agg(["mean", "std", "min", "max", "count"])
    est = est.join(groups[["pos_mean", "neg_logmeanexp", "train_dv_tail"]].mean()).reset_index()
    var = variances.groupby(
        ["sweep", "dim", "rho", "true_mi", "critic", "objective"], as_index=False, sort=False
    )["grad_variance"].agg(lambda v: float(np.exp(np.log(v).mean())))
    return est, var
