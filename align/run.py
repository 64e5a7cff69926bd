"""Preference training entry point (Hydra): train one config, then evaluate its final model.

    python align/run.py                                  # MIO on the tiny local model and bundled data (CPU)
    python align/run.py method=dpo trainer.max_steps=50  # another method, fewer steps
    python align/run.py -m method=mio,dpo,nca_pair       # a sweep: one run folder per job
    python align/run.py experiment=zephyr_dpo            # a recipe (conf/experiment/)

The work is importable: ``pipeline.run.run(cfg)`` (re-exported here with ``validate``) trains through
``align.run_folder`` and evaluates through eval/. This file is an entry point: library code never imports it.
"""

from __future__ import annotations

from align.config import CONF_DIR, register_configs
from align.run_folder import RunFolderError, train_here
from common.cli import report_errors
from pipeline.run import run, validate

__all__ = ["RunFolderError", "main", "run", "train_here", "validate"]


def main() -> None:
    import hydra

    register_configs()
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(report_errors(run))()


if __name__ == "__main__":
    main()
