"""Likelihood dynamics of preference losses on a toy policy (the paper's Figs 1-2, after the 3D-properties toy).

A small MLP maps a one-hot prompt (4 prompts) to logits over 10 responses. Each prompt has one chosen and one
rejected response; the other 8 are never seen in training. A short SFT warm-up sets the initial probability of
the chosen and rejected responses ("very small" or "normal": the four scenarios); the warmed-up policy is the
reference. Every method of ``align.losses.LOSSES`` then trains a copy for a few hundred full-batch epochs, and
each epoch records the chosen, rejected and unseen probability mass and the loss gradient on the chosen and
rejected response, both with respect to the probability (d loss / d pi) and to the logit.

Run through the entry point (``make toy``); ``train_method`` and ``run_dynamics`` are importable for tests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from align.losses import LOSSES, hyperparameters, mi_estimates

# What train_method records per epoch (means over prompts; gradients are of the per-pair loss).
RECORD_COLUMNS = (
    "chosen",  # pi(chosen | x)
    "rejected",  # pi(rejected | x)
    "unseen",  # total probability of the unseen responses
    "loss",
    "grad_pi_chosen",  # d loss / d pi(chosen)
    "grad_pi_rejected",  # d loss / d pi(rejected)
    "grad_logit_chosen",  # d loss / d logit(chosen)
    "grad_logit_rejected",  # d loss / d logit(rejected)
    "mi_dv",  # align.losses.mi_estimates on the logged rewards: the half-mix DV bound DPO maximises
    "mi_js",  # ... and the JS bound MIO maximises (reference-free methods: their rewards are beta * log pi)
)
# Keyword that adds the pipeline's generic SFT term (ORPO's NLL on the chosen); not a loss hyperparameter.
SFT_WEIGHT = "sft_weight"


@dataclass(frozen=True)
class PreferenceSet:
    """The toy task: an assumed optimal policy and the preference pair built from it, per prompt."""

    optimal: Tensor  # (P, V) optimal policy pi*(y|x)
    chosen: Tensor  # (P,) index of the chosen response: the argmax of pi*
    rejected: Tensor  # (P,) index of the rejected response: the argmin of pi*

    @property
    def unseen(self) -> Tensor:
        """(P, V) mask of responses that are neither chosen nor rejected for that prompt."""
        mask = torch.ones_like(self.optimal, dtype=torch.bool)
        rows = torch.arange(len(self.chosen))
        mask[rows, self.chosen] = False
        mask[rows, self.rejected] = False
        return mask


def make_preference_set(num_prompts: int, num_responses: int, temperature: float, seed: int) -> PreferenceSet:
    """Draw pi* = softmax(scores / temperature) with Gaussian scores and label one pair per prompt with it.

    Prompt by prompt, the chosen response is the best under pi* and the rejected the worst, among responses
    no earlier prompt has used: no response is chosen for one prompt and rejected for another, a label conflict
    that would confound the likelihood dynamics. The paper's construction is not known; this one is ours.
    """
    if 2 * num_prompts > num_responses:
        raise ValueError(
            f"{num_prompts} prompts need at least {2 * num_prompts} responses for disjoint pairs"
        )
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(num_prompts, num_responses, generator=gen)  # (P, V)
    optimal = torch.softmax(scores / temperature, dim=-1)
    free = torch.ones(num_responses, dtype=torch.bool)
    chosen, rejected = [], []
    for row in optimal:
        c = int(row.masked_fill(~free, -1.0).argmax())
        free[c] = False
        r = int(row.masked_fill(~free, 2.0).argmin())
        free[r] = False
        chosen.append(c)
        rejected.append(r)
    return PreferenceSet(optimal, torch.tensor(chosen), torch.tensor(rejected))


def warmup_target(prefs: PreferenceSet, chosen_prob: float, rejected_prob: float) -> Tensor:
    """(P, V) SFT target: the scenario's chosen and rejected probability, the rest spread evenly over unseen."""
    unseen = prefs.unseen
    rest = (1.0 - chosen_prob - rejected_prob) / unseen.sum(-1, keepdim=True)  # (P, 1)
    target = unseen.float() * rest
    rows = torch.arange(len(prefs.chosen))
    target[rows, prefs.chosen] = chosen_prob
    target[rows, prefs.rejected] = rejected_prob
    return target


def make_policy(num_prompts: int, num_responses: int, hidden: int, layers: int, seed: int) -> nn.Sequential:
    """MLP from a one-hot prompt to response logits: ``layers`` Linear layers with ReLU between them."""
    torch.manual_seed(seed)
    widths = [num_prompts] + [hidden] * (layers - 1) + [num_responses]
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        mods.append(nn.Linear(a, b))
        if i < layers - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def sft_warmup(policy: nn.Module, target: Tensor, steps: int, lr: float) -> float:
    """Fit the policy to ``target`` (P, V) by cross-entropy with soft labels, in place; returns the final KL."""
    prompts = torch.eye(target.shape[0])
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    for _ in range(steps):
        logp = F.log_softmax(policy(prompts), dim=-1)  # (P, V)
        loss = -(target * logp).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logp = F.log_softmax(policy(prompts), dim=-1)
        return (target * (target.clamp_min(1e-12).log() - logp)).sum(-1).mean().item()


def _pair_logps(policy: nn.Module, prefs: PreferenceSet) -> tuple[Tensor, Tensor, Tensor]:
    """Logits (P, V), and the chosen and rejected log-probs (P,) each: one response = one token, sum = mean."""
    logits = policy(torch.eye(prefs.optimal.shape[0]))  # (P, V)
    logp = F.log_softmax(logits, dim=-1)
    rows = torch.arange(len(prefs.chosen))
    return logits, logp[rows, prefs.chosen], logp[rows, prefs.rejected]


def train_method(
    method: str,
    policy: nn.Module,
    prefs: PreferenceSet,
    *,
    epochs: int,
    lr: float,
    optimizer: str = "adam",
    loss_kwargs: dict | None = None,
) -> pd.DataFrame:
    """Train a copy of ``policy`` (also the frozen reference) with ``method``; one row per epoch, 0..epochs.

    Row ``e`` holds the state after ``e`` updates: mean over prompts of pi(chosen), pi(rejected), the unseen
    mass, the loss, and the gradient of the per-pair loss w.r.t. pi and w.r.t. the logit of the chosen and the
    rejected response (at ``e = epochs`` these are measured but no step is taken).
    """
    entry = LOSSES[method]
    kwargs = dict(loss_kwargs or {})
    sft_weight = float(kwargs.pop(SFT_WEIGHT, 0.0))
    reference = copy.deepcopy(policy).requires_grad_(False)
    policy = copy.deepcopy(policy)
    opt_cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[optimizer]
    opt = opt_cls(policy.parameters(), lr=lr)
    with torch.no_grad():
        _, ref_c, ref_r = _pair_logps(reference, prefs)
    rows = torch.arange(len(prefs.chosen))
    unseen = prefs.unseen
    n = len(rows)  # gradients are of the batch mean: times P gives the per-pair gradient
    records = []
    for epoch in range(epochs + 1):
        logits, pc, pr = _pair_logps(policy, prefs)
        for t in (logits, pc, pr):
            t.retain_grad()
        refs = (ref_c, ref_r) if entry.needs_reference else (None, None)
        out = entry.fn(pc, pr, *refs, **kwargs)
        loss = (out.losses + sft_weight * -pc).mean()  # (P,) -> ()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            # float64 from the log-probs: the rejected probability falls to ~1e-38 and d loss/d pi- rises past
            # float32's 3e38, so both are formed here in float64 from float32 log-probs (accurate at -90).
            lp_c, lp_r = pc.double(), pr.double()  # (P,)
            pi_c, pi_r = lp_c.exp(), lp_r.exp()
            unseen_mass = (torch.softmax(logits.double(), dim=-1) * unseen).sum(-1)  # (P,)
            mi = mi_estimates(out.chosen_rewards, out.rejected_rewards)
            row = torch.stack(
                [
                    pi_c.mean(),
                    pi_r.mean(),
                    unseen_mass.mean(),
                    loss.double(),
                    # d loss / d pi = (d loss / d log pi) / pi: the loss as a function of the probabilities.
                    (n * pc.grad.double() / pi_c).mean(),
                    (n * pr.grad.double() / pi_r).mean(),
                    (n * logits.grad[rows, prefs.chosen].double()).mean(),
                    (n * logits.grad[rows, prefs.rejected].double()).mean(),
                    torch.as_tensor(mi["mi/dv"], dtype=torch.float64),
                    torch.as_tensor(mi["mi/js"], dtype=torch.float64),
                ]
            )
            records.append(row)
        if epoch < epochs:
            opt.step()
    df = pd.DataFrame(torch.stack(records).numpy(), columns=list(RECORD_COLUMNS))
    df.insert(0, "epoch", range(epochs + 1))
    return df


def setup_table(prefs: PreferenceSet, policy: nn.Module) -> pd.DataFrame:
    """One row per prompt x response: its role, pi*(y|x) and the policy's probability (Fig 1's data)."""
    with torch.no_grad():
        probs = torch.softmax(policy(torch.eye(prefs.optimal.shape[0])), -1)  # (P, V)
    rows = []
    for p in range(probs.shape[0]):
        for v in range(probs.shape[1]):
            role = "chosen" if v == prefs.chosen[p] else "rejected" if v == prefs.rejected[p] else "unseen"
            rows.append(
                {
                    "prompt": p,
                    "response": v,
                    "role": role,
                    "optimal": prefs.optimal[p, v].item(),
                    "init_prob": probs[p, v].item(),
                }
            )
    return pd.DataFrame(rows)


def loss_kwargs_for(method: str, overrides) -> dict:
    """The method's hyperparameters: ``align.losses`` defaults, then the config's overrides (checked)."""
    kwargs = hyperparameters(method)
    extra = dict(overrides.get(method, {}) if overrides else {})
    unknown = set(extra) - set(kwargs) - {SFT_WEIGHT}
    if unknown:
        raise ValueError(
            f"{method}: unknown loss_kwargs {sorted(unknown)}; valid: {sorted(kwargs)} + {SFT_WEIGHT}"
        )
    return {**kwargs, **extra}


def run_dynamics(cfg) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every seed x scenario x method of ``cfg`` (the ``dynamics`` node), and the optimizer variants.

    Returns the per-epoch records (columns seed, scenario, method, epoch, chosen, rejected, unseen, loss, grad_*,
    mi_*), the same for ``figure_methods`` under each of ``cfg.variants`` (plus a ``variant`` column), and the
    set-up table (seed, scenario, prompt, response, role, optimal, init_prob, warmup_kl).
    """
    frames, variant_frames, setups = [], [], []
    runs = [(None, cfg.optimizer, cfg.lr, list(cfg.methods))]
    runs += [(v.name, v.optimizer, v.lr, list(cfg.figure_methods)) for v in cfg.variants]
    for seed in cfg.seeds:
        prefs = make_preference_set(cfg.num_prompts, cfg.num_responses, cfg.optimal_temperature, seed)
        for name, sc in cfg.scenarios.items():
            policy = make_policy(cfg.num_prompts, cfg.num_responses, cfg.hidden, cfg.layers, seed)
            target = warmup_target(prefs, sc.chosen_prob, sc.rejected_prob)
            kl = sft_warmup(policy, target, cfg.warmup_steps, cfg.warmup_lr)
            setups.append(setup_table(prefs, policy).assign(seed=seed, scenario=name, warmup_kl=kl))
            for variant, optimizer, lr, methods in runs:
                for method in methods:
                    df = train_method(
                        method,
                        policy,
                        prefs,
                        epochs=cfg.epochs,
                        lr=lr,
                        optimizer=optimizer,
                        loss_kwargs=loss_kwargs_for(method, cfg.loss_kwargs),
                    ).assign(seed=seed, scenario=name, method=method)
                    if variant is None:
                        frames.append(df)
                    else:
                        variant_frames.append(df.assign(variant=variant))
    lead = ["seed", "scenario", "method", "epoch"]
    records = pd.concat(frames, ignore_index=True)
    records = records[lead + [c for c in records.columns if c not in lead]]
    variants = pd.concat(variant_frames, ignore_index=True) if variant_frames else pd.DataFrame(columns=lead)
    variants = variants[["variant"] + lead + [c for c in variants.columns if c not in lead + ["variant"]]]
    setup = pd.concat(setups, ignore_index=True)
    setup = setup[["seed", "scenario"] + [c for c in setup.columns if c not in ("seed", "scenario")]]
    return records, variants, setup


def peak_and_final(records: pd.DataFrame, column: str = "chosen", keys: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per seed x scenario x method (x ``keys``): the initial, peak and final value of ``column``, the peak
    epoch, and final / peak."""
    rows = []
    by = [*keys, "seed", "scenario", "method"]
    for group, d in records.groupby(by, sort=False):
        d = d.sort_values("epoch")
        values = d[column].to_numpy()
        i = int(values.argmax())
        rows.append(
            {
                **dict(zip(by, group, strict=True)),
                "initial": values[0],
                "peak": values[i],
                "peak_epoch": int(d.epoch.iloc[i]),
                "final": values[-1],
                "ratio": values[-1] / values[i],
            }
        )
    return pd.DataFrame(rows)


def declines(summary: pd.DataFrame, drop: float) -> pd.Series:
    """Whether the final value is more than ``drop`` (a fraction) below the peak, per row of ``peak_and_final``."""
    return summary["final"] < (1.0 - drop) * summary["peak"]
