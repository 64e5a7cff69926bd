"""Run identity and the one "already computed?" check, for training runs and evaluation results alike.

A job's identity is its settings without the runtime-only fields: those that change how it is carried out (threads,
progress bars, where files go, how often checkpoints are kept), never what it computes. Schemas mark such fields with
``runtime()`` (dataclass field metadata) and ``runtime_keys`` lists them, so no list of "keys that do not count" is
kept by hand. A record (``results.json``, ``<benchmark>.json``) stores the digest of the settings that produced it;
``is_done`` says whether it answers the settings at hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Callable, Iterable
from typing import Any

RUNTIME = "runtime"  # the field metadata key


def runtime(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A schema field that does not count towards what a job computes (it may differ on resume or rerun)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={RUNTIME: True})


def runtime_keys(schema: type, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys of ``schema``'s runtime-only fields, through nested schemas (a marked schema counts whole)."""
    hints = typing.get_type_hints(schema)
    keys: list[str] = []
    for f in dataclasses.fields(schema):
        if f.metadata.get(RUNTIME):
            keys.append(prefix + f.name)
        elif dataclasses.is_dataclass(hints.get(f.name)):
            keys += runtime_keys(hints[f.name], f"{prefix}{f.name}.")
    return tuple(keys)


def without(settings: dict, keys: Iterable[str]) -> dict:
    """``settings`` with the dotted ``keys`` removed (a copy; missing keys are ignored)."""
    out = dict(settings)
    nested: dict[str, list[str]] = {}
    for key in keys:
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, []).append(rest)
        else:
            out.pop(head, None)
    for head, rest in nested.items():
        if isinstance(out.get(head), dict):
            out[head] = without(out[head], rest)
    return out


def digest(settings: Any, default: Callable[[Any], Any] = str) -> str:
    """sha256 of the canonical JSON of ``settings`` (sorted keys): equal settings, equal digest."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=default).encode()).hexdigest()


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, ignoring keys present only in ``new`` (added to a schema since ``old``
    was written, at defaults that keep old behaviour: a schema that grows does not orphan finished work)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in old for d in differences(old[k], new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def is_done(record: dict | None, key: str, key_field: str, complete: Callable[[dict], bool]) -> bool:
    """Whether ``record`` already answers the settings whose digest is ``key``: it stores that digest in
    ``key_field`` and ``complete(record)`` holds (a finished status, an intact seal)."""
    return bool(record) and record.get(key_field) == key and complete(record)
