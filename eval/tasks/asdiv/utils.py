"""ASDiv helpers: lm-eval's asdiv_cot_llama exemplars and gold, our answer scoring (eval/tasks/final_answer.py).

The gold is lm-eval's ``doc_to_target``: the answer before its unit ("27 (pages)" -> "27"). 146 of the 2,305 golds
are not one number (56 ratios "5:6", 15 lists "4; 6", 9 fractions, times "3:30 p.m.", names, "Yes", "They are
equal"): ``final_answer.matches`` scores them (a number by value, a list by its numbers, text after normalisation).
"""

from __future__ import annotations

from eval.tasks import final_answer
from eval.tasks.lmeval_source import cot_llama_fewshot_samples

MARKERS = ("The final answer is",)
final_answer_filter = final_answer.answer_filter(MARKERS)


def gold(doc: dict) -> str:
    return doc["answer"].split(" (")[0]


def list_fewshot_samples() -> list[dict]:
    return cot_llama_fewshot_samples()


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """``results[0]``: the filtered answer (final-answer or flexible-extract filter)."""
    return {"exact_match": int(final_answer.matches(results[0], gold(doc)))}
