"""Result files: atomic JSON writes, the per-benchmark result record and the preset summary.

Layout under ``<output_dir>/<preset>/`` (documented in eval/README.md, read by analysis/):

- ``<benchmark>.json``: one per (checkpoint, benchmark), ``SCHEMA`` = "mio-eval-result/1".
- ``samples/<benchmark>.jsonl``: lm-eval's logged samples (prompt, response, filtered answer, metric), optional.
- ``summary.json``: each benchmark's primary score and the preset average, ``SUMMARY_SCHEMA`` = "mio-eval-summary/1".
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from common import identity
from common.records import write_text_atomic

SCHEMA = "mio-eval-result/1"
SUMMARY_SCHEMA = "mio-eval-summary/1"


def _default(obj: Any):
    """JSON fallback for what lm-eval leaves in its output (numpy scalars, functions in task configs, sets)."""
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if callable(obj):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=False, default=_default, ensure_ascii=False) + "\n"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` atomically; a result record (``SCHEMA``) is sealed with ``record_sha256`` on the way."""
    if isinstance(obj, dict) and obj.get("schema") == SCHEMA:
        plain = json.loads(dumps(obj))
        obj = plain | {"record_sha256": record_hash(plain)}
    write_text_atomic(path, dumps(obj))


def record_hash(record: dict) -> str:
    """sha256 of a result record's content (everything but the seal): a record edited after it was written, its
    score included, no longer matches, so it is recomputed instead of reported as up to date."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def write_jsonl_atomic(path: str | os.PathLike, rows: list) -> None:
    write_text_atomic(path, "".join(json.dumps(r, default=_default, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``, or None when it is missing or unreadable (e.g. from an older crash)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def settings_hash(settings: dict) -> str:
    """The key a result file is reused by: sha256 of the canonical JSON of its settings (``common.identity``, as a
    training run's config digest; the settings leave out the schema's runtime-only fields, eval/config.py)."""
    return identity.digest(settings, default=_default)


def is_complete(record: dict | None, key: str) -> bool:
    """A result for these settings (``key``) whose content is as written (its seal matches): the one "already
    computed?" check (``common.identity.is_done``) that training runs use too."""
    return identity.is_done(record, key, "settings_hash", _sealed)


def _sealed(record: dict) -> bool:
    return record.get("schema") == SCHEMA and record.get("record_sha256") == record_hash(record)


def sample_task_hashes(samples: dict[str, list[dict]]) -> dict[str, str]:
    """lm-eval's ``task_hashes`` (what its EvaluationTracker writes): a hash of every doc, prompt and target."""
    from lm_eval.utils import hash_string

    return {
        task: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in rows))
        for task, rows in samples.items()
    }
