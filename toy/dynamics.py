"""Likelihood dynamics of preference losses on a toy policy (the paper's Figs 1-2, after the 3D-properties toy).

A small MLP maps a one-hot prompt (4 prompts) to logits over 10 responses. Each prompt has one chosen and one
rejected response; the other 8 are unseen for that prompt. The pairs either share responses across prompts (one
prompt's chosen is another's rejected: the paper's construction) or are disjoint (``make_preference_set``). A
short SFT warm-up sets the initial probability of
the chosen and rejected responses ("very small" or "normal": the four scenarios); the warmed-up policy is the
reference. Every method of ``align.losses.LOSSES`` then trains a copy for a few hundred full-batch epochs, and
each epoch records the chosen, rejected and unseen probability mass and the loss gradient on the chosen and
rejected response, both with respect to the probability (d loss / d pi) and to the logit.

All seeds x scenarios of a construction train at once as stacked copies (``toy/stacked.py``). Run through the
entry point (``make toy``); ``train_method``, ``train_stacked`` and ``run_dynamics`` are importable for tests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from align.losses import LOSSES, hyperparameters, mi_estimates
from toy.stacked import StackedMLP

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


CONSTRUCTIONS = ("shared", "disjoint")


@dataclass(frozen=True)
class PreferenceSet:
    """The toy task: an assumed optimal policy and the preference pair built from it, per prompt.

    Leading axes are allowed (``stack``): one set per stacked policy copy.
    """

    optimal: Tensor  # (..., P, V) optimal policy pi*(y|x)
    chosen: Tensor  # (..., P) index of the chosen response
    rejected: Tensor  # (..., P) index of the rejected response

    @property
    def unseen(self) -> Tensor:
        """(..., P, V) mask of responses that are neither chosen nor rejected for that prompt."""
        mask = torch.ones_like(self.optimal, dtype=torch.bool)
        mask.scatter_(-1, self.chosen[..., None], False)
        mask.scatter_(-1, self.rejected[..., None], False)
        return mask

    @staticmethod
    def stack(sets: list[PreferenceSet]) -> PreferenceSet:
        """One set per copy on a new leading axis: optimal (R, P, V), chosen and rejected (R, P)."""
        return PreferenceSet(
            *(torch.stack([getattr(s, f) for s in sets]) for f in ("optimal", "chosen", "rejected"))
        )


def make_preference_set(
    num_prompts: int, num_responses: int, temperature: float, seed: int, construction: str = "shared"
) -> PreferenceSet:
    """Draw pi* = softmax(scores / temperature) with Gaussian scores and one preference pair per prompt.

    ``construction``:

    - ``shared`` (the paper's Fig 1, as in the 3D-properties toy): the pairs share responses across prompts. A
      pool of P responses (a random draw) forms a cycle: prompt p prefers pool[p] to pool[p + 1] (mod P), so each
      pooled response is the chosen of one prompt and the rejected of the previous one. The scores are then
      swapped within each row so that pi* agrees with the labels: every prompt's chosen is its best response
      under pi* and its rejected its worst. The paper's exact pairing is not known; the cycle is ours.
    - ``disjoint`` (a variant): prompt by prompt, the chosen is the best under pi* and the rejected the worst
      among the responses no earlier prompt has used, so no response is labelled for two prompts. From the
      second prompt on, the chosen need not be that prompt's best response.
    """
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(num_prompts, num_responses, generator=gen)  # (P, V)
    if construction == "shared":
        if not 2 <= num_prompts <= num_responses:
            raise ValueError(
                f"shared pairs need 2 <= prompts <= responses, got {num_prompts} and {num_responses}"
            )
        pool = torch.randperm(num_responses, generator=gen)[:num_prompts]
        chosen, rejected = pool, pool.roll(-1)  # prompt p rejects prompt p+1's chosen
        for row, c, r in zip(scores, chosen.tolist(), rejected.tolist(), strict=True):
            top = int(row.argmax())
            row[[c, top]] = row[[top, c]]  # the best score to the chosen
            low = int(row.argmin())  # after the first swap, which may have moved the lowest score
            row[[r, low]] = row[[low, r]]  # the worst to the rejected
        return PreferenceSet(torch.softmax(scores / temperature, dim=-1), chosen, rejected)
    if construction != "disjoint":
        raise ValueError(f"unknown construction {construction!r}; valid: {', '.join(CONSTRUCTIONS)}")
    if 2 * num_prompts > num_responses:
        raise ValueError(
            f"{num_prompts} prompts need at least {2 * num_prompts} responses for disjoint pairs"
        )
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
    target.scatter_(-1, prefs.chosen[..., None], chosen_prob)
    target.scatter_(-1, prefs.rejected[..., None], rejected_prob)
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


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """``adam`` (torch defaults) or ``sgd`` (plain: no momentum, no weight decay) over ``params``."""
    if name not in ("adam", "sgd"):
        raise ValueError(f"unknown optimizer {name!r}; valid: adam, sgd")
    cls = torch.optim.Adam if name == "adam" else torch.optim.SGD
    return cls(params, lr=lr)


def _logits(policy: StackedMLP, num_prompts: int) -> Tensor:
    """(R, P, V) logits of every copy for the P one-hot prompts."""
    return policy(torch.eye(num_prompts).expand(policy.copies, num_prompts, num_prompts))


def sft_warmup(policy: StackedMLP, target: Tensor, steps: int, lr: float) -> Tensor:
    """Fit each copy to its ``target`` (R, P, V) by cross-entropy with soft labels, in place; the final KL (R,)."""
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    for _ in range(steps):
        logp = F.log_softmax(_logits(policy, target.shape[1]), dim=-1)  # (R, P, V)
        loss = -(target * logp).sum(-1).mean(-1)  # (R,): each copy's own mean over prompts
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    with torch.no_grad():
        logp = F.log_softmax(_logits(policy, target.shape[1]), dim=-1)
        return (target * (target.clamp_min(1e-12).log() - logp)).sum(-1).mean(-1)


def _pair_logps(policy: StackedMLP, prefs: PreferenceSet) -> tuple[Tensor, Tensor, Tensor]:
    """Logits (R, P, V), and the chosen and rejected log-probs (R, P) each: one response = one token."""
    logits = _logits(policy, prefs.chosen.shape[-1])
    logp = F.log_softmax(logits, dim=-1)
    return logits, _take(logp, prefs.chosen), _take(logp, prefs.rejected)


def _take(values: Tensor, index: Tensor) -> Tensor:
    """values[..., p, index[..., p]]: (R, P, V), (R, P) -> (R, P)."""
    return values.gather(-1, index[..., None]).squeeze(-1)


def train_stacked(
    method: str,
    policy: StackedMLP,
    prefs: PreferenceSet,
    *,
    epochs: int,
    lr: float,
    optimizer: str = "adam",
    loss_kwargs: dict | None = None,
) -> pd.DataFrame:
    """Train a copy of every stacked policy (each also its own frozen reference) with ``method``, full batch.

    ``prefs`` is stacked like the policy (chosen, rejected (R, P)). Returns one row per copy and epoch 0..epochs:
    row ``e`` holds the state after ``e`` updates: mean over prompts of pi(chosen), pi(rejected), the unseen mass,
    the loss, and the gradient of the per-pair loss w.r.t. pi and w.r.t. the logit of the chosen and the rejected
    response (at ``e = epochs`` these are measured but no step is taken). The copies share nothing: the summed
    loss gives each its own gradient and the optimizers are elementwise, so this equals R separate runs.
    """
    entry = LOSSES[method]
    kwargs = dict(loss_kwargs or {})
    sft_weight = float(kwargs.pop(SFT_WEIGHT, 0.0))
    reference = copy.deepcopy(policy).requires_grad_(False)
    policy = copy.deepcopy(policy)
    opt = make_optimizer(optimizer, policy.parameters(), lr)
    with torch.no_grad():
        _, ref_c, ref_r = _pair_logps(reference, prefs)
    refs = (ref_c.flatten(), ref_r.flatten()) if entry.needs_reference else (None, None)
    copies, n = prefs.chosen.shape  # gradients are of each copy's mean: times P gives the per-pair gradient
    unseen = prefs.unseen
    records, rewards = [], []
    for epoch in range(epochs + 1):
        logits, pc, pr = _pair_logps(policy, prefs)
        for t in (logits, pc, pr):
            t.retain_grad()
        out = entry.fn(pc.flatten(), pr.flatten(), *refs, **kwargs)
        loss = (out.losses.view(copies, n) + sft_weight * -pc).mean(-1)  # (R,)
        opt.zero_grad()
        loss.sum().backward()
        with torch.no_grad():
            # float64 from the log-probs: the rejected probability falls to ~1e-38 and d loss/d pi- rises past
            # float32's 3e38, so both are formed here in float64 from float32 log-probs (accurate at -90).
            pi_c, pi_r = pc.double().exp(), pr.double().exp()  # (R, P)
            unseen_mass = (torch.softmax(logits.double(), dim=-1) * unseen).sum(-1)  # (R, P)
            grad_logits = logits.grad.double()
            row = torch.stack(
                [
                    pi_c.mean(-1),
                    pi_r.mean(-1),
                    unseen_mass.mean(-1),
                    loss.double(),
                    # d loss / d pi = (d loss / d log pi) / pi: the loss as a function of the probabilities.
                    (n * pc.grad.double() / pi_c).mean(-1),
                    (n * pr.grad.double() / pi_r).mean(-1),
                    (n * _take(grad_logits, prefs.chosen)).mean(-1),
                    (n * _take(grad_logits, prefs.rejected)).mean(-1),
                ],
                dim=-1,
            )  # (R, columns without the MI estimates)
            records.append(row)
            rewards.append(torch.stack([out.chosen_rewards, out.rejected_rewards]).view(2, copies, n))
        if epoch < epochs:
            opt.step()
    # The batch MI estimates of each copy and epoch, in one call: (epochs + 1, 2, R, P) -> ((epochs + 1) R,) each.
    rewards = torch.stack(rewards).permute(1, 2, 0, 3).reshape(2, -1, n)  # (2, R (epochs + 1), P), copy-major
    mi = torch.vmap(mi_estimates)(rewards[0], rewards[1])
    mi_cols = torch.stack([mi["mi/dv"], mi["mi/js"]], -1).double().view(copies, epochs + 1, 2)
    values = torch.cat([torch.stack(records, dim=1), mi_cols], -1).numpy()  # (R, epochs + 1, columns)
    df = pd.DataFrame(values.reshape(-1, len(RECORD_COLUMNS)), columns=list(RECORD_COLUMNS))
    df.insert(0, "epoch", np.tile(np.arange(epochs + 1), copies))
    df.insert(0, "copy", np.repeat(np.arange(copies), epochs + 1))
    return df


def train_method(method: str, policy: nn.Sequential, prefs: PreferenceSet, **train_kwargs) -> pd.DataFrame:
    """``train_stacked`` (same keyword arguments) for one policy (``make_policy``) and one preference set; one row
    per epoch, 0..epochs."""
    df = train_stacked(
        method, StackedMLP.from_sequentials([policy]), PreferenceSet.stack([prefs]), **train_kwargs
    )
    return df.drop(columns="copy")


def setup_table(prefs: PreferenceSet, probs: Tensor) -> pd.DataFrame:
    """One row per prompt x response: its role, pi*(y|x) and the policy's probability ``probs`` (P, V) (Fig 1)."""
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


def base_variant(cfg) -> str:
    """The name of the configured optimizer run, e.g. ``adam_lr0.001``, as it appears in the records."""
    return f"{cfg.optimizer}_lr{cfg.lr:g}"


def base_beta(method: str, cfg) -> float:
    """The beta ``method`` trains with outside the beta sweep: ``align.losses`` default or ``loss_kwargs``."""
    return float(loss_kwargs_for(method, cfg.loss_kwargs)["beta"])


def planned_runs(cfg, construction: str) -> list[tuple[str, str, float, str, float]]:
    """(variant, optimizer, lr, method, beta) of every training of ``construction``, once each: with the
    configured optimizer every method (``figure_methods`` only where the construction is not in
    ``all_methods``); ``figure_methods`` under each optimizer variant and at each beta of ``betas``."""
    base = base_variant(cfg)
    methods = cfg.methods if construction in cfg.all_methods else cfg.figure_methods
    runs = [(base, cfg.optimizer, cfg.lr, m, base_beta(m, cfg)) for m in methods]
    runs += [
        (v.name, v.optimizer, v.lr, m, base_beta(m, cfg)) for v in cfg.variants for m in cfg.figure_methods
    ]
    runs += [(base, cfg.optimizer, cfg.lr, m, float(b)) for b in cfg.betas for m in cfg.figure_methods]
    return list(dict.fromkeys(runs))


VIEWS = ("main", "optimizers", "betas")


def select(frame: pd.DataFrame, cfg, view: str) -> pd.DataFrame:
    """The rows of ``frame`` (records or ``peak_and_final``) behind one figure family.

    ``main`` (Figs 2, 2b): every method, configured optimizer, its base beta; ``optimizers`` (Fig 2c):
    ``figure_methods`` at their base beta under every optimizer; ``betas`` (Fig 2d): ``figure_methods`` with the
    configured optimizer at each beta of ``cfg.betas``.
    """
    at_base = frame.beta == frame.method.map({m: base_beta(m, cfg) for m in frame.method.unique()})
    base = frame.variant == base_variant(cfg)
    fig = frame.method.isin(list(cfg.figure_methods))
    masks = {
        "main": base & at_base,
        "optimizers": fig & at_base,
        "betas": fig & base & frame.beta.isin([float(b) for b in cfg.betas]),
    }
    if view not in masks:
        raise ValueError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")
    return frame[masks[view]]


def run_dynamics(cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every construction x run of ``planned_runs`` x seed x scenario of ``cfg`` (the ``dynamics`` node).

    Per construction, all seeds x scenarios train at once as stacked copies. Returns the per-epoch records
    (columns construction, variant, beta, seed, scenario, method, epoch, chosen, rejected, unseen, loss, grad_*,
    mi_*) and the set-up table (construction, seed, scenario, prompt, response, role, optimal, init_prob,
    warmup_kl).
    """
    frames, setups = [], []
    for construction in cfg.constructions:
        keys, sets, policies, targets = [], [], [], []
        for seed in cfg.seeds:
            prefs = make_preference_set(
                cfg.num_prompts, cfg.num_responses, cfg.optimal_temperature, seed, construction
            )
            for name, sc in cfg.scenarios.items():
                keys.append((seed, name))
                sets.append(prefs)
                policies.append(make_policy(cfg.num_prompts, cfg.num_responses, cfg.hidden, cfg.layers, seed))
                targets.append(warmup_target(prefs, sc.chosen_prob, sc.rejected_prob))
        policy = StackedMLP.from_sequentials(policies)
        kl = sft_warmup(policy, torch.stack(targets), cfg.warmup_steps, cfg.warmup_lr)
        with torch.no_grad():
            probs = torch.softmax(_logits(policy, cfg.num_prompts), -1)  # (R, P, V)
        for i, (seed, name) in enumerate(keys):
            setups.append(
                setup_table(sets[i], probs[i]).assign(
                    construction=construction, seed=seed, scenario=name, warmup_kl=kl[i].item()
                )
            )
        copies = pd.DataFrame(keys, columns=["seed", "scenario"])
        stacked = PreferenceSet.stack(sets)
        for variant, optimizer, lr, method, beta in planned_runs(cfg, construction):
            kwargs = {**loss_kwargs_for(method, cfg.loss_kwargs), "beta": beta}
            df = train_stacked(
                method, policy, stacked, epochs=cfg.epochs, lr=lr, optimizer=optimizer, loss_kwargs=kwargs
            )
            df = df.join(copies, on="copy").drop(columns="copy")
            frames.append(df.assign(construction=construction, variant=variant, beta=beta, method=method))
    lead = ["construction", "variant", "beta", "seed", "scenario", "method", "epoch"]
    records = pd.concat(frames, ignore_index=True)
    records = records[lead + [c for c in records.columns if c not in lead]]
    setup = pd.concat(setups, ignore_index=True)
    first = ["construction", "seed", "scenario"]
    setup = setup[first + [c for c in setup.columns if c not in first]]
    return records, setup


RUN_KEYS = ("construction", "variant", "beta", "seed", "scenario", "method")


def peak_and_final(
    records: pd.DataFrame, column: str = "chosen", keys: tuple[str, ...] = RUN_KEYS
) -> pd.DataFrame:
    """Per run (``keys``): the initial, peak and final value of ``column``, the peak epoch, and final / peak."""
    rows = []
    by = list(keys)
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
