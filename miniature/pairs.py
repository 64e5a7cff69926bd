"""On-policy preference pairs derived from the miniature SFT model, as the paper frames its data: for each prompt,
sample several answers from the model, check each with its task's verifier, and pair a correct answer (chosen)
with an incorrect one (rejected). Prompts whose samples are all right or all wrong give no pair; how many did is
reported per family.

``ensure_pairs(model_dir, spec, model_key)`` writes ``train.jsonl`` and ``test.jsonl`` (UltraFeedback's shape:
chat-message lists, plus ``family`` and ``gold``) and ``pairs_build.json`` (the spec, its key, the counts) into
``spec["dir"]``; a folder built from the same model and spec is reused. Seeded: the same model and spec give the
same pairs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from filelock import FileLock

from miniature import tasks

log = logging.getLogger(__name__)

SPEC_FILE = "pairs_build.json"


def pair_prompts(families: Mapping[str, float], spec: Mapping) -> dict[str, list[tasks.Problem]]:
    """The train and held-out pair prompts: disjoint from each other and from the benchmark."""
    taken = {p.question for p in tasks.benchmark()}
    test = tasks.mixed(families, spec["test_prompts"], spec["seed"] + 4, taken)
    train = tasks.mixed(families, spec["train_prompts"], spec["seed"] + 3, taken | {p.question for p in test})
    return {"train": train, "test": test}


def make_pairs(
    model, tokenizer, problems: Sequence[tasks.Problem], spec: Mapping, max_new_tokens: int, seed: int
) -> tuple[list[dict], dict]:
    """One pair per prompt that has both a correct and an incorrect sample; returns (rows, counts per family)."""
    from miniature.generate import generate

    samples = generate(
        model,
        tokenizer,
        [p.question for p in problems],
        max_new_tokens,
        num_samples=spec["samples"],
        temperature=spec["temperature"],
        seed=seed,
    )
    r = random.Random(seed)
    rows, counts = [], {}
    for p, answers in zip(problems, samples, strict=True):
        right = sorted({a for a in answers if tasks.verify(p.family, a, p.answer)})
        wrong = sorted({a for a in answers if a.strip() and not tasks.verify(p.family, a, p.answer)})
        c = counts.setdefault(
            p.family, {"prompts": 0, "pairs": 0, "all_right": 0, "all_wrong": 0, "correct": 0}
        )
        c["prompts"] += 1
        c["correct"] += sum(tasks.verify(p.family, a, p.answer) for a in answers)
        if right and wrong:
            c["pairs"] += 1
            user = {"role": "user", "content": p.question}
            rows.append(
                {
                    "prompt": p.question,
                    "chosen": [user, {"role": "assistant", "content": r.choice(right)}],
                    "rejected": [user, {"role": "assistant", "content": r.choice(wrong)}],
                    "family": p.family,
                    "gold": p.answer,
                }
            )
        elif right:
            c["all_right"] += 1
        else:
            c["all_wrong"] += 1
    for c in counts.values():
        c["sample_accuracy"] = c.pop("correct") / (c["prompts"] * spec["samples"])
    total = {k: sum(c[k] for c in counts.values()) for k in ("prompts", "pairs", "all_right", "all_wrong")}
    counts["all"] = total
    return rows, counts


def pairs_key(spec: Mapping, model_key: str) -> str:
    body = {k: v for k, v in sorted(spec.items()) if k != "dir"} | {"model": model_key}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def ensure_pairs(
    model_dir: str | os.PathLike, families: Mapping[str, float], spec: Mapping, model_key: str
) -> Path:
    """Build the pairs folder ``spec["dir"]`` from the model in ``model_dir`` unless it is up to date."""
    out = Path(spec["dir"])
    key = pairs_key(spec, model_key)

    def up_to_date() -> bool:
        f = out / SPEC_FILE
        return f.exists() and json.loads(f.read_text()).get("key") == key

    if up_to_date():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if up_to_date():
            return out
        from transformers import AutoModelForCausalLM, AutoTokenizer

        start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        build = json.loads((Path(model_dir) / "miniature_build.json").read_text())
        max_new = build["spec"]["max_new_tokens"]
        prompts = pair_prompts(families, spec)
        record = {
            "key": key,
            "model": str(model_dir),
            "model_key": model_key,
            "spec": dict(spec),
            "splits": {},
        }
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".tmp"))
        for i, (split, problems) in enumerate(prompts.items()):
            rows, counts = make_pairs(model, tokenizer, problems, spec, max_new, spec["seed"] + i)
            with open(tmp / f"{split}.jsonl", "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
            record["splits"][split] = counts
            log.info("on-policy pairs, %s: %d of %d prompts gave a pair", split, len(rows), len(problems))
        record["seconds"] = time.perf_counter() - start
        (tmp / SPEC_FILE).write_text(json.dumps(record, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    return out
