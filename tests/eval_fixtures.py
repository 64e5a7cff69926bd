"""Helpers for the eval/ tests: a scripted lm-eval model that answers every mini item in a chosen way.

The answers are written the way a model would write them, so the real extraction of each task has to find them:
chain-of-thought text ending in the task's answer phrase, or code that the task's tests run. Modes:

- ``right`` / ``wrong``: the right (wrong) answer and nothing after it;
- ``run_on``: the right answer, then what a model that does not stop writes next: an invented follow-up problem in
  the task's own prompt format with its own (wrong) answer, or for code, more code and prose; must still score 1;
- ``exits``: for the code tasks, a program that calls ``exit()`` / ``sys.exit(0)`` before the tests run; must
  score 0 (the old runner counted exit code 0 as a pass).

Like lm-eval's HF model it cuts each generation at the request's stop strings (``until``), hands each answer to
lm-eval's request cache as soon as it has it, and renders chat prompts with a ChatML template, so it runs under both
prompt protocols. ``fail_after=n`` makes it raise when asked for answer n + 1 (a run killed mid-benchmark).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lm_eval.api.model import LM

WRONG_CODE = "    return None\n"
WRONG = "987654321"
INSTRUCTION = 'Your response should end with "The final answer is [answer]" where [answer] is the response to the problem.\n'

# The mini copy of the Eurus LeetCode set has no solutions in its schema (the real file has none either).
EURUS_SOLUTIONS = {
    "weekly-contest-9001-sum-of-first-squares": (
        "\nclass Solution:\n    def sumOfSquares(self, n: int) -> int:\n        return sum(i * i for i in range(1, n + 1))\n"
    ),
    "biweekly-contest-9002-widest-sorted-gap": (
        "\nclass Solution:\n    def widestGap(self, nums: List[int]) -> int:\n        s = sorted(nums)\n"
        "        return max(b - a for a, b in zip(s, s[1:]))\n"
    ),
}

# What a model that keeps generating writes after its answer, per task family (the invented problem's answer wrong).
RUN_ON = {
    "bbh": '\n\nQ: Is the following sentence plausible? "The striker scored a goal."\n'
    "A: Let's think step by step. Strikers score goals. So the answer is " + WRONG + ".",
    "code": "\n\n\ndef check_solution():\n    assert False\n\n\nprint(check_solution())\n```\nThis runs in O(n).",
    "fenced_code": "```\n\nThis solution runs in O(n) time.\n\n```python\nimport sys\nsys.exit(0)\n```",
    "gsm_plus": "\n\nQuestion: Tom has 3 apples and buys 4 more. How many apples does he have?\n"
    "Answer: 3 + 4 = 7.\n#### " + WRONG,
    "math": "\n\nProblem:\nWhat is $2+2$?\n\nSolution:\n$2+2=4$.\n"
    "Final Answer: The final answer is $" + WRONG + "$. I hope it is correct.",
    "theoremqa": "\n\nProblem:\nHow many edges does a cycle on 4 vertices have?\nSolution:\nA cycle on n vertices has n "
    "edges.\nThe answer is " + WRONG,
    "miniature": "\n<|user|>\nWhat is 2 + 2?\n<|assistant|>\n2+2=4 -> 4. Answer: " + WRONG,
    "cot_llama": "\n\nGiven the following problem, reason and give a final answer to the problem.\n"
    "Problem: Tom has 3 apples. He buys 4 more. How many apples does he have?\n"
    + INSTRUCTION
    + "Tom has 3 + 4 = 7 "
    "apples. The final answer is " + WRONG,
}

EXITS = {
    "mio_humaneval": "    return None\n\nexit()\n",
    "mio_humaneval_instruct": "    return None\n\nexit()\n```",
    "mio_leetcode": "import sys\nsys.exit(0)\n```",
    "mio_leetcode_eurus": "\nexit()\n```",
}


def family(task: str) -> str:
    if task.startswith("bbh_"):
        return "bbh"
    if task.startswith("mio_math_"):
        return "math"
    if task in ("mio_humaneval", "mio_humaneval_instruct"):
        return "code"
    if task in ("mio_leetcode", "mio_leetcode_eurus"):
        return "fenced_code"
    if task in ("mio_svamp", "mio_asdiv"):
        return "cot_llama"
    if task in ("mio_gsm_plus", "mio_theoremqa", "mio_miniature"):
        return task.removeprefix("mio_")
    raise KeyError(f"no scripted answer for task {task}")


def right(task: str, doc: dict) -> str:
    kind = family(task)
    if kind == "bbh":
        return f"Let's work through it step by step. So the answer is {doc['target']}."
    if kind == "code":
        return doc["canonical_solution"]
    if task == "mio_leetcode":
        return doc["completion"] + "```"
    if task == "mio_leetcode_eurus":
        return EURUS_SOLUTIONS[doc["task_id"]] + "```"
    if kind == "gsm_plus":
        return f"Working it out gives {doc['answer']}.\n#### {doc['answer']}"
    if kind == "math":
        return f"We compute it.\nFinal Answer: The final answer is ${doc['answer']}$. I hope it is correct."
    if kind == "theoremqa":
        return f"Applying the theorem step by step.\nThe answer is {doc['Answer']}"
    if kind == "miniature":
        return doc["solution"]
    return f"Reasoning about the quantities. The final answer is {doc['answer'].split(' (')[0]}"


def wrong(task: str, doc: dict) -> str:
    kind = family(task)
    if kind == "bbh":
        return "So the answer is certainly something else."
    if kind == "code":
        return WRONG_CODE
    if kind == "fenced_code":
        return "class Solution:\n    pass\n```"
    if kind == "theoremqa":
        return f"The answer is {WRONG}"
    if kind == "math":
        return f"Final Answer: The final answer is ${WRONG}$. I hope it is correct."
    if kind == "miniature":
        return f"Answer: {WRONG}"
    return f"The final answer is {WRONG}\n#### {WRONG}"


def answer(mode: str, task: str, doc: dict) -> str:
    if mode == "right":
        return right(task, doc)
    if mode == "wrong":
        return wrong(task, doc)
    if mode == "run_on":
        return right(task, doc) + RUN_ON[family(task)]
    if mode == "exits":
        return EXITS.get(task) or wrong(task, doc)
    raise ValueError(mode)


class ScriptedLM(LM):
    """Answers each generation request from the request's own document; counts the calls it gets."""

    EOS = "<|im_end|>"
    TEMPLATE = "scripted ChatML: <|im_start|>{role}\\n{content}<|im_end|>\\n"

    def __init__(
        self, right: bool = True, mode: str | None = None, fail_after: int | None = None, **_lm_args
    ):
        super().__init__()
        self.mode = mode or ("right" if right else "wrong")
        self.fail_after = fail_after  # raise (a killed run) when asked for more than this many answers
        self.calls = 0
        self.contexts: list[str] = []

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise RuntimeError(f"scripted failure after {self.calls} answers")
            self.calls += 1
            context, gen_kwargs = req.args
            self.contexts.append(context)
            text = answer(self.mode, req.task_name, req.doc)
            for stop in [*(gen_kwargs.get("until") or []), self.EOS]:  # as lm-eval's HFLM post-processing
                text = text.split(stop)[0]
            self.cache_hook.add_partial("generate_until", req.args, text)  # as HFLM: each answer as it comes
            out.append(text)
        return out

    # --- chat protocol ----------------------------------------------------------------------------------------
    @property
    def tokenizer_name(self) -> str:
        return "scripted-chatml"

    def chat_template(self, chat_template: bool | str = False) -> str:
        return self.TEMPLATE

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        turns = [f"<|im_start|>{m['role']}\n{m['content']}{self.EOS}\n" for m in chat_history]
        if add_generation_prompt:
            return "".join(turns) + "<|im_start|>assistant\n"
        return "".join(turns)[: -len(self.EOS) - 1]  # continue the final (assistant) message

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the eight benchmarks are generative")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


# --- what a run asked and scored, for comparing two ways of loading the same tasks -------------------------------
GOLDEN_PROMPTS = Path(__file__).parent / "golden" / "eval_prompts.json"


def prompts_and_scores(preset_dir: Path, names: list[str]) -> dict:
    """{benchmark: {"results": lm-eval's results, "samples": one row per request}} of a finished run, from its files.

    A sample row is [task, doc_id, filter, sha256 of the request's arguments (the rendered prompt and the
    generation settings: stop strings, token cap), lm-eval's target hash, the item's metric values]: enough to show
    that the same prompts went out and the same scores came back, small enough to keep in the repository."""
    out = {}
    for name in names:
        record = json.loads((preset_dir / f"{name}.json").read_text())
        rows = []
        for line in (preset_dir / "samples" / f"{name}.jsonl").read_text().splitlines():
            s = json.loads(line)
            arguments = hashlib.sha256(json.dumps(s["arguments"], sort_keys=True).encode()).hexdigest()
            metrics = {m: s[m] for m in s["metrics"]}
            rows.append([s["task"], s["doc_id"], s["filter"], arguments, s["target_hash"], metrics])
        out[name] = {"results": record["metrics"], "samples": sorted(rows, key=lambda r: r[:3])}
    return out
