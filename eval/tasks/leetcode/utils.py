"""LeetCode helpers: build the programs the two datasets' evaluators run, score them with eval/tasks/execution.py."""

from eval.tasks.execution import pass_at_k

__all__ = ["build_predictions", "build_predictions_eurus", "extract_code", "pass_at_k"]

# The import lines Eurus' evaluation.py puts before every LeetCode program (IMPORT_HELPER["python"]).
EURUS_IMPORTS = "\n".join(
    [
        "import math",
        "import re",
        "import sys",
        "import copy",
        "import datetime",
        "import itertools",
        "import collections",
        "import heapq",
        "import functools",
        "import hashlib",
        "import numpy",
        "import numpy as np",
        "import string",
        "from typing import *",
        "from collections import *",
        "from functools import *",
    ]
)


def extract_code(response: str) -> str:
    """The model's code: everything before a closing fence (generation already stops at one)."""
    return response.split("```", 1)[0]


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """LeetCodeDataset: the row's `prompt` (imports, ListNode/TreeNode helpers) + the model's class."""
    return [
        [doc["prompt"] + "\n" + extract_code(r) for r in resp] for resp, doc in zip(resps, docs, strict=True)
    ]


def build_predictions_eurus(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """Eurus set: its import lines + the model's code (the row's `test` follows as the reference)."""
    return [
        [EURUS_IMPORTS + "\n" + extract_code(r) + "\n" for r in resp]
        for resp, _ in zip(resps, docs, strict=True)
    ]
