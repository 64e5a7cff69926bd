"""Table 1 end to end: the training + evaluation sweep through the real Hydra CLI, then the tables, figures and report.

    make reproduce-table1                     # SCALE=tiny: CPU, minutes
    make reproduce-table1 SCALE=paper         # GPUs and the hub; jobs one after another on this node
    make reproduce-table1 ARGS="--grid beta"  # claim (d): MIO and DPO at more betas, into the same folder
    make reproduce-table1 SCALE=paper ARGS="hydra/launcher=slurm hydra.launcher.partition=gpu"
    python -m analysis.reproduce --scale tiny method=mio,dpo trainer.max_steps=20   # any Hydra override

The sweep is ``python align/run.py -m experiment=table1_<scale> hydra.sweep.dir=<out>/runs <overrides>``: the grid
(methods x base models x seeds) and every setting live in conf/experiment/table1_<scale>.yaml. Then each base
model is scored as it is, without preference training (``<runs>/start__<model>/``, Table 1's first row per model).
Run folders are named by their overrides, so a rerun finds the same folders: completed training is skipped
(``skip_if_complete``) and evaluations are served from eval/'s cache. A failed job does not stop the others; the
report is built from what exists and the exit code is the sweep's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from analysis.report import REPO, SCALES, build, default_out_dir
from common.records import shown_path

# Environment for SCALE=tiny (the user's own values win). One thread also for what runs before the trainer applies
# trainer.cpu_threads (the tiny models' build and SFT warm-up): on a shared 2-core machine torch's default thread
# count made the tiny model's training ~15x slower (measured).
TINY_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}


GRIDS = ("table1", "beta")  # conf/experiment/<grid>_<scale>.yaml: Table 1, and claim (d)'s beta sweep


def sweep_command(scale: str, runs_dir: Path, overrides: list[str], grid: str = "table1") -> list[str]:
    """The Hydra multirun command line of the Table 1 sweep (or of another grid into the same folder), run in REPO:
    paths under it are given relative to it, so the records Hydra and env.json keep of it name no machine's path."""
    return [
        sys.executable,
        shown_path(REPO / "align" / "run.py", REPO),
        "-m",
        f"experiment={grid}_{scale}",
        f"hydra.sweep.dir={shown_path(runs_dir, REPO)}",
        *overrides,
    ]


def sweep_env(scale: str) -> dict[str, str]:
    env = dict(os.environ)
    if scale == "tiny":
        for k, v in TINY_ENV.items():
            env.setdefault(k, v)
    return env


START_PREFIX = "start__"  # <runs>/start__<model>/: the base model itself, scored like a run, not trained


def evaluate_start_models(runs_dir: Path) -> list[Path]:
    """Score each base model of the sweep without preference training, on the benchmarks its runs used.

    Each becomes a folder ``<runs>/start__<model>/`` in a run's layout (config.yaml, results.json with method
    ``start``, .hydra/hydra.yaml naming the model, eval/<preset>/), so Table 1 shows it as the first row of its
    block. eval/'s cache makes a rerun free. Returns the folders written.
    """
    import yaml
    from omegaconf import OmegaConf

    from align.config import register_configs
    from align.models import prepare_model_source
    from analysis.collect import find_run_dirs, model_label
    from eval.harness import evaluate_checkpoint

    register_configs()
    done: dict[str, Path] = {}
    for run in find_run_dirs(runs_dir):
        if run.name.startswith(START_PREFIX):
            continue
        config = OmegaConf.load(run / "config.yaml")
        label = model_label(run, OmegaConf.to_container(config))
        if label in done or not config.evaluate.benchmarks:
            continue
        folder = runs_dir / f"{START_PREFIX}{label}"
        (folder / ".hydra").mkdir(parents=True, exist_ok=True)
        source = prepare_model_source(config.model)
        summary = evaluate_checkpoint(
            source, config.evaluate.benchmarks, str(folder / "eval"), tuple(config.evaluate.overrides)
        )
        record = {
            "model": OmegaConf.to_container(config.model),
            "method": {"name": "start"},
            "dataset": OmegaConf.to_container(config.dataset),
            "evaluate": OmegaConf.to_container(config.evaluate),
        }
        files = {
            folder / "config.yaml": yaml.safe_dump(record),
            folder / ".hydra" / "hydra.yaml": yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": label}}}}),
            folder / "results.json": json.dumps(
                {"status": "completed", "method": "start", "model": source, "final_model": source,
                 "evaluation": {"preset": config.evaluate.benchmarks, "scores": summary.get("scores"),
                                "average": summary.get("average")}},
                indent=1,
            ) + "\n",
        }  # fmt: skip
        for path, text in files.items():
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        done[label] = folder
    return list(done.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="tiny", help="tiny (CPU) or paper (GPUs)")
    parser.add_argument("--out", type=Path, help="tables, figures, report (default: outputs/table1/<scale>)")
    parser.add_argument("--runs", type=Path, help="the sweep's folder (default: <out>/runs)")
    parser.add_argument("--dry-run", action="store_true", help="print the sweep command and stop")
    parser.add_argument(
        "--grid", choices=GRIDS, default="table1", help="table1, or beta: claim (d)'s beta sweep (SCALE=tiny)"
    )
    parser.add_argument("--start-models", type=Path, help=argparse.SUPPRESS)  # the step after the sweep
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to the sweep")
    args = parser.parse_args(argv)
    if args.start_models:
        for folder in evaluate_start_models(args.start_models):
            print(f"start model scored: {folder}")
        return 0
    out = (args.out or default_out_dir(args.scale)).resolve()
    runs = (args.runs or out / "runs").resolve()
    if not (REPO / "conf" / "experiment" / f"{args.grid}_{args.scale}.yaml").exists():
        parser.error(
            f"no grid {args.grid} at scale {args.scale} (conf/experiment/{args.grid}_{args.scale}.yaml)"
        )
    cmd = sweep_command(args.scale, runs, args.overrides, args.grid)
    shown = shlex.join([Path(cmd[0]).name, *cmd[1:]])
    print(f"$ {shown}", flush=True)
    if args.dry_run:
        return 0

    start = time.time()
    returncode = subprocess.run(cmd, cwd=REPO, env=sweep_env(args.scale)).returncode
    if runs.exists():
        starts = subprocess.run(
            [sys.executable, "-m", "analysis.reproduce", "--start-models", str(runs)],
            cwd=REPO,
            env=sweep_env(args.scale),
        ).returncode
        returncode = returncode or starts
    sweep_seconds = time.time() - start
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": shown,
        "scale": args.scale,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start)),
        "sweep_seconds": sweep_seconds,
        "returncode": returncode,
    }
    with open(out / "reproduce_log.jsonl", "a") as log:  # one line per invocation: the report lists them
        log.write(json.dumps(record) + "\n")
    report = build(runs, out, args.scale)
    total = time.time() - start
    print(f"sweep: {sweep_seconds:.0f} s (exit code {returncode}); sweep + analysis: {total:.0f} s")
    print(f"report: {report}\ntable:  {out / 'table1.md'}")
    if returncode:
        print("some sweep jobs failed: the report lists what is missing", file=sys.stderr)
    return returncode


if __name__ == "__main__":
    raise SystemExit(main())
