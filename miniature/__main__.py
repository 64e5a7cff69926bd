"""Command line of the miniature.

    python -m miniature build                      # the SFT model (model=mini_sft) and its on-policy pairs
    python -m miniature build model.build.seed=1   # any override of the training config's model group
    python -m miniature benchmark                  # write the benchmark's JSONL copy for eval/'s local data

``build`` prints the SFT model's held-out greedy accuracy per family and how many prompts gave a pair.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARK_COPY = REPO / "eval" / "tasks" / "mini" / "miniature" / "mio_miniature.jsonl"


def summary(model_dir: Path, pairs_dir: Path | None) -> str:
    """The build's numbers as a few lines of text (from miniature_build.json and pairs_build.json)."""
    record = json.loads((model_dir / "miniature_build.json").read_text())
    acc = record["benchmark_accuracy"]
    lines = [
        f"miniature SFT model: {model_dir} ({record['parameters']:,} parameters, built in "
        f"{sum(record['seconds'].values()):.0f} s)",
        "held-out greedy accuracy (benchmark, n per family): "
        + ", ".join(f"{f} {v['accuracy']:.2f} (n={v['n']})" for f, v in acc.items() if f != "mean")
        + f"; mean over families {acc['mean']['accuracy']:.3f}",
    ]
    if pairs_dir is not None and (pairs_dir / "pairs_build.json").exists():
        pairs = json.loads((pairs_dir / "pairs_build.json").read_text())
        for split, counts in pairs["splits"].items():
            per = ", ".join(f"{f} {c['pairs']}/{c['prompts']}" for f, c in counts.items() if f != "all")
            lines.append(
                f"on-policy pairs, {split}: {counts['all']['pairs']} of {counts['all']['prompts']} prompts gave a "
                f"pair ({per})"
            )
    return "\n".join(lines)


def build(overrides: list[str]) -> None:
    from omegaconf import OmegaConf

    from align.config import compose
    from align.models import prepare_model_source

    cfg = compose(["output_dir=unused", "model=mini_sft", *overrides])
    start = time.perf_counter()
    model_dir = Path(prepare_model_source(cfg.model))
    pairs = OmegaConf.select(cfg, "model.build.pairs.dir")
    print(summary(model_dir, Path(pairs) if pairs else None))
    print(f"({time.perf_counter() - start:.0f} s)")


def write_benchmark(out: Path) -> None:
    from miniature.tasks import benchmark_rows

    out.parent.mkdir(parents=True, exist_ok=True)
    rows = benchmark_rows()
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{out}: {len(rows)} items")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miniature", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the SFT model and its on-policy pairs")
    b.add_argument("overrides", nargs="*", help="config overrides, e.g. model.build.seed=1")
    w = sub.add_parser("benchmark", help="write the benchmark's JSONL copy")
    w.add_argument("--out", type=Path, default=BENCHMARK_COPY)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    if args.command == "build":
        build(args.overrides)
    else:
        write_benchmark(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
