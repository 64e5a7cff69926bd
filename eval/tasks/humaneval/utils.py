"""HumanEval helpers: the built-in tasks' program builders and our offline pass@k (eval/tasks/execution.py)."""

from eval.tasks.execution import pass_at_k

__all__ = ["build_predictions", "build_predictions_instruct", "pass_at_k"]


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """Candidate program = the problem's prompt (signature and docstring) + the model's completion (as lm-eval)."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs, strict=True)]


def build_predictions_instruct(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """Instruct variant (as lm-eval's): the prompt + the response up to its closing ``` fence."""
    return [
        [doc["prompt"] + r.split("```", 1)[0] for r in resp] for resp, doc in zip(resps, docs, strict=True)
    ]
