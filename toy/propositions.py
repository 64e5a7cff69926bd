"""Propositions 3.1 / 3.2 checked in probability space: loss gradients w.r.t. pi+ (chosen) and pi- (rejected).

The losses are those of ``align.losses`` evaluated at ``logps = log pi`` with the reference fixed, and
differentiated by autograd in float64; the closed forms are those of ../shared/reference/paper-research.md
section 1.4 (our derivation; the paper's statements could not be read):

- DPO, ``h = T_w - T_l``: ``dl/dpi+ = -beta s(-h) / pi+`` and ``dl/dpi- = beta s(-h) / pi-``; so
  ``(dl/dpi-) / (dl/dpi+) = -pi+ / pi-`` and the chosen gradient vanishes like ``(pi-)^beta`` as pi- -> 0
  (Prop 3.1: DPO degrades into suppressing the rejected).
- MIO, ``u = (pi+/pi_ref+)^beta``, ``v = (pi-/pi_ref-)^beta``: ``dl/dpi+ = beta (u - 2) / (2 pi+ (u + 1))``,
  independent of pi-, zero at ``pi+ = 2^(1/beta) pi_ref+`` and positive above it (Prop 3.2: the chosen is
  pushed up to that point and held there); ``dl/dpi- = beta v / (2 pi- (v + 1))``.

Run through the entry point (``make toy``); the functions are importable for tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from align.losses import LOSSES


def autograd_grads(method: str, pi_c, pi_r, ref_c, ref_r, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """d loss / d pi+ and d loss / d pi- of ``LOSSES[method]`` at the given probabilities (broadcast arrays)."""
    pc, pr, rc, rr = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=torch.float64) for v in (pi_c, pi_r, ref_c, ref_r))
    )
    pc, pr = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
    out = LOSSES[method].fn(pc.log(), pr.log(), rc.log(), rr.log(), beta=beta)
    g_c, g_r = torch.autograd.grad(
        out.losses.sum(), (pc, pr)
    )  # per-example losses: the sum keeps each gradient
    return g_c.numpy(), g_r.numpy()


def dpo_closed_form(pi_c, pi_r, ref_c, ref_r, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """DPO's probability-space gradients (d/dpi+, d/dpi-), written out by hand."""
    h = beta * (np.log(pi_c / ref_c) - np.log(pi_r / ref_r))
    s = 1.0 / (1.0 + np.exp(h))  # sigmoid(-h)
    return -beta * s / pi_c, beta * s / pi_r


def mio_closed_form(pi_c, pi_r, ref_c, ref_r, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """MIO's probability-space gradients (d/dpi+, d/dpi-), written out by hand (paper-research.md 1.4)."""
    u = (pi_c / ref_c) ** beta
    v = (pi_r / ref_r) ** beta
    g_c = beta * (u - 2.0) / (2.0 * pi_c * (u + 1.0))
    g_r = beta * v / (2.0 * pi_r * (v + 1.0))
    return g_c + 0.0 * pi_r, g_r + 0.0 * pi_c  # broadcast both to the common shape


CLOSED_FORMS = {"dpo": dpo_closed_form, "mio": mio_closed_form}


def mio_chosen_fixed_point(ref_c: float, beta: float) -> float:
    """The pi+ at which MIO's chosen gradient vanishes: ``2^(1/beta) pi_ref+`` (T_w = ln 2)."""
    return 2.0 ** (1.0 / beta) * ref_c


def rejected_sweep(cfg) -> pd.DataFrame:
    """Prop 3.1: both methods' gradients at fixed pi+ as pi- falls over ``cfg.rejected_grid`` (log10 range)."""
    lo, hi, n = cfg.rejected_grid
    pi_r = np.logspace(hi, lo, int(n))
    rows = []
    for method, closed in CLOSED_FORMS.items():
        args = (cfg.chosen_prob, pi_r, cfg.reference_prob, cfg.reference_prob, cfg.beta)
        a_c, a_r = autograd_grads(method, *args)
        c_c, c_r = closed(*args)
        rows.append(
            pd.DataFrame(
                {
                    "method": method,
                    "beta": cfg.beta,
                    "pi_chosen": cfg.chosen_prob,
                    "pi_rejected": pi_r,
                    "grad_chosen": a_c,
                    "grad_rejected": a_r,
                    "closed_grad_chosen": c_c,
                    "closed_grad_rejected": c_r,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def chosen_sweep(cfg) -> pd.DataFrame:
    """Prop 3.2: MIO's (and DPO's) chosen gradient as pi+ / pi_ref+ runs over ``cfg.ratio_grid``, per beta.

    pi_ref+ is set per beta so the fixed point ``2^(1/beta) pi_ref+`` is ``cfg.fixed_point`` (inside (0, 1)).
    """
    lo, hi, n = cfg.ratio_grid
    ratio = np.logspace(lo, hi, int(n))
    rows = []
    for beta in cfg.betas:
        ref_c = cfg.fixed_point / 2.0 ** (1.0 / beta)
        pi_c = np.clip(ratio * ref_c, None, 1.0)
        for method, closed in CLOSED_FORMS.items():
            args = (pi_c, cfg.reference_prob, ref_c, cfg.reference_prob, beta)
            a_c, _ = autograd_grads(method, *args)
            c_c, _ = closed(*args)
            rows.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "beta": beta,
                        "ref_chosen": ref_c,
                        "ratio": pi_c / ref_c,
                        "pi_chosen": pi_c,
                        "grad_chosen": a_c,
                        "closed_grad_chosen": c_c,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True).drop_duplicates(["method", "beta", "pi_chosen"])


def chosen_descent(cfg) -> pd.DataFrame:
    """Projected gradient descent on pi+ alone (pi- fixed), ``pi+ <- clip(pi+ - lr * dl/dpi+, eps, 1)``, from
    several starts: MIO settles at its fixed point from below and above; DPO runs to the boundary pi+ = 1.

    The step is scaled by pi+ (a natural-gradient step, ``dlog pi+ = -lr pi+ dl/dpi+``) so small probabilities
    move at all, as the softmax parametrisation would move them.
    """
    beta = cfg.beta
    ref_c = cfg.fixed_point / 2.0 ** (1.0 / beta)
    rows = []
    for method in CLOSED_FORMS:
        for start in cfg.descent_starts:
            pi_c = float(start)
            for step in range(int(cfg.descent_steps) + 1):
                rows.append({"method": method, "beta": beta, "start": start, "step": step, "pi_chosen": pi_c})
                g_c, _ = autograd_grads(method, pi_c, cfg.reference_prob, ref_c, cfg.reference_prob, beta)
                log_pi = np.log(pi_c) - cfg.descent_lr * pi_c * float(g_c)
                pi_c = float(np.clip(np.exp(log_pi), 1e-12, 1.0))
    return pd.DataFrame(rows)
