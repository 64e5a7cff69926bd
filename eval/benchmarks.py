"""The benchmark table: which lm-eval task each benchmark runs and which number is its score, defined once.

``BENCHMARKS[name]`` gives the lm-eval task or group (and the one it runs under the chat protocol where that
differs), the metric and filter whose value is the benchmark's primary score (``results[task]["<metric>,<filter>"]``
in lm-eval's output), where the task comes from (lm-eval built-in or our YAML under ``eval/tasks/``), the hub
dataset, split, item count and pinned revision it reads (``REVISION_SOURCES`` says where each revision comes from).
``average()`` is the one definition of a preset's average. Presets (``conf/benchmarks/*.yaml``) list benchmark
names from this table.
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
    dataset: str  # hub dataset the real task reads ("local" for a task that reads a local file)
    builtin_dir: str | None = None  # folder under lm_eval/tasks/ to index, for built-ins
    code: bool = False  # executes model-written code (needs unsafe_code=true)
    note: str = ""
    chat_task: str | None = None  # the task under the chat protocol, where it differs (same metric key)
    revision: str | None = (
        None  # the dataset's hub revision, applied when the task loads (see REVISION_SOURCES)
    )
    split: str = ""  # the evaluated split, for the record
    items: int | None = None  # how many items the real data holds
    local_only: bool = False  # the data is not on the hub: the preset entry must give a data_file

    @property
    def key(self) -> str:
        """The key of the primary score in lm-eval's ``results[task]``."""
        return f"{self.metric},{self.filter}"

    def task_for(self, protocol: str) -> str:
        """The lm-eval task this benchmark runs under a prompt protocol ("chat" or "plain")."""
        return self.chat_task if protocol == "chat" and self.chat_task else self.task


# Where each pinned revision comes from (nothing here could be checked against the hub from this project's
# machines; eval/README.md "Dataset revisions"). Full commit hashes, except ASDiv's PR ref.
REVISION_SOURCES = {
    "SaylorTwift/bbh": "pinned by several public evaluation configs found by code search (a full hash in two, the "
    "short b5306be in marin's eval-data downloads)",
    "openai/openai_humaneval": "pinned by many public evaluation configs (code search); the repo's last change is "
    "2024-01-04",
    "newfacade/LeetCodeDataset": "one public importer's provenance line (hf:newfacade/LeetCodeDataset@<hash>, over "
    "files whose import header is v0.3.1's); not confirmed by a second source",
    "qintongli/GSM-Plus": "pinned by several public evaluation configs and a data audit (code search)",
    "EleutherAI/hendrycks_math": "pinned by several public evaluation configs (code search; marin's short 21a5633)",
    "TIGER-Lab/TheoremQA": "three public evaluation configs, one noting it matched the Hub API sha; last change "
    "2024-05-15",
    "tongyx361/svamp": "the dataset's Hub page (its 'Upload dataset' commit, the repo's second and last, as indexed "
    "by the docs search); not confirmed by a second source",
    "EleutherAI/asdiv": "main (last commit fbd8b42e4964cdedc0ba8c2edd9c01320adabf73) is a loading script that "
    "datasets >= 4 refuses; refs/pr/1 is the Hub's Parquet conversion (commit cb5c4c3, full hash not found), a "
    "ref and not an immutable commit: each result records the commit it resolved to when the hub answers",
}


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
        note="27 subtasks, chain of thought, 3-shot; score = accuracy over all questions (weighted by size); "
        "lm-eval's strict 'the answer is X.' extraction",
        revision="b5306be6f827cfafbb545ff5a51f96916029b0fd",
        split="test",
        items=6511,
    ),
    Benchmark(
        "humaneval",
        "mio_humaneval",
        "pass@1",
        "create_test",
        "ours",
        "openai/openai_humaneval",
        code=True,
        note="lm-eval's humaneval (plain) or humaneval_instruct (chat) prompt and data; our driver-based scorer",
        chat_task="mio_humaneval_instruct",
        revision="7dce6050a7d6d172f3cc5c32aa97f52fa1a2e544",
        split="test",
        items=164,
    ),
    Benchmark(
        "leetcode",
        "mio_leetcode",
        "pass@1",
        "create_test",
        "ours",
        "newfacade/LeetCodeDataset",
        code=True,
        note="LeetCodeDataset v0.3.1 test split; the Eurus suite's 180 problems are benchmark leetcode_eurus",
        revision="215604aeed660029df7de2fea5a4d7b6ed476a08",
        split="test",
        items=228,
    ),
    Benchmark(
        "gsm_plus",
        "mio_gsm_plus",
        "exact_match",
        "final-answer",
        "ours",
        "qintongli/GSM-Plus",
        note="lm-eval's gsm_plus prompt (5-shot); first final answer; 'None' golds scorable",
        revision="3b708db57b96a16e8e3368ed2956990c0809440e",
        split="test",
        items=10552,
    ),
    Benchmark(
        "math",
        "mio_math",
        "exact_match",
        "none",
        "ours",
        "EleutherAI/hendrycks_math",
        note="lm-eval's minerva_math (4-shot), equivalence by math-verify instead of sympy (needs antlr4 4.11)",
        revision="21a5633873b6a120296cce3e2df9d5550074f4a3",
        split="test",
        items=5000,
    ),
    Benchmark(
        "theoremqa",
        "mio_theoremqa",
        "exact_match",
        "none",
        "ours",
        "TIGER-Lab/TheoremQA",
        note="official TheoremQA runner's prompt format, five examples and answer matching",
        revision="a340b1782960a712843aae3ed25f1e013cc008a5",
        split="test",
        items=800,
    ),
    Benchmark(
        "svamp",
        "mio_svamp",
        "exact_match",
        "final-answer",
        "ours",
        "tongyx361/svamp",
        note="lm-eval's asdiv_cot_llama prompt on all 1,000 SVAMP problems, 8-shot; first final answer",
        revision="b1659891d2fadaf805de8ff31f46a3e2cdd2966c",
        split="test",
        items=1000,
    ),
    Benchmark(
        "asdiv",
        "mio_asdiv",
        "exact_match",
        "final-answer",
        "ours",
        "EleutherAI/asdiv",
        note="lm-eval's asdiv_cot_llama prompt, 8-shot; first final answer; non-numeric golds scorable",
        revision="refs/pr/1",
        split="validation",
        items=2305,
    ),
    # --- a second LeetCode variant: the Eurus evaluation's 180 contest problems, from a local file ---------------
    Benchmark(
        "leetcode_eurus",
        "mio_leetcode_eurus",
        "pass@1",
        "create_test",
        "ours",
        "local",
        code=True,
        note="Eurus' leetcode-test.json (github.com/OpenBMB/Eurus, eval/Coding/leetcode/); 10 s per program",
        split="test",
        items=180,
        local_only=True,
    ),
    # --- the miniature's held-out problems (miniature/tasks.py), scored by their verifiers ----------------------------
    Benchmark(
        "miniature",
        "mio_miniature",
        "exact_match",
        "none",
        "ours",
        "generated",
        note="the miniature model's five task families, 100 held-out problems each, generated by miniature.tasks; "
        "greedy, exact match of the final answer through each family's verifier; the chat protocol (the question "
        "is the user's turn)",
        split="test",
        items=500,
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


def owner(task: str) -> Benchmark | None:
    """The table row that defines ``task`` (as its task or chat task), e.g. for a preset entry's task override."""
    return next((b for b in _TABLE if task in (b.task, b.chat_task)), None)


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
