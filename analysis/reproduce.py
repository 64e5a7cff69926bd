"""Table 1 end to end: the training + evaluation sweep through the real Hydra CLI, then the tables, figures and report.

    make reproduce-table1                     # SCALE=tiny: CPU, minutes
    make reproduce-table1 SCALE=paper         # GPUs and the hub; jobs one after another on this node
    make reproduce-table1 SCALE=paper ARGS="hydra/launcher=slurm hydra.launcher.partition=gpu"
    python -m analysis.reproduce --scale tiny method=mio,dpo trainer.max_steps=20   # any Hydra override

The sweep is ``python align/run.py -m experiment=table1_<scale> hydra.sweep.dir=<out>/runs <overrides>``: the grid
(methods x base models) and every setting live in conf/experiment/table1_<scale>.yaml. Run folders are named by
their overrides, so a rerun finds the same folders: completed training is skipped (``skip_if_complete``) and
evaluations are served from eval/'s cache. A failed job does not stop the others; the report is built from what
exists and the exit code is the sweep's.
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


def sweep_command(scale: str, runs_dir: Path, overrides: list[str]) -> list[str]:
    """The Hydra multirun command line of the Table 1 sweep."""
    return [
        sys.executable,
        str(REPO / "align" / "run.py"),
        "-m",
        f"experiment=table1_{scale}",
        f"hydra.sweep.dir={runs_dir}",
        *overrides,
    ]


def sweep_env(scale: str) -> dict[str, str]:
    env = dict(os.environ)
    if scale == "tiny":
        for k, v in TINY_ENV.items():
            env.setdefault(k, v)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="tiny", help="tiny (CPU) or paper (GPUs)")
    parser.add_argument("--out", type=Path, help="tables, figures, report (default: outputs/table1/<scale>)")
    parser.add_argument("--runs", type=Path, help="the sweep's folder (default: <out>/runs)")
    parser.add_argument("--dry-run", action="store_true", help="print the sweep command and stop")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to the sweep")
    args = parser.parse_args(argv)
    out = (args.out or default_out_dir(args.scale)).resolve()
    runs = (args.runs or out / "runs").resolve()
    cmd = sweep_command(args.scale, runs, args.overrides)
    shown = shlex.join([Path(cmd[0]).name, *cmd[1:]])
    print(f"$ {shown}", flush=True)
    if args.dry_run:
        return 0

    start = time.time()
    returncode = subprocess.run(cmd, cwd=REPO, env=sweep_env(args.scale)).returncode
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
