"""Every loss against values worked out by hand, plus the properties PAPER.md states.

The hand point (unless a test says otherwise): policy chosen/rejected log-probs -1 and -2, reference -1.5 and
-1.5, so the log-ratios are c_w = +0.5 and c_l = -0.5, and with beta = 1 the critic values are T_w = 0.5,
T_l = -0.5. sp(u) = log(1 + e^u): sp(0.5) = 0.974077, sp(-0.5) = 0.474077, sp(-1) = 0.313262, sp(1) = 1.313262.
"""

from __future__ import annotations

import math

import pytest
import torch

from align.config import CONF_DIR, method_schema
from align.losses import LN2, LOSSES, get_method, hyperparameters, mi_estimates


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64, requires_grad=True)


PC, PR, RC, RR = -1.0, -2.0, -1.5, -1.5


def value(name, pc=PC, pr=PR, rc=RC, rr=RR, **kw):
    out = LOSSES[name].fn(t(pc), t(pr), t(rc), t(rr), **kw)
    return out.losses.item(), out.chosen_rewards.item(), out.rejected_rewards.item()


def sp(u):
    return math.log1p(math.exp(u))


def test_dpo_by_hand():
    """-log s(T_w - T_l) = sp(-1) = 0.313262; rewards T_w = 0.5, T_l = -0.5."""
    loss, cw, cl = value("dpo", beta=1.0)
    assert loss == pytest.approx(0.3132616875, abs=1e-9)
    assert (cw, cl) == pytest.approx((0.5, -0.5))


def test_mio_by_hand():
    """sp(-T_w) + 1/2 sp(T_w) + 1/2 sp(T_l) = 0.474077 + 0.487038 + 0.237038 = 1.198154."""
    loss, cw, cl = value("mio", beta=1.0)
    assert loss == pytest.approx(1.1981539684, abs=1e-9)
    assert loss == pytest.approx(sp(-0.5) + 0.5 * sp(0.5) + 0.5 * sp(-0.5))
    assert (cw, cl) == pytest.approx((0.5, -0.5))


def test_mio_general_knobs_by_hand():
    """a = 0.25, z = 2: sp(-0.5) + 2 (0.25 sp(0.5) + 0.75 sp(-0.5)) = 0.474077 + 0.487038 + 0.711115 = 1.672231."""
    loss, _, _ = value("mio", beta=1.0, chosen_negative_weight=0.25, negative_weight=2.0)
    assert loss == pytest.approx(sp(-0.5) + 2 * (0.25 * sp(0.5) + 0.75 * sp(-0.5)))
    assert loss == pytest.approx(1.6722308, abs=1e-6)


def test_cdpo_by_hand():
    """eps = 0.1: 0.9 sp(-1) + 0.1 sp(1) = 0.281936 + 0.131326 = 0.413262."""
    loss, _, _ = value("cdpo", beta=1.0, label_smoothing=0.1)
    assert loss == pytest.approx(0.4132616875, abs=1e-9)


def test_ipo_by_hand():
    """(c_w - c_l - 1/(2 beta))^2 = (1 - 0.5)^2 = 0.25 at beta = 1."""
    loss, _, _ = value("ipo", beta=1.0)
    assert loss == pytest.approx(0.25)


def test_hinge_by_hand():
    """beta = 0.5: relu(1 - 0.5 * 1) = 0.5; rewards 0.25, -0.25."""
    loss, cw, cl = value("hinge", beta=0.5)
    assert loss == pytest.approx(0.5)
    assert (cw, cl) == pytest.approx((0.25, -0.25))


def test_nca_pair_by_hand():
    """-log s(0.5) - 1/2 log s(-0.5) - 1/2 log s(0.5) = sp(-0.5) + 1/2 sp(0.5) + 1/2 sp(-0.5) = 1.198154."""
    loss, _, _ = value("nca_pair", beta=1.0)
    assert loss == pytest.approx(1.1981539684, abs=1e-9)


def test_bco_pair_by_hand():
    """-log s(0.5) - log s(0.5) = 2 sp(-0.5) = 0.948154; delta = 0.5 gives sp(0) + sp(-1) = 0.693147 + 0.313262."""
    assert value("bco_pair", beta=1.0)[0] == pytest.approx(0.9481539684, abs=1e-9)
    assert value("bco_pair", beta=1.0, delta=0.5)[0] == pytest.approx(math.log(2) + 0.3132616875, abs=1e-9)


def test_orpo_by_hand():
    """Mean log-probs -1, -2: log odds -1 - log(1 - e^-1) = -0.541325 and -2 - log(1 - e^-2) = -1.854587;
    difference 1.313262; beta = 1: -log s(1.313262) = 0.238183. Rewards beta * m = -1, -2."""
    loss, cw, cl = value("orpo", beta=1.0)
    d = (-1 - math.log(1 - math.exp(-1))) - (-2 - math.log(1 - math.exp(-2)))
    assert d == pytest.approx(1.3132617, abs=1e-6)
    assert loss == pytest.approx(sp(-d), abs=1e-9)
    assert loss == pytest.approx(0.2381830, abs=1e-6)
    assert (cw, cl) == pytest.approx((-1.0, -2.0))


def test_simpo_by_hand():
    """beta = 2, gamma/beta = 0.5: -log s(2 ((-1) - (-2) - 0.5)) = sp(-1) = 0.313262; rewards 2 m = -2, -4."""
    loss, cw, cl = value("simpo", beta=2.0, gamma_beta_ratio=0.5)
    assert loss == pytest.approx(0.3132616875, abs=1e-9)
    assert (cw, cl) == pytest.approx((-2.0, -4.0))


def test_apo_zero_by_hand():
    """(1 - s(0.5)) + s(-0.5) = 0.377541 + 0.377541 = 0.755081."""
    assert value("apo_zero", beta=1.0)[0] == pytest.approx(0.7550813, abs=1e-6)


def test_sppo_hard_by_hand():
    """beta = 0.5, 1/(2 beta) = 1: (0.5 - 1)^2 + (-0.5 + 1)^2 = 0.5."""
    assert value("sppo_hard", beta=0.5)[0] == pytest.approx(0.5)


def test_every_registered_method_has_a_hand_test():
    names = {n.removeprefix("test_").removesuffix("_by_hand") for n in globals() if n.endswith("_by_hand")}
    assert set(LOSSES) <= names


# ------------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0])
def test_value_at_policy_equals_reference(beta):
    """MIO = ln 4 (PAPER.md), DPO = ln 2 (TRL's invariant test: 0.6931471) when policy = reference."""
    x = -3.7
    assert value("mio", x, x - 1, x, x - 1, beta=beta)[0] == pytest.approx(math.log(4), abs=1e-12)
    assert value("dpo", x, x - 1, x, x - 1, beta=beta)[0] == pytest.approx(math.log(2), abs=1e-12)
    assert value("nca_pair", x, x - 1, x, x - 1, beta=beta)[0] == pytest.approx(math.log(4), abs=1e-12)


def grads(name, pc, pr, rc, rr, **kw):
    a, b = t(pc), t(pr)
    LOSSES[name].fn(a, b, t(rc), t(rr), **kw).losses.sum().backward()
    return a.grad.item(), b.grad.item()


@pytest.mark.parametrize("t_l", [-20.0, -3.0, -0.5, 0.0, 2.0])
def test_mio_chosen_gradient_vanishes_at_ln2_whatever_the_rejected(t_l):
    """dL/dT_w = -s(-T_w) + 1/2 s(T_w) = 0 at T_w = ln 2, for any T_l; negative below, positive above."""
    beta = 0.5
    ref = -4.0
    at = ref + LN2 / beta
    g_at, _ = grads("mio", at, ref + t_l / beta, ref, ref, beta=beta)
    assert g_at == pytest.approx(0.0, abs=1e-12)
    g_below, _ = grads("mio", at - 0.3, ref + t_l / beta, ref, ref, beta=beta)
    g_above, _ = grads("mio", at + 0.3, ref + t_l / beta, ref, ref, beta=beta)
    assert g_below < 0 < g_above


def test_mio_chosen_gradient_does_not_depend_on_rejected():
    gs = [grads("mio", -1.0, r, -1.3, -2.0, beta=0.2)[0] for r in (-50.0, -5.0, -2.0, 0.0)]
    assert max(gs) - min(gs) < 1e-15


def test_dpo_chosen_gradient_does_depend_on_rejected():
    """The contrast Prop 3.1 draws: as the rejected is suppressed, DPO's chosen gradient vanishes."""
    g_far = grads("dpo", -1.0, -200.0, -1.0, -2.0, beta=0.2)[0]
    g_near = grads("dpo", -1.0, -2.0, -1.0, -2.0, beta=0.2)[0]
    assert abs(g_far) < 1e-10 < abs(g_near)


def test_initial_gradients_quarter_vs_half():
    """At T = 0 MIO's gradients w.r.t. (T_w, T_l) are (-1/4, +1/4), DPO's (-1/2, +1/2) (PAPER.md)."""
    assert grads("mio", -2.0, -3.0, -2.0, -3.0, beta=1.0) == pytest.approx((-0.25, 0.25))
    assert grads("dpo", -2.0, -3.0, -2.0, -3.0, beta=1.0) == pytest.approx((-0.5, 0.5))


def test_mio_equals_nca_pair_at_default_knobs():
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(64, generator=g, dtype=torch.float64) * 5 for _ in range(4)]
    for beta in (0.01, 0.1, 1.0):
        a = LOSSES["mio"].fn(*x, beta=beta).losses
        b = LOSSES["nca_pair"].fn(*x, beta=beta).losses
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)  # softplus vs logsigmoid rounding only


def test_mio_with_no_chosen_in_negatives_is_bco_pair():
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(64, generator=g, dtype=torch.float64) * 5 for _ in range(4)]
    a = LOSSES["mio"].fn(*x, beta=0.3, chosen_negative_weight=0.0).losses
    torch.testing.assert_close(a, LOSSES["bco_pair"].fn(*x, beta=0.3).losses, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_signs(name):
    """At policy = reference, every method raises the chosen log-prob and lowers the rejected one."""
    kw = {"beta": 0.5}
    dc, dr = grads(name, -2.0, -2.5, -2.0, -2.5, **kw)
    assert dc < 0, f"{name}: dL/d logp_chosen = {dc} (gradient descent would lower the chosen)"
    assert dr > 0, f"{name}: dL/d logp_rejected = {dr}"


def test_mi_estimates_match_the_losses():
    """DPO = ln 2 - I_DV and MIO = -I_JS, with the same critic values (PAPER.md)."""
    g = torch.Generator().manual_seed(2)
    pc, pr, rc, rr = (torch.randn(32, generator=g, dtype=torch.float64) for _ in range(4))
    d = LOSSES["dpo"].fn(pc, pr, rc, rr, beta=0.7)
    m = LOSSES["mio"].fn(pc, pr, rc, rr, beta=0.7)
    mi = mi_estimates(m.chosen_rewards, m.rejected_rewards)
    assert float(mi["mi/dv"]) == pytest.approx(math.log(2) - d.losses.mean().item(), abs=1e-6)
    assert float(mi["mi/js"]) == pytest.approx(-m.losses.mean().item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------- registry


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="valid methods: .*dpo.*mio"):
        get_method("mioo")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_registry_config_and_schema_agree(name):
    """Three places per method: function, registry entry, conf/method/<name>.yaml with the function's knobs."""
    import yaml

    conf = yaml.safe_load((CONF_DIR / "method" / f"{name}.yaml").read_text())
    knobs = set(hyperparameters(name))
    assert knobs <= set(conf), f"conf/method/{name}.yaml lacks {knobs - set(conf)}"
    assert conf["name"] == name
    fields = set(method_schema(name).__dataclass_fields__)
    assert set(conf) - {"defaults"} <= fields


def test_orpo_log1mexp_is_accurate_and_keeps_its_gradient_near_zero():
    """ORPO's log(1 - e^m) near m = 0 (a confident model): a clamp on e^m gave zero gradient above m = -1e-6 and a
    1e-4 relative error in float32; the two-branch form matches float64 and its gradient -e^m / (1 - e^m)."""
    from align.losses import log1mexp

    m = torch.tensor([-1e-7, -1e-5, -0.1, -0.69, -0.7, -5.0, -40.0], dtype=torch.float32, requires_grad=True)
    exact = torch.log(-torch.expm1(m.detach().double()))
    out = log1mexp(m)
    torch.testing.assert_close(out.double(), exact, rtol=1e-6, atol=1e-12)
    out.sum().backward()
    e = torch.exp(m.detach().double())
    torch.testing.assert_close(m.grad.double(), -e / (1 - e), rtol=1e-4, atol=1e-30)
    assert torch.isfinite(log1mexp(torch.zeros(1))).all()
