"""LeetCode helpers: build the program the dataset's evaluator runs, score it with eval/tasks/execution.py."""

from eval.tasks.execution import pass_at_k

__all__ = ["build_predictions", "pass_at_k", "extract_code"]


def extract_code(response: str) -> str:
    """The model's code: everything before a closing fence (generation already stops at one)."""
    return response.split("```", 1)[0]


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """Candidate program = the row's `prompt` (imports, ListNode/TreeNode helpers) + the model's class."""
    return [
        [doc["prompt"] + "\n" + extract_code(r) for r in resp] for resp, doc in zip(resps, docs, strict=True)
    ]
