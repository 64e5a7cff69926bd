"""Evaluate a checkpoint on a preset of benchmarks with lm-evaluation-harness (Hydra entry point).

    python eval/run.py checkpoint=<folder or hub name> benchmarks=mio8 unsafe_code=true
    python eval/run.py unsafe_code=true        # the tiny local model on the offline mini copies (CPU, minutes)
    python eval/run.py -m checkpoint=a,b benchmarks=mio8 unsafe_code=true

Results go to <output_dir>/<preset>/ (eval/README.md). The work is in ``eval.harness.run``; with checkpoint null,
``pipeline.evaluate`` first builds the model config's folder (as training does).
"""

from omegaconf import DictConfig


def evaluate(cfg: DictConfig) -> None:
    from pipeline.evaluate import run

    run(cfg)


def main() -> None:
    """The ``mio-eval`` console script and ``python eval/run.py``: the schemas registered, then Hydra's app over
    conf/ (found by absolute path: a package-relative path would need conf/ to be a Python package)."""
    import hydra

    from common.config import CONF_DIR
    from eval.config import register_eval_configs

    register_eval_configs()
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")(evaluate)()


if __name__ == "__main__":
    main()
