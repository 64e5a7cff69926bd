"""Evaluate a checkpoint on a preset of benchmarks with lm-evaluation-harness (Hydra entry point).

    python eval/run.py checkpoint=<folder or hub name> benchmarks=mio8 unsafe_code=true
    python eval/run.py unsafe_code=true        # the tiny local model on the offline mini copies (CPU, minutes)
    python eval/run.py -m checkpoint=a,b benchmarks=mio8 unsafe_code=true

Results go to <output_dir>/<preset>/ (eval/README.md). The work is in ``eval.harness.run``.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from eval.harness import run

    run(cfg)


if __name__ == "__main__":
    import align.config
    import eval.config

    align.config.register_configs()
    eval.config.register_eval_configs()
    main()
