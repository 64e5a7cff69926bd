"""MATH helpers: lm-eval's Minerva prompt, few-shot samples and answer normalisation (eval/tasks/lmeval_source.py),
with math-verify for the two equivalence checks lm-eval makes through sympy + antlr4 4.11.

- ``exact_match`` (the score): lm-eval's ``minerva_math`` rule, the normalised final answer after "Final Answer: The
  final answer is" equals the normalised gold, or is mathematically equivalent to it; lm-eval tests equivalence
  with sympy's ``parse_latex`` (antlr4 4.11, which cannot share an environment with Hydra's antlr4 4.9), here with
  math-verify on the two answers ("\\frac{1}{2}" = "0.5", "\\dfrac" = "\\frac", "\\sqrt8" = "2\\sqrt2", "6.0" = "6").
- ``math_verify``: lm-eval's second metric, verbatim: math-verify on the whole gold solution and the whole response.
"""

from __future__ import annotations

from eval.tasks.lmeval_source import minerva_helpers

INVALID = "[invalidanswer]"


def doc_to_text(doc: dict) -> str:
    return minerva_helpers()["doc_to_text"](doc)


def process_docs(dataset):
    return minerva_helpers()["process_docs"](dataset)


def list_fewshot_samples() -> list[dict]:
    return minerva_helpers()["list_fewshot_samples"]()


def extract_answer(completion: str) -> str:
    """The normalised answer after "Final Answer: The final answer is", or "[invalidanswer]"."""
    h = minerva_helpers()
    return h["normalize_final_answer"](h["get_unnormalized_answer"](completion))


def _verify(gold: str, target: str) -> bool:
    from math_verify import parse, verify

    try:
        return bool(verify(gold=parse(gold), target=parse(target)))
    except Exception:  # noqa: BLE001 - a parser failure on odd LaTeX is a non-match, as in lm-eval's is_equiv
        return False


def is_equiv(answer: str, gold: str) -> bool:
    """Normalised strings equal, or the two answers equal as mathematics (math-verify on boxed LaTeX)."""
    if not answer or answer == INVALID:
        return False
    return answer == gold or _verify(f"\\boxed{{{gold}}}", f"\\boxed{{{answer}}}")


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    completion = results[0]
    return {
        "exact_match": int(is_equiv(extract_answer(completion), doc["answer"])),
        "math_verify": int(_verify(doc["solution"], completion)),
    }
