"""SVAMP helpers: SVAMP rows on the fields of lm-eval's asdiv_cot_llama task, its exemplars, our answer scoring."""

from __future__ import annotations

from eval.tasks import final_answer
from eval.tasks.lmeval_source import cot_llama_fewshot_samples

MARKERS = ("The final answer is",)
final_answer_filter = final_answer.answer_filter(MARKERS)


def format_number(value) -> str:
    """8.0 -> "8", 2.5 -> "2.5", "12" -> "12" (SVAMP stores answers as floats)."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def process_doc(doc: dict) -> dict:
    return {
        **doc,
        "body": doc["Body"].strip(),
        "question": doc["Question"].strip(),
        "answer": format_number(doc["Answer"]),
    }


def process_docs(dataset):
    return dataset.map(process_doc)


def list_fewshot_samples() -> list[dict]:
    return cot_llama_fewshot_samples()


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """``results[0]``: the filtered answer (final-answer or flexible-extract filter)."""
    return {"exact_match": int(final_answer.matches(results[0], doc["answer"]))}
