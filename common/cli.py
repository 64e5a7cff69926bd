"""How an entry point reports an error: one line on stderr and exit status 1; the traceback behind a switch."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"  # =1: errors print their full traceback (Hydra's own switch)


def report_errors(fn):
    """``fn`` with any exception printed as one line (``error: <type>: <message>``) and exit status 1; the full
    traceback with ``HYDRA_FULL_ERROR=1``, and in the run's log file either way.

    In a multirun the job's exception is raised on to Hydra instead of exiting: Hydra marks the job failed, runs the
    rest of the sweep and then fails it, so one bad job does not stop the others (a ``sys.exit`` would end the
    sweep, and under the joblib launcher kill its worker)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if os.environ.get(FULL_ERROR_ENV) == "1":
                raise
            for handler in logging.getLogger().handlers:  # Hydra's run.log keeps the traceback
                if isinstance(handler, logging.FileHandler):
                    handler.stream.write(traceback.format_exc())
                    handler.flush()
            job = sweep_job()
            if job is not None:
                print(f"error in sweep job {job}: {one_line(e)}", file=sys.stderr, flush=True)
                raise
            print(f"error: {one_line(e)}\n(the full traceback: {FULL_ERROR_ENV}=1)", file=sys.stderr)
            sys.exit(1)

    return wrapper


def sweep_job() -> str | None:
    """The running Hydra multirun job's number and override string (``#3 method=dpo seed=1``); None outside one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return f"#{hc.job.num} {' '.join(hc.overrides.task)}".strip()


def one_line(e: BaseException) -> str:
    """``<type>: <message>``; hub and library errors wrapped by this repo keep the message that names the cause."""
    return f"{type(e).__name__}: {str(e).strip() or repr(e)}"
