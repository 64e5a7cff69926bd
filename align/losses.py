"""Preference losses: one pure function per method, and the registry that names them.

Every loss takes per-sequence log-probs of shape (B,) under the policy and, where the method needs one, the
frozen reference, plus its own keyword-only hyperparameters, and returns a ``LossOutput`` of per-example
losses and the implicit rewards it logs. Nothing here touches a model.

Notation (as in ../shared/PAPER.md): ``sp(u) = softplus(u) = log(1 + e^u)``, the critic (DPO's implicit reward)
``T = beta * (log pi_theta(y|x) - log pi_ref(y|x))``, ``T_w``/``T_l`` on the chosen/rejected response.

Adding a method touches three places: a function here, an entry in ``LOSSES``, and ``conf/method/<name>.yaml``.
The keyword-only arguments of the function *are* the method's config schema (see ``align/config.py``).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

LN2 = math.log(2.0)


class LossOutput(NamedTuple):
    """Per-example losses and the rewards logged as ``rewards/chosen`` and ``rewards/rejected``; all (B,)."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


def _logratios(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor) -> tuple[Tensor, Tensor]:
    return pc - rc, pr - rr


def mio(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    chosen_negative_weight: float = 0.5,
    negative_weight: float = 1.0,
) -> LossOutput:
    """MIO: minus the Jensen-Shannon MI estimate with the log-ratio critic (PAPER.md, "The losses").

    ``L = sp(-T_w) + z * (a * sp(T_w) + (1 - a) * sp(T_l))`` with ``a = chosen_negative_weight`` (the weight of
    the chosen response in the negative mix) and ``z = negative_weight`` (the weight of the negative term).
    The defaults ``a = 1/2, z = 1`` give the paper's "half-mix" formula
    ``sp(-T_w) + 1/2 sp(T_w) + 1/2 sp(T_l)``, which is term for term the pairwise NCA loss (``nca_pair``);
    ``a = 0, z = 1`` gives ``bco_pair``. Value ln 4 at policy = reference. The chosen gradient
    ``dL/dT_w = -sigmoid(-T_w) + a z sigmoid(T_w)`` does not depend on ``T_l`` and vanishes at
    ``T_w = -ln(a z)`` (ln 2 at the defaults).
    """
    tw = beta * (policy_chosen_logps - reference_chosen_logps)
    tl = beta * (policy_rejected_logps - reference_rejected_logps)
    negatives = chosen_negative_weight * F.softplus(tw) + (1.0 - chosen_negative_weight) * F.softplus(tl)
    losses = F.softplus(-tw) + negative_weight * negatives
    return LossOutput(losses, tw.detach(), tl.detach())


def dpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """DPO (Rafailov et al. 2023, Eq. 7): ``-log sigmoid(T_w - T_l)``; equals ``ln 2 - I_DV`` (half-mix DV bound)."""
    cw, cl = _logratios(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    losses = -F.logsigmoid(beta * (cw - cl))
    return LossOutput(losses, beta * cw.detach(), beta * cl.detach())


def cdpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.1,
) -> LossOutput:
    """Conservative DPO (Mitchell 2023): labels flipped with probability eps = ``label_smoothing``.

    ``-(1 - eps) log sigmoid(h) - eps log sigmoid(-h)``, ``h = T_w - T_l``; eps = 0 is DPO.
    """
    cw, cl = _logratios(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    h = beta * (cw - cl)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    return LossOutput(losses, beta * cw.detach(), beta * cl.detach())


def ipo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """IPO (Azar et al. 2023, Eq. 17): ``(h - 1/(2 beta))^2`` with ``h`` the log-ratio margin (beta plays tau).

    TRL length-normalises IPO's log-probs (per-token means); ``conf/method/ipo.yaml`` does the same.
    """
    cw, cl = _logratios(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    losses = (cw - cl - 1.0 / (2.0 * beta)) ** 2
    return LossOutput(losses, beta * cw.detach(), beta * cl.detach())


def hinge(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """SLiC/RSO hinge (Zhao et al. 2023; Liu et al. 2024): ``relu(1 - beta h)``; beta is 1 / margin."""
    cw, cl = _logratios(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    losses = torch.relu(1.0 - beta * (cw - cl))
    return LossOutput(losses, beta * cw.detach(), beta * cl.detach())


def nca_pair(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """Pairwise NCA (Chen et al. 2024; TRL ``nca_pair``): ``-log s(T_w) - 1/2 log s(-T_w) - 1/2 log s(-T_l)``.

    Written as in the NCA code, independently of ``mio``, so the equivalence test compares two derivations.
    """
    tw = beta * (policy_chosen_logps - reference_chosen_logps)
    tl = beta * (policy_rejected_logps - reference_rejected_logps)
    losses = -F.logsigmoid(tw) - 0.5 * F.logsigmoid(-tw) - 0.5 * F.logsigmoid(-tl)
    return LossOutput(losses, tw.detach(), tl.detach())


def bco_pair(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    delta: float = 0.0,
) -> LossOutput:
    """Pairwise BCO (Jung et al. 2024): ``-log s(T_w - delta) - log s(-(T_l - delta))``.

    The BCO paper shifts rewards by a running mean delta; a pure function cannot keep one, so delta is a fixed knob
    (delta = 0 is the unshifted binary classifier). TRL 1.16's ``bco_pair`` keeps no running mean either: it is this
    loss at delta = 0.
    """
    tw = beta * (policy_chosen_logps - reference_chosen_logps)
    tl = beta * (policy_rejected_logps - reference_rejected_logps)
    losses = -F.logsigmoid(tw - delta) - F.logsigmoid(-(tl - delta))
    return LossOutput(losses, tw.detach(), tl.detach())


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - e^x)`` for ``x < 0``, accurate over the whole range (Maechler 2012): ``log(-expm1(x))`` near 0,
    ``log1p(-exp(x))`` below ``-ln 2``. Each branch sees only inputs where it is finite, so no NaN gradient leaks
    through ``where``; ``x`` is capped just below 0, where the value is -inf."""
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    near = torch.log(-torch.expm1(x.clamp(min=-math.log(2))))
    far = torch.log1p(-torch.exp(x.clamp(max=-math.log(2))))
    return torch.where(x > -math.log(2), near, far)


def orpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor | None = None,
    reference_rejected_logps: Tensor | None = None,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """ORPO's odds-ratio term (Hong et al. 2024, Eq. 7), reference-free, over per-token mean log-probs ``m``.

    ``-beta * log s(log odds(y_w) - log odds(y_l))``, ``log odds = m - log(1 - e^m)``; beta is the paper's lambda.
    ORPO's NLL term is the generic SFT term (``sft_weight: 1.0`` in ``conf/method/orpo.yaml``).
    Rewards as TRL logs them: ``beta * m``.
    """
    pc, pr = policy_chosen_logps, policy_rejected_logps
    log_odds = (pc - log1mexp(pc)) - (pr - log1mexp(pr))
    losses = -beta * F.logsigmoid(log_odds)
    return LossOutput(losses, beta * pc.detach(), beta * pr.detach())


def simpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor | None = None,
    reference_rejected_logps: Tensor | None = None,
    *,
    beta: float = 2.0,
    gamma_beta_ratio: float = 0.5,
) -> LossOutput:
    """SimPO (Meng et al. 2024, Eq. 6), reference-free, over per-token mean log-probs ``m``:
    ``-log s(beta (m_w - m_l) - gamma)`` with ``gamma = beta * gamma_beta_ratio``. Rewards: ``beta * m``.
    """
    h = policy_chosen_logps - policy_rejected_logps - gamma_beta_ratio
    losses = -F.logsigmoid(beta * h)
    return LossOutput(losses, beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach())


def apo_zero(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """Anchored APO-zero (D'Oosterlinck et al. 2024; TRL ``apo_zero``): ``(1 - s(T_w)) + s(T_l)``."""
    tw = beta * (policy_chosen_logps - reference_chosen_logps)
    tl = beta * (policy_rejected_logps - reference_rejected_logps)
    losses = (1.0 - torch.sigmoid(tw)) + torch.sigmoid(tl)
    return LossOutput(losses, tw.detach(), tl.detach())


def sppo_hard(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """Hard-label SPPO (Wu et al. 2024; TRL ``sppo_hard``): ``(c_w - 1/(2 beta))^2 + (c_l + 1/(2 beta))^2``
    over the log-ratios ``c``: pushes the chosen log-ratio to +1/(2 beta), the rejected to -1/(2 beta).
    """
    cw, cl = _logratios(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    losses = (cw - 0.5 / beta) ** 2 + (cl + 0.5 / beta) ** 2
    return LossOutput(losses, beta * cw.detach(), beta * cl.detach())


@dataclass(frozen=True)
class Method:
    """A registry entry: the loss function and what the training loop must give it."""

    fn: Callable[..., LossOutput]
    needs_reference: bool
    # Default for the config key ``length_normalize``: per-token means instead of sums over response tokens.
    length_normalize: bool = False


LOSSES: dict[str, Method] = {
    "mio": Method(mio, needs_reference=True),
    "dpo": Method(dpo, needs_reference=True),
    "cdpo": Method(cdpo, needs_reference=True),
    "ipo": Method(ipo, needs_reference=True, length_normalize=True),
    "hinge": Method(hinge, needs_reference=True),
    "nca_pair": Method(nca_pair, needs_reference=True),
    "bco_pair": Method(bco_pair, needs_reference=True),
    "orpo": Method(orpo, needs_reference=False, length_normalize=True),
    "simpo": Method(simpo, needs_reference=False, length_normalize=True),
    "apo_zero": Method(apo_zero, needs_reference=True),
    "sppo_hard": Method(sppo_hard, needs_reference=True),
}


def get_method(name: str) -> Method:
    """The registry entry for ``name``, or a ValueError that lists the valid names."""
    if name not in LOSSES:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


@functools.cache
def hyperparameters(name: str) -> dict[str, object]:
    """The method's keyword-only hyperparameters and their defaults, read from the function signature."""
    sig = inspect.signature(get_method(name).fn)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def mi_estimates(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, Tensor]:
    """Batch MI estimates (0-d tensors) with the critic ``T`` = the logged rewards and half-mix negatives (PAPER.md).

    DV (MINE): ``T_w - log(1/2 e^T_w + 1/2 e^T_l) = ln 2 + log s(T_w - T_l)``, the bound DPO maximises.
    JS: ``-sp(-T_w) - 1/2 sp(T_w) - 1/2 sp(T_l)``, the bound MIO maximises. Both are batch means.
    """
    tw, tl = chosen_rewards.float(), rejected_rewards.float()
    dv = LN2 + F.logsigmoid(tw - tl)
    js = -F.softplus(-tw) - 0.5 * F.softplus(tw) - 0.5 * F.softplus(tl)
    return {"mi/dv": dv.mean(), "mi/js": js.mean()}
