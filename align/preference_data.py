"""Preference data: load with ``datasets``, check every row, apply the chat template, tokenize, truncate.

Tokenization (``Tokenize``) follows what the model sees when it generates: each whole conversation is tokenized in one
piece and the answer is the tail after the prompt's tokens (TRL's common-prefix split).

Sources: a hub name, a local folder of ``{split}.jsonl|json|parquet`` files, or one local file. Row shapes
(``dataset.format``): ``messages`` (UltraFeedback: chosen/rejected chat-message lists ending in the assistant
turn; or TRL's explicit-prompt form: a ``prompt`` message list and assistant-only chosen/rejected lists), ``strings`` (prompt/chosen/rejected strings), ``hh`` (HH-RLHF joined "\\n\\nHuman: ... \\n\\nAssistant: ..."
strings), ``ultrainteract`` (a ``trajectory`` of {from, value} turns plus chosen/rejected strings), or ``auto``.

A malformed row (missing field, empty or non-string response, chosen identical to rejected, chosen and
rejected conversations that differ before the answer) stops the run with an error naming the file, row and
field, unless ``on_malformed: skip``; then such rows are dropped and counted. Truncation follows
alignment-handbook/TRL: if prompt + longer response exceeds ``max_length``, keep ``max_prompt_length`` prompt
tokens (``truncation_mode`` end), then cut responses to ``max_length - max_prompt_length``.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

log = logging.getLogger(__name__)

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


class MalformedDataError(ValueError):
    """Raised for rows that cannot be used, naming the source, row and field."""


@dataclass
class Split:
    """A tokenized split: columns prompt_ids, chosen_ids, rejected_ids, row (index in the source)."""

    dataset: Any
    source: str
    fingerprint: str = ""


@dataclass
class PreferenceData:
    train: Split
    eval: Split | None
    stats: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- loading


def _local_files(path: Path, split: str | None) -> list[Path]:
    if split is None:
        return []
    found = []
    for suffix in FILE_BUILDERS:
        found += sorted(path.glob(f"{split}{suffix}")) + sorted(path.glob(f"{split}-*{suffix}"))
    return found


class RawSplit(NamedTuple):
    """A split as read: the rows, where they came from (for messages), and the local files behind them."""

    dataset: Any
    source: str
    files: tuple[Path, ...] = ()


# Byte-order marks, longest first (UTF-32's LE mark starts with UTF-16's).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
KIND_NAMES = {
    "str": "a string",
    "number": "a number",
    "bool": "a boolean",
    "list": "a list",
    "dict": "an object",
}


def _json_lines(path: Path) -> tuple[list[tuple[int | None, str | None, str]], str]:
    """((line number or None, text, problem) for each JSON document in ``path``, its encoding). JSON lines, or one
    JSON array (``.json``); blank lines are skipped, as ``datasets`` does. Empty, binary and undecodable files raise
    ``MalformedDataError`` naming the file and encoding; a line that is not UTF-8 comes with its problem."""
    data = path.read_bytes()
    if not data.strip():
        raise MalformedDataError(f"{path}: empty file (no rows)")
    encoding = next((enc for bom, enc in BOMS if data.startswith(bom)), None)
    if encoding is None:
        nul = data.find(b"\0", 0, 1 << 16)
        if nul >= 0:
            utf16 = data[1:64:2].count(0) > 16 or data[0:64:2].count(0) > 16
            hint = "UTF-16 without a byte-order mark" if utf16 else "binary data"
            raise MalformedDataError(
                f"{path}: a NUL byte at offset {nul}: not UTF-8 JSON text ({hint}?); save it as UTF-8 JSON lines"
            )
        encoding = "utf-8"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        if encoding != "utf-8":
            raise MalformedDataError(f"{path}: not valid {encoding} text (byte offset {e.start})") from None
        text = None
    if text is not None and text.lstrip().startswith("["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise MalformedDataError(
                f"{path}: line {e.lineno}: invalid JSON ({e.msg}, column {e.colno})"
            ) from None
        return [(None, json.dumps(x), "") for x in doc], encoding
    raw_lines = text.split("\n") if text is not None else data.split(b"\n")
    out = []
    for number, line in enumerate(raw_lines, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as e:
                out.append(
                    (number, None, f"not UTF-8 text (byte 0x{line[e.start]:02x} at column {e.start + 1})")
                )
                continue
        if line.strip():
            out.append((number, line, ""))
    return out, encoding


def _kind(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "str", list: "list", dict: "dict"}.get(type(value), type(value).__name__)


def _paths(value, path: str = ""):
    """(sub-path, kind) of ``value`` and of everything inside it, for the column-type check."""
    kind = _kind(value)
    if kind is None:
        return
    yield path, kind
    if kind == "list":
        for item in value:
            yield from _paths(item, f"{path}[]")
    elif kind == "dict":
        for k, item in value.items():
            yield from _paths(item, f"{path}.{k}")


def read_json_rows(files: list[Path], columns: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    """Our own decoding of JSON(-lines) files, where ``datasets`` gives up or would coerce types: (rows holding
    ``columns`` exactly as written, problems naming file, row, line and field).

    A line that is not a JSON object becomes an empty row (dropped as malformed in skip mode). Column types are
    explicit: where a column (or a field inside it, like a message's content) holds values of different kinds,
    the column's type is the kind most rows have among those a row may hold (strings and lists; numbers, booleans
    and objects only when nothing else is there), and a row holding another is a problem (its value is emptied);
    ``datasets`` would instead coerce the values (the string "5" read as the number 5) and blame valid rows."""
    rows, where, problems = [], [], []
    for path in files:
        lines, encoding = _json_lines(path)
        if encoding not in ("utf-8", "utf-8-sig"):
            log.info("%s: read as %s", path, encoding)
        for number, line, error in lines:
            label = f"{path}{f':{number}' if number is not None else ''}: row {len(rows)}"
            row = {}
            if not error:
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        error, row = f"expected a JSON object, got {KIND_NAMES.get(_kind(row), 'null')}", {}
                except json.JSONDecodeError as e:
                    error = f"invalid JSON ({e.msg}, column {e.colno})"
            if error:
                problems.append(f"{label}: {error}")
            rows.append({c: row.get(c) for c in columns})
            where.append(label)
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        for column in columns:
            for sub, kind in set(_paths(row[column], column)):
                by_kind = counts.setdefault((column, sub), {})
                by_kind[kind] = by_kind.get(kind, 0) + 1
    expected = {
        key: max([k for k in kinds if k in ("str", "list")] or kinds, key=lambda k: (kinds[k], k == "str"))
        for key, kinds in counts.items()
        if len(kinds) > 1
    }
    for i, row in enumerate(rows):
        for column in columns:
            odd = next(
                ((sub, k) for sub, k in _paths(row[column], column) if expected.get((column, sub), k) != k),
                None,
            )
            if odd is not None:
                sub, kind = odd
                problems.append(
                    f"{where[i]}: field '{sub}': expected {KIND_NAMES.get(expected[(column, sub)], '?')} like the other "
                    f"rows, got {KIND_NAMES.get(kind, kind)}"
                )
                row[column] = None
    return rows, problems


def _plain_utf8(path: Path, chunk: int = 1 << 24) -> bool:
    """Whether ``path`` is non-empty UTF-8 text without a byte-order mark or NUL bytes: what ``datasets``' JSON reader
    reads faithfully (it passes invalid UTF-8 through, to fail later with no file named). Reads in chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    seen_text = False
    with open(path, "rb") as f:
        block = f.read(4)
        if any(block.startswith(bom) for bom, _ in BOMS):
            return False
        while block:
            if b"\0" in block:
                return False
            try:
                decoder.decode(block)
            except UnicodeDecodeError:
                return False
            seen_text = seen_text or bool(block.strip())
            block = f.read(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return seen_text


def _has_json_feature(feature) -> bool:
    """Whether ``datasets`` fell back to its ``Json`` type anywhere in a feature (it does for mixed types)."""
    import datasets

    if isinstance(feature, datasets.Json):
        return True
    if isinstance(feature, dict):
        return any(_has_json_feature(f) for f in feature.values())
    inner = getattr(feature, "feature", None)
    return inner is not None and _has_json_feature(inner)


def _load_files(files: list[Path], cfg) -> Any:
    """A Dataset from local files: ``datasets``' reader (cached, fast) where it reads the files faithfully, our own
    decoding where it fails or mixes types (``read_json_rows``). Errors name the file (and row, line, field)."""
    import datasets

    builder = FILE_BUILDERS[files[0].suffix]
    columns = tuple(dict.fromkeys((cfg.prompt_field, cfg.chosen_field, cfg.rejected_field, "trajectory")))
    failure = None
    if builder != "json" or all(_plain_utf8(f) for f in files):
        try:
            ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
        except Exception as e:  # noqa: BLE001 - our own reader below says what is wrong, naming file and line
            if builder != "json":
                raise MalformedDataError(
                    f"{', '.join(map(str, files))}: not a readable {builder} file ({e})"
                ) from e
            failure = e
        else:
            if not any(_has_json_feature(f) for c, f in ds.features.items() if c in columns):
                return ds
    rows, problems = read_json_rows(files, columns)
    if problems and cfg.on_malformed != "skip":
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise MalformedDataError(
            f"{problems[0]}\n"
            + "".join(f"  {p}\n" for p in problems[1:5])
            + more.lstrip("\n")
            + "Fix the data or set dataset.on_malformed=skip to drop such rows."
        )
    for p in problems:
        log.warning("%s (dropped: dataset.on_malformed=skip)", p)
    present = [c for c in columns if any(r[c] is not None for r in rows)]
    try:
        return datasets.Dataset.from_list([{c: r[c] for c in present} for r in rows])
    except Exception as e:  # noqa: BLE001 - named with the files
        raise MalformedDataError(f"{', '.join(map(str, files))}: could not read the rows ({e})") from (
            failure or e
        )


def load_raw_splits(cfg) -> dict[str, RawSplit]:
    """``{"train": RawSplit, "test": RawSplit}`` (test only when present) from cfg.dataset."""
    import datasets

    path = Path(cfg.path).expanduser()
    out: dict[str, RawSplit] = {}
    if path.is_file():
        if FILE_BUILDERS.get(path.suffix) is None:
            raise ValueError(f"dataset.path {path}: unsupported file type (use .json, .jsonl or .parquet)")
        out["train"] = RawSplit(_load_files([path], cfg), str(path), (path,))
        return out
    if path.is_dir():
        for role, split in (("train", cfg.train_split), ("test", cfg.test_split)):
            files = _local_files(path, split)
            if not files:
                if role == "train":
                    raise FileNotFoundError(f"dataset.path {path}: no {split}.jsonl/.json/.parquet file")
                continue
            kinds = {FILE_BUILDERS[f.suffix] for f in files}
            if len(kinds) > 1:
                raise ValueError(
                    f"dataset.path {path}: split {split} mixes file types ({', '.join(map(str, files))})"
                )
            out[role] = RawSplit(_load_files(files, cfg), ", ".join(str(f) for f in files), tuple(files))
        return out
    if str(cfg.path).startswith((".", "/", "~")):
        raise FileNotFoundError(f"dataset.path {cfg.path} does not exist")
    kwargs = {"name": cfg.name, "revision": cfg.revision}
    try:
        ds = datasets.load_dataset(cfg.path, **kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised with the config key that names the dataset
        raise RuntimeError(f"could not load dataset.path={cfg.path!r} from the hub: {e}") from e
    for role, split in (("train", cfg.train_split), ("test", cfg.test_split)):
        if split is None:
            continue
        if split not in ds:
            if role == "train":
                raise KeyError(
                    f"dataset {cfg.path}: no split {split!r} (has {sorted(ds)}); set dataset.train_split"
                )
            continue
        out[role] = RawSplit(ds[split], f"{cfg.path} [{split}]")
    return out


def row_lines(files: tuple[Path, ...], rows: list[int]) -> dict[int, str]:
    """``{row: "<file>:<line>"}`` for rows of JSON-lines files (blank lines are not rows), for error messages."""
    wanted, out, index = set(rows), {}, 0
    for path in files:
        if FILE_BUILDERS.get(path.suffix) != "json" or not wanted:
            return out
        try:
            lines, _ = _json_lines(path)
        except MalformedDataError:
            return out
        for number, _line, _err in lines:
            if index in wanted and number is not None:
                out[index] = f"{path}:{number}"
            index += 1
    return out


# ------------------------------------------------------------------------------------------ normalising


def _message_list(value, field_name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise MalformedDataError(f"field '{field_name}': expected a non-empty list of chat messages")
    for m in value:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise MalformedDataError(f"field '{field_name}': every message needs 'role' and 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _answer(value, field_name: str) -> str:
    if value is None:
        raise MalformedDataError(f"field '{field_name}': missing")
    if not isinstance(value, str):
        raise MalformedDataError(f"field '{field_name}': expected a string, got {type(value).__name__}")
    if not value.strip():
        raise MalformedDataError(f"field '{field_name}': empty response")
    return value


def _split_hh(text: str, field_name: str) -> tuple[list[dict], str]:
    """(turns, the raw text before the final answer up to its "Assistant:") of an HH dialogue."""
    parts = HH_TURN.split(text)
    if len(parts) < 3 or parts[-2] != "Assistant":
        raise MalformedDataError(f"field '{field_name}': not an HH dialogue ending in an Assistant turn")
    roles = {"Human": "user", "Assistant": "assistant"}
    turns = [{"role": roles[r], "content": c} for r, c in zip(parts[1::2], parts[2::2], strict=True)]
    if parts[0].strip():
        turns[0]["content"] = parts[0] + turns[0]["content"]
    last = list(HH_TURN.finditer(text))[-1]
    return turns, text[: last.end() - 1]


@dataclass(frozen=True)
class Example:
    """A checked row: the conversation before the answer and the two answers (message contents), plus the row's own
    plain-text form where its source has one (a strings prompt, an HH dialogue), used without a chat template."""

    prompt: list[dict]
    chosen: str
    rejected: str
    plain: tuple[str, str, str] | None = (
        None  # (prompt text, chosen text, rejected text), concatenated as they are
    )


def detect_format(columns: list[str], first_row: dict, cfg) -> str:
    """The row shape when ``format: auto``."""
    if "trajectory" in columns:
        return "ultrainteract"
    chosen = first_row.get(cfg.chosen_field)
    if isinstance(chosen, list):
        return "messages"
    if cfg.prompt_field not in columns and isinstance(chosen, str) and "\n\nAssistant:" in chosen:
        return "hh"
    return "strings"


def normalise_row(row: dict, fmt: str, cfg) -> Example:
    """The checked ``Example`` of a raw row, or MalformedDataError naming the field."""
    c_field, r_field, p_field = cfg.chosen_field, cfg.rejected_field, cfg.prompt_field
    plain = None
    for f in (c_field, r_field):
        if f not in row or row[f] is None:
            raise MalformedDataError(f"field '{f}': missing")
    if fmt == "messages":
        chosen, rejected = _message_list(row[c_field], c_field), _message_list(row[r_field], r_field)
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            raise MalformedDataError(
                f"field '{c_field}'/'{r_field}': the last message must be the assistant's"
            )
        prompt = chosen[:-1]
        if rejected[:-1] != prompt:
            raise MalformedDataError(
                f"field '{r_field}': its conversation differs from '{c_field}' before the answer"
            )
        if not prompt:  # TRL's explicit-prompt conversational rows: chosen/rejected hold only the answer
            text = row.get(p_field)
            if isinstance(text, list):
                prompt = _message_list(text, p_field)
            elif isinstance(text, str) and text.strip():
                prompt = [{"role": "user", "content": text}]
            else:
                raise MalformedDataError(f"field '{p_field}': missing and the messages hold no prompt turn")
        c, r = _answer(chosen[-1]["content"], c_field), _answer(rejected[-1]["content"], r_field)
    elif fmt == "strings":
        text = row.get(p_field)
        if isinstance(text, list):
            prompt = _message_list(text, p_field)
        elif isinstance(text, str) and text.strip():
            prompt = [{"role": "user", "content": text}]
        else:
            raise MalformedDataError(f"field '{p_field}': missing or empty prompt")
        c, r = _answer(row[c_field], c_field), _answer(row[r_field], r_field)
        if isinstance(text, str):
            plain = (text, c, r)
    elif fmt == "hh":
        (chosen, prefix), (rejected, r_prefix) = (
            _split_hh(_answer(row[c_field], c_field), c_field),
            _split_hh(_answer(row[r_field], r_field), r_field),
        )
        prompt = chosen[:-1]
        if rejected[:-1] != prompt or prefix != r_prefix:
            raise MalformedDataError(
                f"field '{r_field}': its dialogue differs from '{c_field}' before the answer"
            )
        c, r = _answer(chosen[-1]["content"], c_field), _answer(rejected[-1]["content"], r_field)
        plain = (prefix, " " + c, " " + r)  # the raw dialogue: "...\n\nAssistant:" + " answer"
    elif fmt == "ultrainteract":
        traj = row.get(p_field)
        if not isinstance(traj, list) or not traj:
            raise MalformedDataError(f"field '{p_field}': expected a non-empty list of {{from, value}} turns")
        roles = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
        prompt = [
            {"role": roles.get(str(t.get("from")).lower(), "user"), "content": t.get("value")} for t in traj
        ]
        if any(not isinstance(m["content"], str) for m in prompt):
            raise MalformedDataError(f"field '{p_field}': every turn needs a string 'value'")
        c, r = _answer(row[c_field], c_field), _answer(row[r_field], r_field)
    else:
        raise ValueError(f"dataset.format={fmt!r}: expected auto, messages, strings, hh or ultrainteract")
    if c == r:
        raise MalformedDataError(f"field '{r_field}': identical to '{c_field}'")
    return Example(prompt, c, r, plain)


# ------------------------------------------------------------------------------------------- tokenizing


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Tokenize:
    """Tokenizes a pair as the model sees it when it generates the answer.

    The prompt is rendered with the generation prompt, and each whole conversation (prompt + answer) is tokenized
    in one piece; the answer's ids are the tail after the prompt's. Tokenizing the answer on its own would differ at
    the boundary: a SentencePiece tokenizer (Mistral, Llama-2) puts its dummy-prefix "▁" before the first token,
    which the model never generates after "<|assistant|>\n". Where a token straddles the boundary, so that the
    prompt's ids are not a prefix of the conversation's, the answer starts where the two diverge, as TRL's
    DPOTrainer does (the prompt keeps the common prefix, the same for chosen and rejected); such pairs are counted
    (``boundary_merged``). BOS once at the start when the tokenizer adds one to plain text (as lm-eval does at
    evaluation); the answer ends at its final EOS (whitespace the template puts after it is dropped); without a chat
    template the texts are concatenated as they are and EOS is appended.
    """

    def __init__(self, tokenizer, max_length: int, max_prompt_length: int, truncation_mode: str):
        if truncation_mode not in ("keep_end", "keep_start"):
            raise ValueError(f"dataset.truncation_mode={truncation_mode!r}: expected keep_end or keep_start")
        self.tok = tokenizer
        self.chat = tokenizer.chat_template is not None
        self.max_length, self.max_prompt_length, self.keep_end = (
            max_length,
            max_prompt_length,
            truncation_mode == "keep_end",
        )
        probe = tokenizer("a").input_ids
        self.bos = (
            tokenizer.bos_token_id
            if tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
            else None
        )
        self.eos = tokenizer.eos_token_id
        self._blank_tails: dict[tuple[int, ...], bool] = {}

    def render(self, ex: Example) -> tuple[str, str, str]:
        """(prompt text ending in the generation prompt, prompt + chosen text, prompt + rejected text)."""
        if not self.chat:
            p, c, r = ex.plain or ("\n\n".join(m["content"] for m in ex.prompt), ex.chosen, ex.rejected)
            return p, p + c, p + r
        apply = self.tok.apply_chat_template
        p = apply(ex.prompt, tokenize=False, add_generation_prompt=True)
        full = [
            apply(ex.prompt + [{"role": "assistant", "content": a}], tokenize=False)
            for a in (ex.chosen, ex.rejected)
        ]
        if not all(f.startswith(p) for f in full):
            raise MalformedDataError(
                "the chat template renders the prompt differently once an answer follows "
                "(set model.chat_template to one that does not)"
            )
        return p, full[0], full[1]

    def _ends_blank(self, tail: list[int]) -> bool:
        key = tuple(tail)
        if key not in self._blank_tails:
            self._blank_tails[key] = not self.tok.decode(tail).strip()
        return self._blank_tails[key]

    def _finish_answer(self, ids: list[int]) -> list[int]:
        if self.eos is None:
            return ids
        if not self.chat:
            return ids if ids[-1:] == [self.eos] else ids + [self.eos]
        if self.eos in ids:
            last = len(ids) - 1 - ids[::-1].index(self.eos)
            if last < len(ids) - 1 and self._ends_blank(ids[last + 1 :]):
                ids = ids[: last + 1]  # drop whitespace the template puts after the final EOS
        return ids

    def _truncate(
        self, p: list[int], c: list[int], r: list[int]
    ) -> tuple[list[int], list[int], list[int], bool]:
        """alignment-handbook/TRL: cut the prompt to max_prompt_length (BOS kept), then the answers."""
        longer = max(len(c), len(r))
        if len(p) + longer <= self.max_length:
            return p, c, r, False
        if len(p) > self.max_prompt_length:
            head = p[:1] if self.bos is not None and p[:1] == [self.bos] else []
            body, keep = p[len(head) :], self.max_prompt_length - len(head)
            p = head + (body[len(body) - keep :] if self.keep_end else body[:keep])
        if len(p) + longer > self.max_length:
            keep = self.max_length - len(p)
            c, r = c[:keep], r[:keep]
        return p, c, r, True

    def encode(self, rendered: list[tuple[str, str, str]]) -> list[dict]:
        """Tokenize rendered pairs (``render``'s triples) in one batched call (fast tokenizers encode in parallel)."""
        if not rendered:  # a batch of malformed rows only (fast tokenizers fail on an empty batch)
            return []
        ids = self.tok([t for triple in rendered for t in triple], add_special_tokens=False).input_ids
        out = []
        for i in range(len(rendered)):
            p, pc, pr = ids[3 * i : 3 * i + 3]
            if self.bos is not None:
                p, pc, pr = ([self.bos] + x if x[:1] != [self.bos] else x for x in (p, pc, pr))
            n = min(common_prefix_length(p, pc), common_prefix_length(p, pr))
            merged = n < len(p)
            c, r = self._finish_answer(pc[n:]), self._finish_answer(pr[n:])
            p, c, r, truncated = self._truncate(pc[:n], c, r)
            out.append(
                {
                    "prompt_ids": p,
                    "chosen_ids": c,
                    "rejected_ids": r,
                    "truncated": truncated,
                    "merged": merged,
                }
            )
        return out

    def __call__(self, prompt: list[dict], chosen: str, rejected: str, plain=None) -> dict:
        return self.encode([self.render(Example(prompt, chosen, rejected, plain))])[0]


EMPTY = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], "truncated": False, "merged": False}


def _token_problem(out: dict) -> str:
    if out["chosen_ids"] == out["rejected_ids"]:
        return "chosen and rejected are identical after tokenization and truncation"
    if not out["chosen_ids"] or not out["rejected_ids"]:
        return "a response is empty after truncation (max_length too small for the prompt)"
    return ""


def _prepare(batch: dict, idx: list[int], *, fmt: str, cfg, tokenize: Tokenize) -> dict:
    """A batch of raw rows -> tokenized rows; a malformed row becomes an empty one carrying its error."""
    rendered, errors = [], []
    for j in range(len(idx)):
        try:
            rendered.append(tokenize.render(normalise_row({k: v[j] for k, v in batch.items()}, fmt, cfg)))
            errors.append("")
        except MalformedDataError as e:
            rendered.append(None)
            errors.append(str(e))
    encoded = iter(tokenize.encode([x for x in rendered if x is not None]))
    rows = []
    for x, err in zip(rendered, errors, strict=True):
        out = dict(EMPTY)
        if x is not None:
            out = next(encoded)
            err = _token_problem(out)
            if err:
                out = dict(EMPTY)
        rows.append({**out, "error": err})
    return {k: [r[k] for r in rows] for k in (*EMPTY, "error")} | {"row": list(idx)}


def content_fingerprint(ds) -> str:
    """sha256 of the token ids of every row, in order: the data part of the reference-log-prob cache key."""
    h = hashlib.sha256()
    for batch in ds.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).iter(batch_size=1024):
        for col in ("prompt_ids", "chosen_ids", "rejected_ids"):
            for ids in batch[col]:
                h.update(np.asarray(ids, dtype=np.int64).tobytes())
                h.update(b"|")
    return h.hexdigest()


def map_fingerprint(ds, fmt: str, cfg, tokenizer) -> str:
    """What determines the tokenized split: the source rows, the dataset settings, the tokenizer and this module's
    code. Given to ``datasets.map`` so that it does not hash the tokenizer by pickling it (a third of the time of
    preparing a large split); ``datasets`` reuses a cached result only when all of these match."""
    from omegaconf import OmegaConf

    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    settings = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    for part in (
        getattr(ds, "_fingerprint", "") or "",
        fmt,
        json.dumps(settings, sort_keys=True, default=str),
        vocab,
        str(tokenizer.chat_template),
        json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str),
        Path(__file__).read_text(),
    ):
        h.update(part.encode())
        h.update(b"|")
    return h.hexdigest()[:32]


def prepare_split(
    ds, source: str, cfg, tokenizer, max_samples: int | None, stats: dict, role: str, files: tuple = ()
) -> Split:
    """Check, render and tokenize one split; raise or drop malformed rows; record counts in ``stats``.
    ``files``: the local files behind ``ds``, to name the lines of malformed rows."""
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    if len(ds) == 0:
        raise MalformedDataError(f"{source}: no rows")
    fmt = cfg.format if cfg.format != "auto" else detect_format(ds.column_names, ds[0], cfg)
    tokenize = Tokenize(tokenizer, cfg.max_length, cfg.max_prompt_length, cfg.truncation_mode)
    out = ds.map(
        _prepare,
        with_indices=True,
        batched=True,
        batch_size=256,
        fn_kwargs={"fmt": fmt, "cfg": cfg, "tokenize": tokenize},
        remove_columns=ds.column_names,
        num_proc=cfg.num_proc,
        desc=f"tokenizing {role}",
        new_fingerprint=map_fingerprint(ds, fmt, cfg, tokenizer),
    )
    errors = [(r, e) for r, e in zip(out["row"], out["error"], strict=True) if e]
    every = bool(errors) and len(errors) == len(out)
    if errors and (cfg.on_malformed != "skip" or every):
        lines = row_lines(files, [r for r, _ in errors[:5]])
        shown = [f"{lines.get(r, source)}: row {r}: {e}" for r, e in errors[:5]]
        head = f"all {len(errors)} rows are malformed" if every else f"{len(errors)} malformed row(s)"
        more = f"  ... and {len(errors) - 5} more\n" if len(errors) > 5 else ""
        raise MalformedDataError(
            f"{shown[0]} ({head}; rows are 0-based)\n"
            + "".join(f"  {line}\n" for line in shown[1:])
            + more
            + (
                "Fix the data."
                if every
                else "Fix the data or set dataset.on_malformed=skip to drop such rows."
            )
        )
    if errors:
        log.warning("%s: dropped %d malformed row(s), e.g. row %d: %s", source, len(errors), *errors[0])
        out = out.filter(lambda e: not e, input_columns="error")
    out = out.remove_columns("error")
    n_trunc, n_merged = int(sum(out["truncated"])), int(sum(out["merged"]))
    stats[role] = {
        "source": source,
        "format": fmt,
        "rows": len(ds),
        "kept": len(out),
        "dropped": len(errors),
        "truncated": n_trunc,
        "boundary_merged": n_merged,
    }
    log.info(
        "%s %s: %d rows, %d kept, %d dropped as malformed, %d truncated, %d with a token across the prompt/answer "
        "boundary",
        role,
        source,
        len(ds),
        len(out),
        len(errors),
        n_trunc,
        n_merged,
    )
    split = Split(out, source)
    split.fingerprint = content_fingerprint(out)
    return split


def load_preference_data(cfg, tokenizer, seed: int) -> PreferenceData:
    """Load, check and tokenize the train and held-out splits described by ``cfg`` (the ``dataset`` group)."""
    if cfg.on_malformed not in ("error", "skip"):
        raise ValueError(f"dataset.on_malformed={cfg.on_malformed!r}: expected error or skip")
    raw = load_raw_splits(cfg)
    stats: dict[str, Any] = {}
    tr = raw["train"]
    train = prepare_split(
        tr.dataset, tr.source, cfg, tokenizer, cfg.max_train_samples, stats, "train", tr.files
    )
    held_out = None
    if "test" in raw:
        te = raw["test"]
        held_out = prepare_split(
            te.dataset, te.source, cfg, tokenizer, cfg.max_eval_samples, stats, "eval", te.files
        )
    elif cfg.eval_fraction > 0:
        # Carved after preparation, so that row numbers in errors and in `row` still name lines of the train file.
        parts = train.dataset.train_test_split(test_size=cfg.eval_fraction, seed=seed)
        eval_ds = parts["test"]
        if cfg.max_eval_samples is not None:
            eval_ds = eval_ds.select(range(min(cfg.max_eval_samples, len(eval_ds))))
        held_out = Split(
            eval_ds, f"{train.source} (held-out {cfg.eval_fraction:.0%})", content_fingerprint(eval_ds)
        )
        train = Split(parts["train"], train.source, content_fingerprint(parts["train"]))
        stats["eval"] = {"source": held_out.source, "rows": len(eval_ds), "kept": len(eval_ds)}
        stats["train"]["kept"] = len(train.dataset)
    else:
        log.warning("dataset %s: no held-out split and eval_fraction = 0: no evaluation loss", cfg.path)
    return PreferenceData(train, held_out, stats)


# ------------------------------------------------------------------------------------------- batching


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pairs -> one right-padded batch of 2B sequences (chosen rows first, then rejected).

    Returns input_ids, attention_mask, loss_mask (1 on response tokens) of shape (2B, T) and ``row`` (B,).
    """
    seqs, masks = [], []
    for key in ("chosen_ids", "rejected_ids"):
        for r in rows:
            seqs.append(r["prompt_ids"] + r[key])
            masks.append([0] * len(r["prompt_ids"]) + [1] * len(r[key]))
    width = max(map(len, seqs))
    n = len(seqs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width), dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, masks, strict=True)):
        input_ids[i, : len(s)] = torch.tensor(s)
        attention_mask[i, : len(s)] = 1
        loss_mask[i, : len(m)] = torch.tensor(m)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "row": torch.tensor([r["row"] for r in rows], dtype=torch.long),
        "n_tokens": attention_mask.sum(),
    }


def collate_shared(rows: list[dict], pad_id: int, window: int | None = None) -> dict[str, torch.Tensor]:
    """Pairs -> one right-padded row each, prompt + chosen + rejected, so the prompt runs once.

    The rejected tokens attend to the prompt and to each other but not to the chosen, and their position ids
    continue from the prompt, so each token sees exactly what it sees in ``collate``'s layout. Returns input_ids
    and position_ids (B, L), attention_mask (B, 1, L, L) boolean, and per response token its row, the position
    whose hidden state predicts it (``tgt_pred``; the first rejected token is predicted from the prompt's last),
    its own position and its sequence index in ``collate``'s order (chosen b -> b, rejected b -> B + b).
    ``n_tokens`` counts tokens as ``collate`` would (each prompt twice), so throughput figures stay comparable.
    ``window``: a sliding attention window (Mistral v0.1), applied here by position (a token sees keys whose
    position is less than ``window`` behind its own), because a model given a 4D mask applies none of its own.
    """
    b_size = len(rows)
    width = max(len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    input_ids = torch.full((b_size, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((b_size, width), dtype=torch.long)
    mask = torch.zeros((b_size, 1, width, width), dtype=torch.bool)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    t_row, t_pred, t_pos, t_seq = [], [], [], []
    n_tokens = 0
    for b, r in enumerate(rows):
        p, c, j = len(r["prompt_ids"]), len(r["chosen_ids"]), len(r["rejected_ids"])
        if p == 0:
            raise ValueError(
                "collate_shared needs a non-empty prompt (the first answer token is predicted from it)"
            )
        n = p + c + j
        input_ids[b, :n] = torch.tensor(r["prompt_ids"] + r["chosen_ids"] + r["rejected_ids"])
        position_ids[b, :n] = torch.cat([torch.arange(p + c), torch.arange(p, p + j)])
        m = causal[:n, :n].clone()
        m[p + c :, p : p + c] = False  # the rejected never sees the chosen
        if window is not None:
            pos = position_ids[b, :n]
            m &= (pos[:, None] - pos[None, :]) < window
        mask[b, 0, :n, :n] = m
        mask[b, 0, range(n, width), range(n, width)] = True  # padding attends to itself (no all-masked rows)
        chosen_pos = list(range(p, p + c))
        rejected_pos = list(range(p + c, n))
        t_row += [b] * (c + j)
        t_pos += chosen_pos + rejected_pos
        t_pred += [q - 1 for q in chosen_pos] + [p - 1] + rejected_pos[:-1]
        t_seq += [b] * c + [b_size + b] * j
        n_tokens += 2 * p + c + j
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "position_ids": position_ids,
        "tgt_row": as_long(t_row),
        "tgt_pred": as_long(t_pred),
        "tgt_pos": as_long(t_pos),
        "tgt_seq": as_long(t_seq),
        "row": as_long([r["row"] for r in rows]),
        "n_tokens": torch.tensor(n_tokens),
    }
