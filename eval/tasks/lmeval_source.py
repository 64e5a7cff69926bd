"""Reuse pieces of installed lm-eval task definitions that cannot be imported as they are.

Two cases in lm-eval 0.4.13:

- ``tasks/minerva_math/utils.py`` refuses to import unless antlr4-python3-runtime 4.11 is installed, and Hydra 1.3
  pins antlr4 4.9, so the two cannot share an environment. ``minerva_helpers()`` compiles just the functions and
  constants we need (prompt, few-shot samples, answer extraction and normalisation) from that file's source, so our
  MATH task runs lm-eval's own code rather than a copy of it.
- ``tasks/asdiv/asdiv-cot-llama.yaml`` holds the eight chain-of-thought exemplars (Wei et al. 2022) that our SVAMP
  task shares with the built-in ASDiv task; ``cot_llama_fewshot_samples()`` reads them from there.
"""

from __future__ import annotations

import ast
import functools
import logging
import re
from pathlib import Path

import yaml

MINERVA_NAMES = (
    "doc_to_text",
    "process_docs",
    "list_fewshot_samples",
    "last_boxed_only_string",
    "remove_boxed",
    "get_unnormalized_answer",
    "normalize_final_answer",
    "SUBSTITUTIONS",
    "REMOVED_EXPRESSIONS",
)


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@functools.cache
def minerva_helpers() -> dict:
    """The named top-level definitions of lm-eval's ``minerva_math/utils.py``, compiled without its imports."""
    path = lm_eval_tasks_dir() / "minerva_math" / "utils.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    keep = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in MINERVA_NAMES:
            keep.append(node)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in MINERVA_NAMES for t in node.targets
        ):
            keep.append(node)
    found = {n.name if isinstance(n, ast.FunctionDef) else n.targets[0].id for n in keep}
    missing = set(MINERVA_NAMES) - found
    if missing:
        raise ImportError(
            f"{path} no longer defines {sorted(missing)}; update eval/tasks/math for this lm-eval"
        )
    namespace: dict = {"re": re, "eval_logger": logging.getLogger("lm_eval.tasks.minerva_math")}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)
    return {name: namespace[name] for name in MINERVA_NAMES}


@functools.cache
def cot_llama_config() -> dict:
    """lm-eval's ``asdiv_cot_llama`` task config (plain YAML, no custom tags)."""
    return yaml.safe_load((lm_eval_tasks_dir() / "asdiv" / "asdiv-cot-llama.yaml").read_text())


def cot_llama_fewshot_samples() -> list[dict]:
    return [dict(s) for s in cot_llama_config()["fewshot_config"]["samples"]]
