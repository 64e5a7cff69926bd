"""MATH helpers: lm-eval's Minerva prompt, few-shot samples and answer normalisation (eval/tasks/lmeval_source.py)."""

from __future__ import annotations

from eval.tasks.lmeval_source import minerva_helpers


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


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    answer = extract_answer(results[0])
    return {"exact_match": int(bool(answer) and answer == doc["answer"])}
