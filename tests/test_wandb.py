"""trainer.wandb_project: the rows of metrics.jsonl go to Weights & Biases too (a stand-in wandb module here: the
package is an optional extra and the hub is offline)."""

from __future__ import annotations

import sys
import types

import pytest

from align.records import read_metrics
from align.run import run


class FakeWandb(types.ModuleType):
    def __init__(self):
        super().__init__("wandb")
        self.inits, self.rows, self.finished = [], [], 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self

    def log(self, row, step):
        self.rows.append((step, row))

    def finish(self):
        self.finished += 1


def test_wandb_gets_the_metrics_rows_and_the_config(tiny_cfg, tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    out = tmp_path / "run"
    run(tiny_cfg("trainer.wandb_project=mio-tests", "trainer.eval_steps=2", out=out))
    (init,) = fake.inits
    assert init["project"] == "mio-tests" and init["dir"] == str(out)
    assert (
        init["config"]["method"]["name"] == "mio"
        and init["config"]["trainer"]["wandb_project"] == "mio-tests"
    )
    logged = [(r["step"], r["split"], r["loss"]) for r in read_metrics(out / "metrics.jsonl")]
    assert [
        (step, k.split("/")[0], row[k]) for step, row in fake.rows for k in row if k.endswith("/loss")
    ] == logged
    assert fake.finished == 1


def test_wandb_not_installed_is_named(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    with pytest.raises(ImportError, match="pip install wandb"):
        run(tiny_cfg("trainer.wandb_project=x", out=tmp_path / "run"))
