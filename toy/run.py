"""Entry point of the toy experiments: ``make toy`` (= ``.venv/bin/python toy/run.py``).

Regenerates every toy figure (PNG + PDF) and its data under ``toy/results/`` (a few minutes on 2 CPU cores).
Quick preset: ``python toy/run.py --config-name quick``; overrides as usual, e.g. ``parts=[propositions]``.
The work is ``toy.pipeline.run(cfg)``, which tests call on a composed config.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from toy.pipeline import run
from toy.toy_config import register_configs


@hydra.main(version_base="1.3", config_path="../conf/toy", config_name="config")
def _main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    register_configs()  # the schema must be in the ConfigStore before Hydra composes the config
    _main()


if __name__ == "__main__":
    main()
