"""Data preparation speed: rows per second and peak memory of ``load_preference_data`` on a generated
UltraFeedback-shaped file (chat message lists, prompts of ~90 tokens, answers of ~250 tokens each), with the
Mistral-7B SentencePiece tokenizer and Zephyr's template.

    python bench/data_prep.py --rows 60000                       # this checkout, one process
    python bench/data_prep.py --rows 60000 --num-proc 2          # datasets.map over 2 processes
    python bench/data_prep.py --rows 60000 --code /tmp/old-tree  # another checkout's align/ (e.g. an older commit)

Each measurement runs in a fresh subprocess (its own datasets cache, so nothing is reused) and appends one JSON
record to --out: rows/s over the whole call (JSON parsing, checks, templating, tokenization, fingerprint) and the
child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "the model answer question because reasoning step value number compute result first second then therefore "
    "however example data train policy reward likelihood chosen rejected prompt response token sequence sum"
).split()


def generate(path: Path, rows: int, seed: int = 0) -> Path:
    """``rows`` UltraFeedback-shaped pairs (prompt string + chosen/rejected message lists), seeded."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
        for i in range(0, len(words), 20):
            words[i] = words[i].capitalize() + f" {rng.randint(0, 99)},"
        return " ".join(words) + "."

    with open(path, "w") as f:
        for _ in range(rows):
            prompt = text(30, 90)
            conv = [{"role": "user", "content": prompt}]
            row = {
                "prompt": prompt,
                "chosen": conv + [{"role": "assistant", "content": text(80, 280)}],
                "rejected": conv + [{"role": "assistant", "content": text(80, 280)}],
            }
            f.write(json.dumps(row) + "\n")
    return path


def measure(data: Path, tokenizer_dir: Path, num_proc: int | None) -> dict:
    """One timed ``load_preference_data`` call in this process (run by the child)."""
    import datasets
    from transformers import AutoTokenizer

    from align.config import compose
    from align.preference_data import load_preference_data

    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    overrides = ["output_dir=unused", "dataset=local_file", f"dataset.path={data}", "dataset.eval_fraction=0"]
    overrides += ["dataset.max_length=1024", "dataset.max_prompt_length=512"]
    if num_proc:
        overrides.append(f"dataset.num_proc={num_proc}")
    cfg = compose(overrides).dataset
    start = time.perf_counter()
    out = load_preference_data(cfg, tok, seed=0)
    seconds = time.perf_counter() - start
    return {"rows": len(out.train.dataset), "seconds": round(seconds, 2), "stats": out.stats["train"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--num-proc", type=int, default=None)
    ap.add_argument("--code", type=Path, default=REPO, help="checkout whose align/ is measured")
    ap.add_argument("--label", default=None, help="name of this measurement in the record")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "data_prep.jsonl")
    ap.add_argument("--child", nargs=2, metavar=("DATA", "TOKENIZER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = measure(Path(args.child[0]), Path(args.child[1]), args.num_proc)
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        result["children_peak_rss_mib"] = round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        )
        print(json.dumps(result))
        return

    sys.path.insert(0, str(REPO))
    from tests.real_models import mistral_tokenizer_folder

    work = Path(tempfile.mkdtemp(prefix="data-prep-"))
    data = work / f"uf-{args.rows}.jsonl"
    generate(data, args.rows)
    tok_dir = mistral_tokenizer_folder(work / "mistral")
    env = dict(os.environ, HF_HOME=str(work / "hf"), PYTHONPATH=str(args.code), TOKENIZERS_PARALLELISM="true")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(data), str(tok_dir)]
    if args.num_proc:
        cmd += ["--num-proc", str(args.num_proc)]
    proc = subprocess.run(cmd, env=env, cwd=args.code, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    git = subprocess.run(
        ["git", "-C", str(args.code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    record = {
        "label": args.label or f"code@{git.stdout.strip()}",
        "tokenizer": "mistral-7b-v0.1 sentencepiece + zephyr template",
        "num_proc": args.num_proc or 1,
        "rows_per_s": round(result["rows"] / result["seconds"], 1),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
