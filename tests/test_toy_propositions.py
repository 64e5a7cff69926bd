"""Props 3.1 / 3.2 in probability space: autograd through align.losses against the closed forms, and the facts.

Closed forms: ../shared/reference/paper-research.md section 1.4 (and the module docstring of toy/propositions.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from toy import propositions as props
from toy.pipeline import run
from toy.toy_config import register_configs

BETAS = (0.1, 0.25, 0.5, 0.9)


@pytest.mark.parametrize("method", ["dpo", "mio"])
@pytest.mark.parametrize("beta", BETAS)
def test_autograd_through_the_registered_loss_matches_the_closed_form(method, beta):
    pi_c, pi_r = np.meshgrid(np.logspace(-20, 0, 9), np.logspace(-20, 0, 9))
    ref_c, ref_r = 0.2, 0.05
    got = props.autograd_grads(method, pi_c, pi_r, ref_c, ref_r, beta)
    want = props.CLOSED_FORMS[method](pi_c, pi_r, ref_c, ref_r, beta)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-8)  # float64 rounding at pi = 1e-20 reaches ~1e-10


def test_dpo_rejected_to_chosen_gradient_ratio_is_minus_pi_plus_over_pi_minus():
    """3D-properties Corollary 1: (dl/dpi-) / (dl/dpi+) = -pi+ / pi-, whatever beta and the reference."""
    pi_c, pi_r = 0.3, np.logspace(-12, -1, 12)
    g_c, g_r = props.autograd_grads("dpo", pi_c, pi_r, 0.25, 0.1, 0.1)
    np.testing.assert_allclose(g_r / g_c, -pi_c / pi_r, rtol=1e-10)


@pytest.mark.parametrize("beta", BETAS)
def test_prop_3_1_dpo_chosen_gradient_vanishes_as_pi_minus_goes_to_zero_mio_does_not(beta):
    """DPO: |dl/dpi+| falls monotonically as pi- -> 0, like (pi-)^beta (log-log slope -> beta, within 1% at
    pi- ~ 1e-28); MIO: identical for every pi-. Both rejected gradients diverge like (pi-)^(beta - 1) (beta < 1)."""
    pi_r = np.logspace(-1, -30, 30)  # falling
    dpo_c, dpo_r = props.autograd_grads("dpo", 0.3, pi_r, 0.3, 0.3, beta)
    mio_c, mio_r = props.autograd_grads("mio", 0.3, pi_r, 0.3, 0.3, beta)
    assert np.all(np.diff(np.abs(dpo_c)) < 0)
    slope = np.diff(np.log(np.abs(dpo_c[-5:]))) / np.diff(np.log(pi_r[-5:]))
    np.testing.assert_allclose(slope, beta, rtol=1e-2)
    assert abs(dpo_c[-1]) < 1e-2 * abs(dpo_c[0])  # (1e-29)^beta: 1.3e-3 at beta = 0.1
    assert abs(dpo_c[-1]) < 0.01 * abs(mio_c[-1])
    np.testing.assert_allclose(mio_c, mio_c[0], rtol=1e-12)
    assert mio_c[0] < 0  # it still pushes the chosen up
    for g in (dpo_r, mio_r):
        assert np.all(np.diff(g) > 0)
        slope = np.diff(np.log(g[-5:])) / np.diff(np.log(pi_r[-5:]))
        np.testing.assert_allclose(slope, beta - 1, rtol=1e-2)


@pytest.mark.parametrize("beta", BETAS)
def test_prop_3_2_mio_chosen_gradient_is_zero_at_the_fixed_point_and_changes_sign(beta):
    """MIO's dl/dpi+ = 0 at pi+ = 2^(1/beta) pi_ref+, negative (pushes up) below, positive (pushes down) above;
    DPO's is negative everywhere (no fixed point)."""
    ref_c = 0.4 / 2 ** (1 / beta)
    star = props.mio_chosen_fixed_point(ref_c, beta)
    assert star == pytest.approx(0.4)
    pi_c = np.array([0.5 * star, 0.99 * star, star, 1.01 * star, 2.0 * star])
    g, _ = props.autograd_grads("mio", pi_c, 0.1, ref_c, 0.1, beta)
    assert g[0] < 0 and g[1] < 0 and g[3] > 0 and g[4] > 0
    assert abs(g[2]) < 1e-12
    d, _ = props.autograd_grads("dpo", np.logspace(-6, 0, 13), 0.1, ref_c, 0.1, beta)
    assert np.all(d < 0)


def test_propositions_part_writes_figure_data_and_the_descent_settles(repo_root, tmp_path):
    register_configs()
    with initialize_config_dir(config_dir=str(repo_root / "conf" / "toy"), version_base="1.3"):
        cfg = compose(
            config_name="quick",
            overrides=["parts=[propositions]", f"out_dir={tmp_path}", "formats=[png,pdf]"],
        )
    summary = run(cfg)["claims"]["propositions"]
    for name in (
        "props_gradients.png",
        "props_gradients.pdf",
        "props_rejected_sweep.csv",
        "props_chosen_sweep.csv",
        "props_descent.csv",
    ):
        assert (tmp_path / name).exists()
    assert summary["max_rel_err_autograd_vs_closed"] < 1e-10
    final = summary["descent_final_pi_chosen"]
    for start in cfg.propositions.descent_starts:
        assert final[f"mio/start{start}"] == pytest.approx(cfg.propositions.fixed_point, abs=1e-3)
        assert final[f"dpo/start{start}"] == pytest.approx(1.0)
