"""GSM-Plus helpers: our answer scoring (eval/tasks/final_answer.py) against the row's bare ``answer`` field.

The 1,319 "critical thinking" rows (1 in 8) have the gold "None": a quantity the question needs was deleted, so
the right answer is that it cannot be solved. lm-eval's ``gsm_plus`` filters extract numbers only, so those rows
score 0 for every model there; here a final answer "None" (after "####" or "The answer is") matches them.
"""

from __future__ import annotations

from eval.tasks import final_answer

MARKERS = ("####", "The answer is")
final_answer_filter = final_answer.answer_filter(MARKERS)


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """``results[0]``: the filtered answer (final-answer, strict-match or flexible-extract filter)."""
    return {"exact_match": int(final_answer.matches(results[0], str(doc["answer"])))}
