"""The final answer of a chain-of-thought word problem (SVAMP, ASDiv, GSM-Plus): where it is, and whether it is right.

Extraction (the tasks' ``final-answer`` filter, their primary score): the rest of the line after the FIRST answer
marker ("The final answer is", "####", ...), so a model that answers and then runs on into an invented next problem
is scored on its own answer, not the invented one; without a marker, lm-eval's flexible rule (the last number).
lm-eval's ``asdiv_cot_llama`` and ``gsm_plus`` take the last match instead, which scores the run-on.

Matching (``matches``), against the dataset's gold answer as lm-eval's task writes it:
- a number ("8", "1,200", "2.50", "5/2", "-(4/5)"): the first number in the extracted answer, equal in value;
- several numbers ("4; 6", ASDiv's multi-answer items): the same numbers in the same order;
- anything else ("Yes", "5:6", "3:30 p.m.", "They are equal", "Mrs. Hilt", GSM-Plus's "None"): equal after
  normalisation (case, spaces, "$", trailing punctuation, the dots of "p.m."), or the answer starts with the gold
  followed by a word boundary ("No, she cannot" for "No").
"""

from __future__ import annotations

import re
from fractions import Fraction

INVALID = "[invalid]"
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # lm-eval's flexible-extract pattern
_NUMBER = re.compile(r"-?\(?-?\$?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?\)?|-?\.\d+")
_GOLD_NUMBER = re.compile(r"-?\(?-?\d[\d,]*(?:\.\d+)?(?:/\d+(?:\.\d+)?)?\)?|-?\.\d+")


def marked_answer(text: str, markers: tuple[str, ...]) -> str | None:
    """The rest of the line after the first occurrence of any marker (case-insensitive), or None."""
    found = [m for m in (re.search(re.escape(marker), text, flags=re.IGNORECASE) for marker in markers) if m]
    if not found:
        return None
    first = min(found, key=lambda m: m.start())
    line = text[first.end() :].lstrip(" :\t").split("\n", 1)[0]
    return line.strip().rstrip(".").strip()


def last_number(text: str) -> str | None:
    """lm-eval's flexible-extract: the last number-like run in the text."""
    matches = FLEXIBLE.findall(text)
    if not matches:
        return None
    return next(m for m in matches[-1] if m).strip()


def extract(text: str, markers: tuple[str, ...]) -> str:
    answer = marked_answer(text, markers)
    if answer:
        return answer
    return last_number(text) or INVALID


def _value(token: str) -> Fraction | None:
    token = token.replace(",", "").replace("$", "").replace(" ", "").strip()
    negative = token.startswith("-(") or token.startswith("(-")
    token = token.strip("()-") if negative else token.strip("()")
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            value = Fraction(num) / Fraction(den)
        else:
            value = Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None
    return -value if negative else value


def numbers(text: str) -> list[Fraction]:
    """The numbers in ``text``, in order ("$1,200", "2.5", "5/2", "-(4/5)" each one number)."""
    return [v for v in (_value(t) for t in _NUMBER.findall(text)) if v is not None]


def normalise(text: str) -> str:
    text = text.lower().replace("$", "")
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", "", text)  # dots that are not decimal points: "p.m." -> "pm"
    text = re.sub(r"\s*([:;/])\s*", r"\1", text)
    text = re.sub(r"\s+", " ", text)
    return text.strip(" ,;:!?")


def gold_numbers(gold: str) -> list[Fraction] | None:
    """The gold as numbers if it is one number or a ';'-separated list of numbers, else None (a text gold)."""
    parts = [p.strip() for p in gold.split(";")]
    if not all(_GOLD_NUMBER.fullmatch(p.replace(" ", "")) for p in parts):
        return None
    values = [_value(p) for p in parts]
    return None if any(v is None for v in values) else values


def matches(prediction: str, gold: str) -> bool:
    """Whether the extracted ``prediction`` is the ``gold`` answer (rules in the module docstring)."""
    if prediction == INVALID:
        return False
    expected = gold_numbers(gold.strip())
    if expected is not None:
        found = numbers(prediction)
        if len(expected) == 1:
            return bool(found) and found[0] == expected[0]
        return found[: len(expected)] == expected
    pred, want = normalise(prediction), normalise(gold)
    if not want:
        return False
    return pred == want or (pred.startswith(want) and not pred[len(want)].isalnum())


def answer_filter(markers: tuple[str, ...]):
    """A custom lm-eval filter function extracting the final answer with ``markers``."""

    def apply(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
        return [[extract(r, markers) for r in resp] for resp in resps]

    return apply
