"""The bundled preference data: small arithmetic and string tasks whose chosen answer is right and rejected wrong.

The files under ``data/tiny_prefs/`` are written by this module, deterministically from a seed, in the
UltraFeedback shape (``prompt`` string, ``chosen``/``rejected`` as chat-message lists ending in the assistant
turn) so the tiny default exercises the same chat-template path as the real data. Regenerate with
``python -m align.tinydata`` (or ``make data``).
"""

from __future__ import annotations

import argparse
import json
import random
import string
from collections.abc import Callable
from pathlib import Path

WORDS = (
    "apple river stone cloud green table music light house water paper bread chair plant smile "
    "tiger horse candle garden window silver pencil orange rocket forest bridge planet winter summer "
    "yellow button dragon castle island basket spider jacket honey lemon mango ocean pillow rabbit "
    "shadow thunder violin wagon zebra anchor bottle circle desert engine feather guitar hammer "
    "jungle kettle ladder magnet needle parrot puzzle quilt saddle tunnel umbrella valley walnut "
    "cat dog sun moon star tree fish bird book cup hat key map pen box car bus egg ice ink jam"
).split()

Task = Callable[[random.Random], tuple[str, str, str]]


def _add(r: random.Random) -> tuple[str, str, str]:
    a, b = r.randint(0, 49), r.randint(0, 49)
    wrong = a + b + r.choice([-10, -2, -1, 1, 2, 10])
    return f"What is {a} + {b}?", f"{a} + {b} = {a + b}.", f"{a} + {b} = {wrong}."


def _sub(r: random.Random) -> tuple[str, str, str]:
    a = r.randint(10, 99)
    b = r.randint(0, a)
    wrong = a - b + r.choice([-2, -1, 1, 2])
    return f"What is {a} - {b}?", f"{a} - {b} = {a - b}.", f"{a} - {b} = {wrong}."


def _compare(r: random.Random) -> tuple[str, str, str]:
    a, b = r.sample(range(100), 2)
    big, small = max(a, b), min(a, b)
    return f"Which number is larger, {a} or {b}?", f"{big} is larger.", f"{small} is larger."


def _parity(r: random.Random) -> tuple[str, str, str]:
    n = r.randint(0, 999)
    right, wrong = ("even", "odd") if n % 2 == 0 else ("odd", "even")
    return f"Is {n} even or odd?", f"{n} is {right}.", f"{n} is {wrong}."


def _reverse(r: random.Random) -> tuple[str, str, str]:
    w = r.choice([w for w in WORDS if len(w) >= 4])
    rev = w[::-1]
    i = r.randrange(len(w) - 1)
    wrong = rev[:i] + rev[i + 1] + rev[i] + rev[i + 2 :]
    if wrong == rev:
        wrong = w
    return f"Reverse the word '{w}'.", f"'{w}' reversed is '{rev}'.", f"'{w}' reversed is '{wrong}'."


def _upper(r: random.Random) -> tuple[str, str, str]:
    w = r.choice(WORDS)
    i = r.randrange(len(w))
    wrong = w.upper()[:i] + w[i] + w.upper()[i + 1 :]
    return f"Write '{w}' in capital letters.", f"{w.upper()}", f"{wrong}"


def _count(r: random.Random) -> tuple[str, str, str]:
    w = r.choice(WORDS)
    wrong = len(w) + r.choice([-2, -1, 1, 2])
    return (
        f"How many letters are in the word '{w}'?",
        f"'{w}' has {len(w)} letters.",
        f"'{w}' has {wrong} letters.",
    )


def _next_letter(r: random.Random) -> tuple[str, str, str]:
    abc = r.choice([string.ascii_lowercase, string.ascii_uppercase])
    i = r.randrange(1, 25)
    if r.random() < 0.5:
        c, right, wrong, rel = abc[i], abc[i + 1], abc[i - 1], "after"
    else:
        c, right, wrong, rel = abc[i], abc[i - 1], abc[i + 1], "before"
    return (
        f"Which letter comes {rel} '{c}'?",
        f"'{right}' comes {rel} '{c}'.",
        f"'{wrong}' comes {rel} '{c}'.",
    )


def _sort(r: random.Random) -> tuple[str, str, str]:
    xs = r.sample(range(20), 3)
    right = sorted(xs)
    wrong = right[:]
    while wrong == right:
        r.shuffle(wrong)
    fmt = ", ".join
    return (
        f"Sort from smallest to largest: {fmt(map(str, xs))}.",
        fmt(map(str, right)),
        fmt(map(str, wrong)),
    )


def _repeat(r: random.Random) -> tuple[str, str, str]:
    w = r.choice(WORDS)
    n = r.randint(2, 4)
    wrong_n = n + r.choice([-1, 1])
    names = {2: "two", 3: "three", 4: "four"}
    return f"Repeat the word '{w}' {names[n]} times.", " ".join([w] * n), " ".join([w] * wrong_n)


TASKS: dict[str, Task] = {
    "add": _add,
    "sub": _sub,
    "compare": _compare,
    "parity": _parity,
    "reverse": _reverse,
    "upper": _upper,
    "count": _count,
    "next_letter": _next_letter,
    "sort": _sort,
    "repeat": _repeat,
}


def make_rows(n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    """Up to ``n`` rows in the UltraFeedback shape, round-robin over the tasks, with distinct prompts not in ``exclude``."""
    r = random.Random(seed)
    rows, seen = [], set(exclude)
    names = list(TASKS)
    while len(rows) < n and names:
        name = names[len(rows) % len(names)]
        for _ in range(200):  # a task whose prompts are used up leaves the rotation
            prompt, right, wrong = TASKS[name](r)
            if prompt not in seen and right != wrong:
                break
        else:
            names.remove(name)
            continue
        seen.add(prompt)
        user = {"role": "user", "content": prompt}
        rows.append(
            {
                "prompt": prompt,
                "chosen": [user, {"role": "assistant", "content": right}],
                "rejected": [user, {"role": "assistant", "content": wrong}],
                "task": name,
            }
        )
    return rows


def write(out_dir: Path, n_train: int = 2000, n_test: int = 200, seed: int = 0) -> None:
    """Write ``train.jsonl`` and ``test.jsonl``; test prompts never occur in train (small tasks run out first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    test = make_rows(n_test, seed + 1)
    train = make_rows(n_train, seed, exclude={row["prompt"] for row in test})
    for split, rows in (("train", train), ("test", test)):
        with open(out_dir / f"{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "tiny_prefs")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    write(a.out, a.n_train, a.n_test, a.seed)
