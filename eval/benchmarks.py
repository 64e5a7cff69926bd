"""The benchmark table: which lm-eval task each benchmark runs and which number is its score, defined once.

``BENCHMARKS[name]`` gives the lm-eval task or group, the metric and filter whose value is the benchmark's primary
score (``results[task]["<metric>,<filter>"]`` in lm-eval's output), where the task comes from (lm-eval built-in or
our YAML under ``eval/tasks/``) and the hub dataset it reads. ``average()`` is the one definition of a preset's
average. Presets (``conf/benchmarks/*.yaml``) list benchmark names from this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str
    task: str  # lm-eval task or group name
    metric: str  # lm-eval metric name
    filter: str  # lm-eval filter name ("none" for tasks without filters)
    source: str  # "lm-eval" (built-in task) or "ours" (eval/tasks/)
    dataset: str  # hub dataset the real task reads
    builtin_dir: str | None = None  # folder under lm_eval/tasks/ to index, for built-ins
    code: bool = False  # executes model-written code (needs unsafe_code=true)
    note: str = ""

    @property
    def key(self) -> str:
        """The key of the primary score in lm-eval's ``results[task]``."""
        return f"{self.metric},{self.filter}"


_TABLE = [
    # --- the paper's eight (PAPER.md "Benchmarks") --------------------------------------------------------------
    Benchmark(
        "bbh",
        "bbh_cot_fewshot",
        "exact_match",
        "get-answer",
        "lm-eval",
        "SaylorTwift/bbh",
        "bbh/cot_fewshot",
        note="27 subtasks, chain of thought, 3-shot; score = accuracy over all questions (weighted by size)",
    ),
    Benchmark(
        "humaneval",
        "mio_humaneval",
        "pass@1",
        "create_test",
        "ours",
        "openai/openai_humaneval",
        code=True,
        note="lm-eval's humaneval prompt, filter and data; scored by eval/tasks/execution.py (offline)",
    ),
    Benchmark(
        "leetcode",
        "mio_leetcode",
        "pass@1",
        "create_test",
        "ours",
        "newfacade/LeetCodeDataset",
        code=True,
        note="LeetCodeDataset test split, not the Eurus suite's 180 contest problems",
    ),
    Benchmark(
        "gsm_plus",
        "gsm_plus",
        "exact_match",
        "flexible-extract",
        "lm-eval",
        "qintongli/GSM-Plus",
        "gsm_plus",
        note="5-shot; the 'critical thinking' rows (gold answer None) cannot be matched by either filter",
    ),
    Benchmark(
        "math",
        "mio_math",
        "exact_match",
        "none",
        "ours",
        "EleutherAI/hendrycks_math",
        note="lm-eval's minerva_math (4-shot) minus the sympy equivalence step (needs antlr4 4.11)",
    ),
    Benchmark(
        "theoremqa",
        "mio_theoremqa",
        "exact_match",
        "none",
        "ours",
        "TIGER-Lab/TheoremQA",
        note="official TheoremQA runner's prompt format and answer matching, 5-shot",
    ),
    Benchmark(
        "svamp",
        "mio_svamp",
        "exact_match",
        "flexible-extract",
        "ours",
        "ChilleD/SVAMP",
        note="lm-eval's asdiv_cot_llama definition on SVAMP's 300-problem test split, 8-shot",
    ),
    Benchmark(
        "asdiv",
        "asdiv_cot_llama",
        "exact_match",
        "flexible-extract",
        "lm-eval",
        "EleutherAI/asdiv",
        "asdiv",
        note="8-shot chain of thought, greedy; lm-eval's plain `asdiv` task is a log-likelihood task",
    ),
    # --- the common lm-eval math/reasoning set (preset open_llm_math also uses bbh and math above) ----------------
    Benchmark("gsm8k", "gsm8k", "exact_match", "strict-match", "lm-eval", "openai/gsm8k", "gsm8k"),
    Benchmark("arc_challenge", "arc_challenge", "acc_norm", "none", "lm-eval", "allenai/ai2_arc", "arc"),
    Benchmark("hellaswag", "hellaswag", "acc_norm", "none", "lm-eval", "Rowan/hellaswag", "hellaswag"),
    Benchmark("mmlu", "mmlu", "acc", "none", "lm-eval", "cais/mmlu", "mmlu/default"),
    Benchmark(
        "truthfulqa_mc2", "truthfulqa_mc2", "acc", "none", "lm-eval", "truthfulqa/truthful_qa", "truthfulqa"
    ),
    Benchmark("winogrande", "winogrande", "acc", "none", "lm-eval", "allenai/winogrande", "winogrande"),
]
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in _TABLE}


def get(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def primary_score(benchmark: Benchmark, results: dict, task: str | None = None) -> float:
    """The benchmark's score from lm-eval's ``results`` dict (``output["results"]``)."""
    task = task or benchmark.task
    if task not in results or benchmark.key not in results[task]:
        have = sorted(results.get(task, {}))
        raise KeyError(
            f"{benchmark.name}: lm-eval reported no {benchmark.key!r} for {task!r} (it has {have})"
        )
    return float(results[task][benchmark.key])


def average(scores: dict[str, float | None]) -> float | None:
    """A preset's average: the unweighted mean of its benchmarks' primary scores; None until all are known."""
    if not scores or any(v is None for v in scores.values()):
        return None
    return sum(scores.values()) / len(scores)


AVERAGE_DEFINITION = "unweighted mean of the primary scores of the preset's benchmarks (scores in [0, 1])"
