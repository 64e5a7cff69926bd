"""Claims of the Gaussian MI toy (Fig 4), on the quick preset's data files, plus unit checks of the estimators.

The module runs the quick preset's ``gaussian`` part once (seconds: d = 1, three rho, a small critic) into a
temporary folder and reads back the CSVs it writes.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from toy import gaussian_mi as gm
from toy.pipeline import run
from toy.toy_config import register_configs


@pytest.fixture(scope="module")
def quick(repo_root, tmp_path_factory):
    register_configs()
    out = tmp_path_factory.mktemp("toy_gaussian")
    with initialize_config_dir(config_dir=str(repo_root / "conf" / "toy"), version_base="1.3"):
        cfg = compose(config_name="quick", overrides=["parts=[gaussian]", f"out_dir={out}"])
    run(cfg)
    return cfg, out


def test_gaussian_part_writes_figure_and_data(quick):
    _, out = quick
    assert (out / "fig4_gaussian_mi.png").stat().st_size > 1000
    est = pd.read_csv(out / "fig4_estimates.csv")
    var = pd.read_csv(out / "fig4_grad_variance.csv")
    assert set(est.objective) == set(var.objective) == {"dv", "mine", "js"}
    assert np.isfinite(est.estimate).all() and (var.grad_variance > 0).all()


def test_a_sweep_drawn_in_another_panel_reports_its_spread(quick):
    """The quick preset's d1_rho0.9: three critics at rho 0.9, estimates at steps 100 and 200 with their sd,
    no variances; summary.json states mean, sd, min, max and n of each."""
    _, out = quick
    claims = json.loads((out / "summary.json").read_text())["claims"]["gaussian"]["d1_rho0.9"]
    assert "variance_ratio_over_js" not in claims
    for o in ("dv", "mine", "js"):
        for step in (100, 200):
            mean, sd, lo, hi, n = claims["spread"][f"rho0.9/{o}/step{step}"]
            assert n == 3 and sd > 0 and lo <= mean <= hi
    assert set(pd.read_csv(out / "fig4_grad_variance.csv").sweep) == {"d1"}


def test_js_gradient_variance_is_below_dv_and_mine_at_every_rho(quick):
    """The paper's Fig 4 (right): JS's gradient has lower variance than DV/MINE's. Checked both with each
    objective at its own trained critic (as each would be trained) and with all three at the same parameters
    (the JS-trained critic), at every rho of the sweep."""
    _, out = quick
    var = (
        pd.read_csv(out / "fig4_grad_variance.csv")
        .groupby(["sweep", "rho", "critic", "objective"])
        .grad_variance.mean()
    )
    for (sweep, rho), v in var.groupby(level=["sweep", "rho"]):
        v = v.droplevel(["sweep", "rho"])
        assert v["js", "js"] < min(v["dv", "dv"], v["mine", "mine"]), (sweep, rho, v.to_dict())
        for critic in ("dv", "mine", "js"):
            assert v[critic, "js"] < min(v[critic, "dv"], v[critic, "mine"]), (sweep, rho, critic)


def test_estimates_increase_with_rho_like_the_truth(quick):
    """Every objective's estimate rises with rho, as the true MI does, and lies within 0.1 nat of it (d = 1,
    true MI up to 0.83 nat)."""
    _, out = quick
    est = pd.read_csv(out / "fig4_estimates.csv")
    est = est[est.sweep == "d1"].groupby(["sweep", "objective", "rho", "true_mi"]).estimate.mean()
    for (_, objective), e in est.groupby(level=["sweep", "objective"]):
        e = e.reset_index().sort_values("rho")
        assert np.all(np.diff(e.estimate) > 0), (objective, e.estimate.tolist())
        assert np.all(np.abs(e.estimate - e.true_mi) < 0.1), (objective, e.estimate.tolist())


def test_a_repeated_rho_gets_independent_critics_seen_at_each_evaluated_step():
    """d1_rho0.99 lists rho 0.99 five times for a spread; ``eval_at`` adds the estimate at an earlier step of
    the same run. Each copy is its own critic: different estimates; each estimate is its two terms' difference."""
    cfg = SimpleNamespace(
        sweeps=[
            SimpleNamespace(name="a", dim=1, rhos=[0.5, 0.9, 0.9], iterations=20, grad_repeats=None, panel=None),
            SimpleNamespace(name="b", dim=1, rhos=[0.9], iterations=None, grad_repeats=0, panel="a"),
        ],
        seeds=[0], hidden=8, layers=1, lr=1e-3, batch_size=16, iterations=99, eval_at=[10, 50],
        momentum=0.9, eval_samples=500, grad_repeats=3,
    )  # fmt: skip
    est, var = gm.run_gaussian(cfg)
    assert sorted(set(est[est.sweep == "b"].iterations)) == [
        10,
        50,
        99,
    ]  # the node's 99 steps, seen at 10 and 50
    assert set(var.sweep) == {"a"}  # grad_repeats 0: no variances for b
    est = est[est.sweep == "a"]
    assert sorted(set(est.iterations)) == [10, 20]  # 50 is past the sweep's 20 steps; 99 is replaced by 20
    last = est[(est.iterations == 20) & (est.objective == "js")].set_index(["rho", "copy"])
    assert list(last.index) == [(0.5, 0), (0.9, 0), (0.9, 1)]
    assert last.estimate[0.9, 0] != last.estimate[0.9, 1]
    np.testing.assert_allclose(est.estimate, est.pos_mean - est.neg_logmeanexp, rtol=1e-5, atol=1e-6)
    assert len(var) == 3 * 3 * 3  # rho copies x critic objectives x gradient objectives
    summary, _ = gm.summarise(est, var)
    row = summary[(summary.rho == 0.9) & (summary.objective == "dv") & (summary.iterations == 20)]
    assert row["count"].item() == 2 and row["std"].item() > 0


def test_rho_to_mi_and_the_sampler():
    assert gm.rho_to_mi(0.0, 1) == 0.0
    assert gm.rho_to_mi(0.6, 20) == pytest.approx(-10 * math.log(0.64))
    x, y = gm.sample(torch.tensor([0.0, 0.8]), 3, 20000, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (2, 20000, 3)
    corr = (x * y).mean(1) / (x.std(1) * y.std(1))  # (2, 3)
    assert torch.allclose(corr, torch.tensor([[0.0] * 3, [0.8] * 3]), atol=0.03)
    assert torch.allclose(y.var(1), torch.ones(2, 3), atol=0.05)


def _optimal_critic(rho: float):
    """log p(y|x) / p(y) for the correlated Gaussian: DV's and JS's optimum."""

    def t(x, y):
        s = 1 - rho**2
        return (-0.5 * math.log(s) - (y - rho * x) ** 2 / (2 * s) + y**2 / 2).sum(-1)

    return t


def test_dv_bound_of_the_optimal_critic_is_the_true_mi_with_rolled_negatives():
    rho = 0.6
    x, y = gm.sample(torch.tensor([rho]), 1, 200_000, torch.Generator().manual_seed(1))
    t = _optimal_critic(rho)
    dv = gm.dv_bound(t(x, y), t(x, torch.roll(y, 1, dims=1)))
    assert dv.item() == pytest.approx(gm.rho_to_mi(rho, 1), abs=0.01)
    assert gm.js_bound(t(x, y), t(x, torch.roll(y, 1, dims=1))).item() < 0  # a JS value, not nats of MI


def test_mine_surrogate_has_the_dv_value_and_the_moving_average_gradient():
    torch.manual_seed(0)
    t_pos = torch.randn(2, 8, requires_grad=True)
    t_neg = torch.randn(2, 8, requires_grad=True)
    log_ema = torch.tensor([0.3, -0.2])
    value, new = gm.mine_surrogate(t_pos, t_neg, log_ema, momentum=0.9)
    assert torch.allclose(value, gm.dv_bound(t_pos, t_neg))
    mean_exp = t_neg.detach().exp().mean(-1)
    a = 0.9 * log_ema.exp() + 0.1 * mean_exp  # the average updated with this batch, as in SMILE
    assert torch.allclose(new.exp(), a)
    g_pos, g_neg = torch.autograd.grad(value.sum(), (t_pos, t_neg))
    assert torch.allclose(g_pos, torch.full_like(g_pos, 1 / 8))
    assert torch.allclose(g_neg, -t_neg.detach().exp() / 8 / a[:, None])
    _, first = gm.mine_surrogate(t_pos, t_neg, None, momentum=0.9)
    assert torch.allclose(first.exp(), mean_exp)  # the first step starts the average at the batch value


def test_stacked_critics_are_independent():
    """Copy i's gradient depends only on batch i: the stacked sweep equals separate runs."""
    gen = torch.Generator().manual_seed(0)
    critic = gm.StackedCritic(3, 2, 16, 1, gen)
    x, y = gm.sample(torch.tensor([0.2, 0.5, 0.8]), 2, 32, gen)
    grads = torch.autograd.grad(gm.js_bound(*gm.scores(critic, x, y)).sum(), list(critic.parameters()))
    x2, y2 = x.clone(), y.clone()
    x2[2], y2[2] = torch.randn(32, 2), torch.randn(32, 2)  # change copy 2's data only
    grads2 = torch.autograd.grad(gm.js_bound(*gm.scores(critic, x2, y2)).sum(), list(critic.parameters()))
    for g, g2 in zip(grads, grads2, strict=True):
        assert torch.equal(g[:2], g2[:2]) and not torch.equal(g[2], g2[2])


def test_gradient_variance_is_the_trace_of_the_gradient_covariance():
    """Against a direct computation from stored per-batch gradients (same batches: same generator seed)."""
    critic = gm.StackedCritic(2, 1, 8, 1, torch.Generator().manual_seed(0))
    rhos, repeats = [0.3, 0.9], 6
    got = gm.gradient_variance(critic, "dv", rhos, 1, 16, repeats, 0.9, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    flat = []
    for _ in range(repeats):
        x, y = gm.sample(torch.tensor(rhos), 1, 16, gen)
        g = torch.autograd.grad(gm.dv_bound(*gm.scores(critic, x, y)).sum(), list(critic.parameters()))
        flat.append(torch.cat([p.flatten(1) for p in g], 1).double())  # (R, n_params)
    flat = torch.stack(flat)  # (repeats, R, n_params)
    want = flat.var(0, unbiased=True).sum(-1)
    assert torch.allclose(got, want, rtol=1e-6)
