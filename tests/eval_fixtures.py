"""Helpers for the eval/ tests: a scripted lm-eval model that answers every mini item right (or wrong).

The answers are written the way a model would write them, so the real extraction of each task has to find them:
chain-of-thought text ending in the task's answer phrase, or code that the task's tests run.
"""

from __future__ import annotations

from lm_eval.api.model import LM

WRONG_CODE = "    return None\n"


def _right(task: str, doc: dict) -> str:
    if task.startswith("bbh_"):
        return f"Let's work through it step by step. So the answer is {doc['target']}."
    if task == "mio_humaneval":
        return doc["canonical_solution"]
    if task == "mio_leetcode":
        return doc["completion"] + "```"
    if task == "gsm_plus":
        return f"Working it out gives {doc['answer']}.\n#### {doc['answer']}"
    if task.startswith("mio_math_"):
        return f"We compute it.\nFinal Answer: The final answer is ${doc['answer']}$. I hope it is correct."
    if task == "mio_theoremqa":
        return f"Applying the theorem step by step.\nThe answer is {doc['Answer']}"
    if task in ("mio_svamp", "asdiv_cot_llama"):
        answer = doc["answer"].split(" (")[0]
        return f"Reasoning about the quantities. The final answer is {answer}"
    raise KeyError(f"no scripted answer for task {task}")


def _wrong(task: str, doc: dict) -> str:
    if task.startswith("bbh_"):
        return "So the answer is certainly something else."
    if task == "mio_humaneval":
        return WRONG_CODE
    if task == "mio_leetcode":
        return "class Solution:\n    pass\n```"
    if task == "mio_theoremqa":
        return "The answer is 987654321"
    if task.startswith("mio_math_"):
        return "Final Answer: The final answer is $987654321$. I hope it is correct."
    return "The final answer is 987654321\n#### 987654321"


class ScriptedLM(LM):
    """Answers each generation request from the request's own document; counts the calls it gets."""

    def __init__(self, right: bool = True):
        super().__init__()
        self.right = right
        self.calls = 0

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        self.calls += len(requests)
        answer = _right if self.right else _wrong
        return [answer(req.task_name, req.doc) for req in requests]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the eight benchmarks are generative")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError
