"""The miniature benchmark for lm-eval: the fixed held-out problems of ``miniature.tasks.benchmark()``, scored by each
family's verifier (exact match of the final answer)."""

from __future__ import annotations

from miniature import tasks


def load(data_files=None, **_):
    """The documents: the given JSONL copy (``data_files``, as eval/ passes local data), else generated."""
    import datasets

    if data_files:
        return datasets.load_dataset("json", data_files=data_files)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(tasks.benchmark_rows())})


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """exact_match over all items, and exact_match_<family> over that family's items."""
    right = float(tasks.verify(doc["family"], results[0], doc["answer"]))
    return {"exact_match": right, f"exact_match_{doc['family']}": right}
