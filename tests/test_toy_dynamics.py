"""Claims of the likelihood-dynamics toy (Figs 1-2), per construction and beta regime, plus unit checks.

The module runs the quick preset's ``dynamics`` part once (both constructions, 3 seeds, DPO and MIO, Adam and
SGD at lr 1, beta 0.1 / 0.3 / 1; seconds, stacked) into a temporary folder and reads back the files it writes,
exactly as the README's figures and claims are made. Every claim is asserted for every seed.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from align.losses import LOSSES
from toy import dynamics
from toy.pipeline import run
from toy.stacked import StackedMLP
from toy.toy_config import register_configs

SCENARIOS = ("s1_both_small", "s2_chosen_normal", "s3_rejected_normal", "s4_both_normal")


def _compose(repo_root, overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(repo_root / "conf" / "toy"), version_base="1.3"):
        return compose(config_name="quick", overrides=overrides)


@pytest.fixture(scope="module")
def quick(repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_dynamics")
    cfg = _compose(repo_root, ["parts=[dynamics]", f"out_dir={out}"])
    summary = run(cfg)
    runs = pd.read_csv(out / "dynamics_summary.csv")  # one row per run: initial, peak, final, declines
    return cfg, out, summary, runs


def _runs(runs, construction, method, variant="adam_lr0.001", beta=0.1):
    r = runs[
        (runs.construction == construction)
        & (runs.method == method)
        & (runs.variant == variant)
        & (runs.beta.round(6) == beta)
    ]
    assert len(r) == len(SCENARIOS) * 3, (construction, method, variant, beta)  # 4 scenarios x 3 seeds
    return r


def _declining(r, scenario, drop=0.1) -> list[bool]:
    """Per seed: final pi(chosen) more than ``drop`` below its peak."""
    s = r[r.scenario == scenario].sort_values("seed")
    return (s.final < (1 - drop) * s.peak).tolist()


def test_dynamics_part_writes_figures_and_data_for_both_constructions(quick):
    cfg, out, summary, runs = quick
    assert list(cfg.dynamics.constructions) == ["shared", "disjoint"]
    stems = ["fig1_toy_setup", "fig2_likelihood_dynamics", "fig2c_optimizers", "fig2d_beta_sweep"]
    assert list(cfg.formats) == [
        "png"
    ]  # the full config adds pdf (tests/test_toy_propositions.py writes one)
    for c in cfg.dynamics.constructions:
        for stem in stems:
            assert (out / f"{stem}_{c}.png").stat().st_size > 1000
        assert not (out / f"fig2_likelihood_dynamics_{c}.pdf").exists()
    assert (out / "fig2b_all_methods_shared.png").exists()  # only where every method trains
    assert not (out / "fig2b_all_methods_disjoint.png").exists()
    for name in ("fig1_toy_setup.csv", "dynamics_records.csv", "dynamics_summary.csv", "summary.json"):
        assert (out / name).exists()
    assert set(summary["claims"]["dynamics"]) == {"shared", "disjoint", "warmup_kl_max"}
    assert set(runs.beta.round(6)) == {0.1, 0.3, 1.0}


def test_disjoint_pairs_dpo_chosen_declines_late_in_scenarios_2_and_4_mio_never(quick):
    """Disjoint pairs, Adam 1e-3, beta 0.1. Scenarios (2) and (4), chosen normal: DPO's chosen rises to near 1,
    peaks before epoch 150 and ends more than 10% below its peak, in every seed (Prop 3.1's regime: once the
    rejected is suppressed DPO's chosen weight sigma(T_l - T_w) vanishes, and Adam's normalised steps through the
    shared parameters pull the chosen back down). MIO's chosen never declines, in any scenario or seed."""
    _, _, _, runs = quick
    dpo, mio = _runs(runs, "disjoint", "dpo"), _runs(runs, "disjoint", "mio")
    for scenario in ("s2_chosen_normal", "s4_both_normal"):
        assert all(_declining(dpo, scenario)), scenario
        s = dpo[dpo.scenario == scenario]
        assert (s.peak > 0.9).all() and (s.peak_epoch < 150).all(), s[["peak", "peak_epoch"]]
    for scenario in SCENARIOS:
        assert not any(_declining(mio, scenario)), scenario


def test_disjoint_pairs_decline_needs_adam(quick):
    """Disjoint pairs only: with plain SGD at lr 1 DPO's chosen does not fall in any scenario or seed (the step
    is proportional to DPO's vanishing chosen gradient, so training stalls near the peak)."""
    _, _, _, runs = quick
    sgd = _runs(runs, "disjoint", "dpo", variant="sgd_lr1")
    for scenario in SCENARIOS:
        assert not any(_declining(sgd, scenario)), scenario


def test_shared_pairs_dpo_declines_in_scenario_4_under_adam_and_sgd_not_in_scenario_2(quick):
    """Shared responses (one prompt's chosen is another's rejected), beta 0.1. The decline moves: scenario (2)
    keeps its chosen in every seed, while in scenario (4) at least one seed declines under Adam and at least
    one under SGD at lr 1 as well, so with shared responses the decline does not need Adam. MIO's chosen
    never declines, in any scenario, seed or optimizer."""
    _, _, _, runs = quick
    for variant in ("adam_lr0.001", "sgd_lr1"):
        dpo = _runs(runs, "shared", "dpo", variant=variant)
        assert any(_declining(dpo, "s4_both_normal")), variant
        assert not any(_declining(dpo, "s2_chosen_normal")), variant
        mio = _runs(runs, "shared", "mio", variant=variant)
        for scenario in SCENARIOS:
            assert not any(_declining(mio, scenario)), (variant, scenario)


@pytest.mark.parametrize("construction", ["shared", "disjoint"])
def test_beta_1_mio_chosen_stops_at_twice_its_reference_probability(quick, construction):
    """beta = 1: MIO's fixed point 2^(1/beta) pi_ref+ = 2 pi_ref+ lies inside (0, 1) in every scenario, and the
    chosen ends there (final / initial in [1.97, 2.01]) in every seed: the chosen gradient vanishes at
    T_w = ln 2. So an improbable chosen (0.01) is no longer lifted: it stops at 0.02."""
    _, _, _, runs = quick
    mio = _runs(runs, construction, "mio", beta=1.0)
    ratio = mio.final / mio.initial
    assert ratio.between(1.97, 2.01).all(), ratio.tolist()
    assert (mio[mio.scenario == "s1_both_small"].final < 0.025).all()


@pytest.mark.parametrize("construction", ["shared", "disjoint"])
def test_beta_0_3_regime_depends_on_the_reference_probability(quick, construction):
    """beta = 0.3: 2^(1/0.3) = 10.08. Where pi_ref+ = 0.01 (scenarios 1, 3) the fixed point 0.10 is inside and
    MIO's chosen ends within 3% of it; where pi_ref+ = 0.3 (scenarios 2, 4) it is 3.0, above 1, and the chosen
    runs to above 0.99. Every seed."""
    _, _, _, runs = quick
    mio = _runs(runs, construction, "mio", beta=0.3)
    star = 2 ** (1 / 0.3) * mio.initial
    inside = mio.scenario.isin(["s1_both_small", "s3_rejected_normal"])
    assert (star[inside] < 1).all() and (star[~inside] > 1).all()
    assert ((mio.final / star)[inside] - 1).abs().max() < 0.03
    assert (mio.final[~inside] > 0.99).all()


@pytest.mark.parametrize("construction", ["shared", "disjoint"])
def test_beta_0_1_fixed_point_above_1_mio_lifts_the_off_policy_chosen_dpo_does_not(quick, construction):
    """beta = 0.1: the fixed point (10.2 or 307 x ...) is above 1 in every scenario, so MIO's chosen never stops
    below it: it rises by more than 50x from 0.01 in scenario (1) and ends above 0.95 in (2) and (4). In (1),
    both responses improbable, MIO's final chosen exceeds DPO's by more than 0.2 in every seed, under Adam and
    under SGD at lr 1 (DPO wins its margin by pushing the rejected down; MIO's chosen term ignores the rejected).
    """
    _, _, _, runs = quick
    mio = _runs(runs, construction, "mio")
    assert (2 ** (1 / 0.1) * mio.initial > 1).all()
    s1 = mio[mio.scenario == "s1_both_small"]
    assert (s1.final > 50 * s1.initial).all()
    assert (mio[mio.scenario.isin(["s2_chosen_normal", "s4_both_normal"])].final > 0.95).all()
    for variant in ("adam_lr0.001", "sgd_lr1"):
        d = _runs(runs, construction, "dpo", variant=variant)
        m = _runs(runs, construction, "mio", variant=variant)
        d, m = (x[x.scenario == "s1_both_small"].sort_values("seed").final.to_numpy() for x in (d, m))
        assert (m > d + 0.2).all(), (variant, d, m)


def test_warmup_sets_the_scenarios_and_the_reference_is_the_warm_policy(quick):
    cfg, out, _, _ = quick
    setup = pd.read_csv(out / "fig1_toy_setup.csv")
    records = pd.read_csv(out / "dynamics_records.csv")
    for name, sc in cfg.dynamics.scenarios.items():
        for c in cfg.dynamics.constructions:
            s = setup[(setup.scenario == name) & (setup.construction == c)]
            assert s[s.role == "chosen"].init_prob.mean() == pytest.approx(sc.chosen_prob, rel=0.05)
            assert s[s.role == "rejected"].init_prob.mean() == pytest.approx(sc.rejected_prob, rel=0.05)
            start = records[(records.scenario == name) & (records.construction == c) & (records.epoch == 0)]
            # policy = reference at epoch 0: DPO's loss is ln 2 and MIO's ln 4 (the losses' values at T = 0)
            assert start[start.method == "dpo"].loss.to_numpy() == pytest.approx(math.log(2), abs=1e-3)
            assert start[start.method == "mio"].loss.to_numpy() == pytest.approx(math.log(4), abs=1e-3)
            assert start.groupby("seed").chosen.nunique().eq(1).all()  # every run starts from the same policy
    total = records.chosen + records.rejected + records.unseen
    assert (total - 1).abs().max() < 1e-3  # the CSV keeps 4 significant digits


def test_empty_variants_and_betas_run(repo_root, tmp_path):
    """`dynamics.variants=[]` (and `betas=[]`) used to fail with a KeyError: they mean no extra runs."""
    cfg = _compose(
        repo_root,
        [
            "parts=[dynamics]",
            f"out_dir={tmp_path}",
            "dynamics.variants=[]",
            "dynamics.betas=[]",
            "dynamics.seeds=[0]",
            "dynamics.epochs=3",
            "dynamics.constructions=[disjoint]",
            "dynamics.all_methods=[]",
        ],
    )
    summary = run(cfg)["claims"]["dynamics"]["disjoint"]
    assert set(pd.read_csv(tmp_path / "dynamics_summary.csv").variant) == {"adam_lr0.001"}
    assert summary["beta_regimes"] == {}
    assert (tmp_path / "fig2c_optimizers_disjoint.png").exists()
    assert not (tmp_path / "fig2d_beta_sweep_disjoint.png").exists()


def test_recorded_gradients_match_the_closed_forms_at_the_reference():
    """At policy = reference (T = 0): DPO's d loss/d pi+ = -beta sigma(0) / pi+ = -beta / (2 pi+), MIO's is
    beta (1 - 2) / (2 pi+ (1 + 1)) = -beta / (4 pi+); d loss/d pi- is +beta/(2 pi-) and +beta/(4 pi-)."""
    prefs = dynamics.make_preference_set(4, 10, 1.0, seed=0)
    policy = dynamics.make_policy(4, 10, 16, 3, seed=0)
    with torch.no_grad():
        probs = torch.softmax(policy(torch.eye(4)), -1)
    pc, pr = probs[torch.arange(4), prefs.chosen], probs[torch.arange(4), prefs.rejected]
    beta = 0.1
    for method, k in (("dpo", 2.0), ("mio", 4.0)):
        row = dynamics.train_method(
            method, policy, prefs, epochs=0, lr=1e-3, loss_kwargs={"beta": beta}
        ).iloc[0]
        assert row.grad_pi_chosen == pytest.approx((-beta / (k * pc)).mean().item(), rel=1e-5)
        assert row.grad_pi_rejected == pytest.approx((beta / (k * pr)).mean().item(), rel=1e-5)
        assert row.mi_dv == pytest.approx(0.0, abs=1e-6)  # ln 2 + log sigma(0)
        assert row.mi_js == pytest.approx(-math.log(4), abs=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_stacked_training_equals_separate_runs(optimizer):
    """Two policies and preference sets trained stacked give each one's separate run (to float rounding)."""
    sets = [
        dynamics.make_preference_set(4, 10, 1.0, seed=s, construction=c)
        for s, c in ((0, "shared"), (1, "disjoint"))
    ]
    nets = [dynamics.make_policy(4, 10, 16, 3, seed=s) for s in (0, 1)]
    kw = {"epochs": 30, "lr": 1e-2, "optimizer": optimizer, "loss_kwargs": {"beta": 0.5}}
    stacked = dynamics.train_stacked(
        "dpo", StackedMLP.from_sequentials(nets), dynamics.PreferenceSet.stack(sets), **kw
    )
    for i in range(2):
        alone = dynamics.train_method("dpo", nets[i], sets[i], **kw)
        got = stacked[stacked["copy"] == i].drop(columns="copy").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, alone, rtol=1e-4, atol=1e-7)
    assert not stacked[stacked["copy"] == 0].chosen.equals(stacked[stacked["copy"] == 1].chosen)


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_every_registered_loss_trains_the_toy(method):
    prefs = dynamics.make_preference_set(4, 10, 1.0, seed=1)
    policy = dynamics.make_policy(4, 10, 16, 3, seed=1)
    df = dynamics.train_method(
        method, policy, prefs, epochs=5, lr=1e-2, loss_kwargs=dynamics.loss_kwargs_for(method, {})
    )
    assert df.notna().all().all()
    assert len(df) == 6
    assert df.chosen.iloc[-1] != df.chosen.iloc[0]  # the policy moved


@pytest.mark.parametrize("seed", range(5))
def test_shared_pairs_chain_the_prompts_and_agree_with_the_optimal_policy(seed):
    """The paper's construction: P shared responses; prompt p's rejected is prompt p+1's chosen (a cycle), so
    each of them is chosen once and rejected once; and every prompt's chosen is pi*'s best response and its
    rejected pi*'s worst (so Fig 1(a)'s title holds for every prompt)."""
    prefs = dynamics.make_preference_set(4, 10, 1.0, seed=seed, construction="shared")
    chosen, rejected = prefs.chosen.tolist(), prefs.rejected.tolist()
    assert len(set(chosen)) == 4 and sorted(chosen) == sorted(rejected)
    assert rejected == chosen[1:] + chosen[:1]
    assert all(c != r for c, r in zip(chosen, rejected, strict=True))
    assert (prefs.optimal.argmax(-1) == prefs.chosen).all()
    assert (prefs.optimal.argmin(-1) == prefs.rejected).all()
    assert prefs.unseen.sum(-1).tolist() == [8] * 4
    assert torch.allclose(prefs.optimal.sum(-1), torch.ones(4))


def test_disjoint_pairs_use_each_response_once_and_are_labelled_by_the_optimal_policy():
    prefs = dynamics.make_preference_set(4, 10, 1.0, seed=3, construction="disjoint")
    used = prefs.chosen.tolist() + prefs.rejected.tolist()
    assert len(set(used)) == 8  # no response is chosen or rejected twice
    first = prefs.optimal[0]
    assert prefs.chosen[0] == first.argmax() and prefs.rejected[0] == first.argmin()
    for p in range(4):
        assert prefs.optimal[p, prefs.chosen[p]] > prefs.optimal[p, prefs.rejected[p]]
    assert prefs.unseen.sum(-1).tolist() == [8] * 4
    with pytest.raises(ValueError, match="disjoint"):
        dynamics.make_preference_set(6, 10, 1.0, seed=0, construction="disjoint")
    with pytest.raises(ValueError, match="valid: shared, disjoint"):
        dynamics.make_preference_set(4, 10, 1.0, seed=0, construction="overlap")
