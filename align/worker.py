"""One rank of a multi-process run: ``python -m align.worker <run>/config.yaml`` (started by align/launch.py).

Reads the resolved config the Hydra job wrote, checks it against the schema, and trains; rank 0 writes the
metrics and results into the same run folder.
"""

from __future__ import annotations

import logging
import sys

from omegaconf import OmegaConf

from align import distributed as dist
from align.config import Config, register_configs
from align.run_folder import train_here


def main(config_file: str) -> None:
    register_configs()
    logging.basicConfig(
        level=logging.INFO if dist.is_main() else logging.WARNING,
        format=f"[%(asctime)s][rank {dist.rank()}][%(name)s][%(levelname)s] - %(message)s",
    )
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(config_file))
    train_here(cfg)


if __name__ == "__main__":
    main(sys.argv[1])
