"""The miniature's task families: a generator of problems with worked solutions, and a verifier, per family.

Every problem has a question (the user's message), a gold answer and a demonstration (the assistant's message: a
short worked solution ending in ``Answer: <gold>``). Families, each verifiable exactly:

- ``add``: multi-digit addition, solved column by column from the right, the partial result growing a digit at a
  time (``7+5=12 -> 2; 4+8+1=13 -> 32; carry 1 -> 132``), so no step needs more than a one-digit sum and a copy;
- ``compare``: the larger of two numbers;
- ``parity``: whether a number is even or odd, read off its last digit;
- ``string``: reverse, capitalise, first or last letter of a made-up word;
- ``word``: two-step word problems with small numbers (a GSM in miniature): add, take away, multiply.

``verify(family, text, gold)`` extracts the text after the first ``Answer:`` and compares it with the gold answer
(numbers as integers, words exactly). ``problems(family, n, seed, exclude)`` draws ``n`` distinct problems,
deterministically from the seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

ANSWER = "Answer:"
NAMES = (
    "Ann",
    "Ben",
    "Cal",
    "Dee",
    "Eve",
    "Fay",
    "Gus",
    "Hal",
    "Ivy",
    "Jo",
    "Kim",
    "Lou",
    "Max",
    "Ned",
    "Sam",
)
ITEMS = ("apples", "pens", "coins", "cards", "shells", "books", "stamps", "eggs", "cups", "toys")


@dataclass(frozen=True)
class Problem:
    family: str
    question: str  # the user's message
    answer: str  # the gold answer, as the verifier compares it
    solution: str  # a correct worked solution ending in "Answer: <answer>"


def _digits_add(a: int, b: int) -> str:
    """Column addition from the right: each step a one-digit sum (with carry) and the partial result so far."""
    da, db = str(a)[::-1], str(b)[::-1]
    carry, partial, steps = 0, "", []
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        s = x + y + carry
        terms = f"{x}+{y}" + (f"+{carry}" if carry else "")
        partial = str(s % 10) + partial
        carry = s // 10
        steps.append(f"{terms}={s} -> {partial}")
    if carry:
        partial = "1" + partial
        steps.append(f"carry 1 -> {partial}")
    return "; ".join(steps)


def gen_add(r: random.Random, max_digits: int = 2) -> Problem:
    da, db = r.randint(1, max_digits), r.randint(1, max_digits)
    a, b = r.randint(10 ** (da - 1), 10**da - 1), r.randint(10 ** (db - 1), 10**db - 1)
    q = r.choice(["What is {a} + {b}?", "Add {a} and {b}."]).format(a=a, b=b)
    return Problem("add", q, str(a + b), f"{_digits_add(a, b)}. {ANSWER} {a + b}")


def gen_compare(r: random.Random, max_digits: int = 2) -> Problem:
    d = r.randint(1, max_digits)
    lo, hi = 10 ** (d - 1) if d > 1 else 0, 10**d - 1
    a, b = r.sample(range(lo, hi + 1), 2)
    if r.random() < 0.25:  # a different length now and then
        b = r.randint(0, 10 ** max(d - 1, 1) - 1) if r.random() < 0.5 else b
        if a == b:
            b = a + 1
    big = max(a, b)
    if r.random() < 0.5:
        q, ans = f"Which is larger, {a} or {b}?", big
    else:
        q, ans = f"Which is smaller, {a} or {b}?", min(a, b)
    return Problem("compare", q, str(ans), f"{ANSWER} {ans}")


def gen_parity(r: random.Random, max_digits: int = 3) -> Problem:
    n = r.randint(0, 10 ** r.randint(1, max_digits) - 1)
    word = "even" if n % 2 == 0 else "odd"
    q = r.choice(["Even or odd: {n}?", "Odd or even: {n}?"]).format(n=n)
    return Problem("parity", q, word, f"Last digit {n % 10}, so {word}. {ANSWER} {word}")


def _pseudo_word(r: random.Random) -> str:
    """A pronounceable 3-5 letter string (consonant-vowel pattern): an endless supply of new words."""
    cons, vows = "bcdfghjklmnprstvwz", "aeiou"
    n = r.randint(3, 5)
    return "".join(r.choice(cons if i % 2 == 0 else vows) for i in range(n))


def gen_string(r: random.Random) -> Problem:
    w = _pseudo_word(r)
    op = r.choice(["reverse", "upper", "first", "last"])
    if op == "reverse":
        q, ans = f"Reverse '{w}'.", w[::-1]
    elif op == "upper":
        q, ans = f"Capitalise '{w}'.", w.upper()
    elif op == "first":
        q, ans = f"First letter of '{w}'?", w[0]
    else:
        q, ans = f"Last letter of '{w}'?", w[-1]
    return Problem("string", q, ans, f"{ANSWER} {ans}")


def gen_word(r: random.Random, max_number: int = 9) -> Problem:
    name, other = r.sample(NAMES, 2)
    item = r.choice(ITEMS)
    kind = r.choice(["add_sub", "sub_add", "mul_add", "add_add"])
    n = lambda: r.randint(2, max_number)  # noqa: E731
    if kind == "mul_add":
        a, b, c = n(), n(), n()
        q = f"{name} has {a} bags of {b} {item}. {other} gives {name} {c} more. How many {item} now?"
        steps, ans = f"{a}*{b}={a * b}. {a * b}+{c}={a * b + c}.", a * b + c
    elif kind == "add_sub":
        a, b = n(), n()
        c = r.randint(1, a + b - 1)
        q = f"{name} has {a} {item}, buys {b} more and gives {c} to {other}. How many {item} now?"
        steps, ans = f"{a}+{b}={a + b}. {a + b}-{c}={a + b - c}.", a + b - c
    elif kind == "sub_add":
        a = r.randint(3, 2 * max_number)
        b = r.randint(1, a - 1)
        c = n()
        q = f"{name} had {a} {item}, lost {b} and found {c}. How many {item} now?"
        steps, ans = f"{a}-{b}={a - b}. {a - b}+{c}={a - b + c}.", a - b + c
    else:
        a, b, c = n(), n(), n()
        q = f"{name} has {a} {item}, {other} has {b} and I have {c}. How many {item} in all?"
        steps, ans = f"{a}+{b}={a + b}. {a + b}+{c}={a + b + c}.", a + b + c
    return Problem("word", q, str(ans), f"{steps} {ANSWER} {ans}")


FAMILIES: dict[str, Callable[[random.Random], Problem]] = {
    "add": gen_add,
    "compare": gen_compare,
    "parity": gen_parity,
    "string": gen_string,
    "word": gen_word,
}
NUMERIC = {"add", "compare", "word"}


def extract_answer(text: str) -> str | None:
    """The text after the first ``Answer:`` up to the end of its line, stripped of spaces and a final period (the
    first: a model that answers and runs on is scored on its own answer, as eval/tasks/final_answer.py does)."""
    i = text.find(ANSWER)
    if i < 0:
        return None
    return text[i + len(ANSWER) :].split("\n")[0].strip().rstrip(".").strip()


def verify(family: str, text: str, gold: str) -> bool:
    """Whether a generated answer is right: numbers compared as integers, words exactly."""
    got = extract_answer(text)
    if got is None:
        return False
    if family in NUMERIC:
        return bool(re.fullmatch(r"-?\d+", got)) and int(got) == int(gold)
    return got == gold


def problems(
    family: str, n: int, seed: int, exclude: Iterable[str] = (), distinct: bool = True
) -> list[Problem]:
    """``n`` problems of ``family`` whose questions are not in ``exclude`` (and, if ``distinct``, not repeated),
    deterministically from ``seed``; fewer if the family runs out of new questions."""
    r = random.Random(f"{family}:{seed}")
    seen, out, misses = set(exclude), [], 0
    while len(out) < n and misses < 1000:
        p = FAMILIES[family](r)
        if p.question in seen:
            misses += 1
            continue
        if distinct:
            seen.add(p.question)
        out.append(p)
    return out


def mixed(
    families: dict[str, float], n: int, seed: int, exclude: Iterable[str] = (), distinct: bool = True
) -> list[Problem]:
    """``n`` problems over ``families`` ({family: weight}), interleaved in a seeded order. Training corpora use
    ``distinct=False``: small families (parity has 2,000 questions) would otherwise run out."""
    total = sum(families.values())
    counts = {f: round(n * w / total) for f, w in families.items()}
    exclude = set(exclude)
    out = [p for f, k in counts.items() for p in problems(f, k, seed, exclude, distinct)]
    random.Random(seed).shuffle(out)
    return out


def facts(r: random.Random) -> str:
    """A line of one-digit facts (sums, products, comparisons): pre-training text, not a task."""
    out = []
    for _ in range(6):
        a, b = r.randint(0, 9), r.randint(0, 9)
        kind = r.random()
        if kind < 0.5:
            out.append(f"{a}+{b}={a + b}")
        elif kind < 0.8:
            out.append(f"{a}*{b}={a * b}")
        else:
            out.append(f"{a}{'<' if a < b else '>' if a > b else '='}{b}")
    return ", ".join(out) + "."


# The held-out benchmark: fixed, whatever the model's build spec, so every model is scored on the same items; the
# builds exclude its questions from everything they train on. eval/tasks/miniature/ serves it to lm-eval.
BENCHMARK_SEED = 1000
BENCHMARK_PER_FAMILY = 100


def benchmark() -> list[Problem]:
    """The benchmark's items: ``BENCHMARK_PER_FAMILY`` problems of every family, family by family."""
    return [p for f in FAMILIES for p in problems(f, BENCHMARK_PER_FAMILY, BENCHMARK_SEED)]


def benchmark_rows() -> list[dict]:
    """The benchmark as JSONL rows (id, family, question, answer, solution), the lm-eval task's documents."""
    return [{"id": f"{p.family}-{i % BENCHMARK_PER_FAMILY}", **p.__dict__} for i, p in enumerate(benchmark())]
