"""The likelihood-displacement statistic (policy log-probs against the reference's, every method) and its warning."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from align.losses import get_method
from align.run import run
from align.steps import preference_loss
from align.trainer import Trainer


def _method_cfg(name: str, **knobs):
    from align.config import method_schema

    return OmegaConf.merge(OmegaConf.structured(method_schema(name)), knobs)


def test_displacement_is_the_log_prob_against_the_reference_for_a_reference_free_method():
    """ORPO ignores the reference in its loss; the statistics still compare the policy with it.

    Chosen sums -4, -6 over 2 and 3 tokens, reference chosen -3, -8 over the same counts:
    displacement/chosen = mean(-4 + 3, -6 + 8) = 0.5; per token mean(-2 + 1.5, -2 + 8/3) = 1/12;
    below the reference: the first only, 1/2. Rejected sums -5, -7 against -5, -6: mean(0, -1) = -0.5.
    """
    sums = torch.tensor([-4.0, -6.0, -5.0, -7.0])
    counts = torch.tensor([2, 3, 2, 3])
    ref = (torch.tensor([[-3.0, -5.0], [-8.0, -6.0]]), torch.tensor([[2, 2], [3, 3]]))
    cfg = _method_cfg("orpo")
    loss_ref, stats = preference_loss(get_method("orpo"), cfg, sums, counts, ref)
    loss_none, plain = preference_loss(get_method("orpo"), cfg, sums, counts, None)
    assert torch.equal(loss_ref, loss_none)
    assert not any(k.startswith("displacement/") for k in plain)
    assert stats["displacement/chosen"].item() == pytest.approx(0.5)
    assert stats["displacement/rejected"].item() == pytest.approx(-0.5)
    assert stats["displacement/chosen_per_token"].item() == pytest.approx(1 / 12)
    assert stats["displacement/chosen_below_ref"].item() == pytest.approx(0.5)


def test_dpo_displacement_is_its_reward_over_beta():
    sums = torch.tensor([-4.0, -6.0, -5.0, -7.0])
    counts = torch.tensor([2, 3, 2, 3])
    ref = (torch.tensor([[-3.0, -5.0], [-8.0, -6.0]]), torch.tensor([[2, 2], [3, 3]]))
    _, stats = preference_loss(get_method("dpo"), _method_cfg("dpo", beta=0.2), sums, counts, ref)
    assert stats["displacement/chosen"].item() == pytest.approx(stats["rewards/chosen"].item() / 0.2)


@pytest.mark.parametrize("name", ["dpo", "simpo"])
def test_every_method_logs_displacement(tiny_cfg, tmp_path, name):
    out = tmp_path / name
    run(tiny_cfg(f"method={name}", "trainer.save_steps=0", out=out))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("displacement/chosen" in r for r in rows)
    first = next(r for r in rows if r["split"] == "train")
    assert first["displacement/chosen"] == pytest.approx(0.0, abs=1e-4)  # step 1: the policy is the reference


def _stub(margin):
    return SimpleNamespace(
        cfg=OmegaConf.create({"trainer": {"displacement_warning": margin}}), _displacement_warned=False
    )


def _stats(gap: float) -> dict[str, float]:
    return {
        "displacement/chosen_per_token": gap,
        "displacement/chosen": 10 * gap,
        "displacement/chosen_below_ref": 1.0,
    }


def test_warning_fires_once_past_the_margin(caplog):
    stub = _stub(0.5)
    with caplog.at_level(logging.WARNING, logger="align.trainer"):
        Trainer._warn_displacement(stub, 10, _stats(-0.4))
        assert not caplog.records
        Trainer._warn_displacement(stub, 20, _stats(-0.6))
        Trainer._warn_displacement(stub, 30, _stats(-0.9))
    assert len(caplog.records) == 1
    assert "step 20" in caplog.text and "0.600 nats per token" in caplog.text


def test_warning_can_be_switched_off(caplog):
    with caplog.at_level(logging.WARNING, logger="align.trainer"):
        Trainer._warn_displacement(_stub(None), 10, _stats(-5.0))
        Trainer._warn_displacement(_stub(0.5), 10, {})  # no reference: nothing to compare
    assert not caplog.records
