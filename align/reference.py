"""Reference log-probs: computed once, cached on disk, reused by every run that can.

The cache key is everything that determines a table's contents: the reference weights
(``models.model_fingerprint``), the tokenized split's content hash, the source row ids its rows are looked up by,
and the precision; so a sweep over methods, betas or learning rates on the same model and data computes it once,
and the same tokens under other row ids (a file with a malformed row skipped, then with that row deleted) do not
share a table. A cached table is verified when loaded: its stored key, its row ids against the split's, a digest of
its contents, the token counts against the split's response lengths and, at step 0 where the policy is the
reference, one batch scored again. A table that fails is computed again (with a warning naming the file).
Under several ranks each rank scores an equal share of rows (ZeRO-3 forwards are collective) and rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from align import distributed as dist
from align.preference_data import Split

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the log-prob computation or the file layout changes meaning


@dataclass
class ReferenceTable:
    """Reference sums and counts per source row of one split: ``sums``/``counts`` are (max_row + 1, 2),
    column 0 chosen, column 1 rejected; rows absent from the split hold NaN."""

    sums: torch.Tensor
    counts: torch.Tensor

    def lookup(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sums (B, 2), counts (B, 2)) for source rows (B,)."""
        outside = rows[(rows < 0) | (rows >= self.sums.shape[0])]
        if outside.numel():
            raise KeyError(
                f"reference log-probs missing for rows {outside.tolist()[:5]}: the table has rows < {self.sums.shape[0]}"
            )
        sums, counts = self.sums[rows], self.counts[rows]
        missing = rows[torch.isnan(sums).any(dim=1)]
        if missing.numel():
            raise KeyError(
                f"reference log-probs missing for rows {missing.tolist()[:5]}: the table does not match this data"
            )
        return sums, counts

    def digest(self, key: str, rows: torch.Tensor) -> str:
        """sha256 of the key, the row ids and the table's values: stored with the table, checked when loaded."""
        h = hashlib.sha256(key.encode())
        for t in (rows.to(torch.int64), self.sums.to(torch.float32), self.counts.to(torch.float32)):
            h.update(t.contiguous().numpy().tobytes())
            h.update(b"|")
        return h.hexdigest()


def split_rows(split: Split) -> torch.Tensor:
    """The source row ids of a tokenized split, in its order (what ``lookup`` is called with)."""
    return torch.as_tensor(split.dataset["row"], dtype=torch.int64)


def cache_key(model_fp: str, split: Split, precision: str) -> str:
    """What determines the table: cache version, reference weights, token content, row ids, precision."""
    rows = hashlib.sha256(split_rows(split).numpy().tobytes()).hexdigest()
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "model": model_fp,
            "data": split.fingerprint,
            "rows": rows,
            "precision": precision,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def expected_counts(split: Split) -> torch.Tensor:
    """(N, 2) response-token counts the log-probs are summed over (each answer token is predicted from the token
    before it, so an answer with no prompt before it loses its first token)."""
    cols = split.dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    out = []
    for batch in cols.iter(batch_size=4096):
        for p, c, r in zip(batch["prompt_ids"], batch["chosen_ids"], batch["rejected_ids"], strict=True):
            lost = 0 if len(p) else 1
            out.append((max(len(c) - lost, 0), max(len(r) - lost, 0)))
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 2)


def first_batch_positions(n: int, batch_size: int) -> list[int]:
    """The positions of this rank's first batch in ``compute_table``'s order."""
    world, rank = dist.world_size(), dist.rank()
    per_rank = math.ceil(n / world)
    return [min(rank + k * world, n - 1) for k in range(min(batch_size, per_rank))]


def _score(forward, rows_batch: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    s, c = forward({k: v.to(device) for k, v in rows_batch.items()})
    b = rows_batch["row"].shape[0]
    return torch.stack([s[:b], s[b:]], dim=1).float().cpu(), torch.stack([c[:b], c[b:]], dim=1).float().cpu()


@torch.no_grad()
def compute_table(
    forward: Callable[[dict], tuple[torch.Tensor, torch.Tensor]],
    split: Split,
    batch_size: int,
    collate_fn: Callable[[list[dict]], dict],
    device: torch.device,
) -> ReferenceTable:
    """Score every row of ``split`` with ``forward`` (batch from ``collate_fn`` -> (sums, counts) over 2B sequences)."""
    ds = split.dataset
    n, world, rank = len(ds), dist.world_size(), dist.rank()
    if n == 0:
        raise ValueError(f"{split.source}: no rows to score")
    per_rank = math.ceil(n / world)
    # Every rank runs the same number of batches (ZeRO-3 forwards are collective); the tail repeats the last row.
    positions = [min(rank + k * world, n - 1) for k in range(per_rank)]
    rows, sums, counts = [], [], []
    for start in range(0, per_rank, batch_size):
        batch = collate_fn([ds[p] for p in positions[start : start + batch_size]])
        s, c = _score(forward, batch, device)
        rows.append(batch["row"])
        sums.append(s)
        counts.append(c)
    parts = dist.gather_objects((torch.cat(rows), torch.cat(sums), torch.cat(counts)))
    all_rows = torch.cat([p[0] for p in parts])
    size = int(all_rows.max()) + 1
    table = ReferenceTable(torch.full((size, 2), float("nan")), torch.zeros((size, 2)))
    table.sums[all_rows] = torch.cat([p[1] for p in parts])
    table.counts[all_rows] = torch.cat([p[2] for p in parts])
    return table


def verify_table(
    data: dict, key: str, split: Split, spot_check: Callable[[ReferenceTable], str] | None = None
) -> tuple[ReferenceTable | None, str]:
    """(the table, "") when a loaded cache file holds what ``key`` names for ``split``, else (None, the reason)."""
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return None, "written by another cache version"
    if data.get("key") != key:
        return None, "stored under another key"
    table, rows, stored_rows = ReferenceTable(data["sums"], data["counts"]), split_rows(split), data["rows"]
    if not torch.equal(stored_rows.to(torch.int64), rows):
        return None, "its row ids differ from the split's"
    if table.digest(key, rows) != data.get("digest"):
        return None, "its contents do not match their stored digest (edited or damaged)"
    try:
        sums, counts = table.lookup(rows)
    except KeyError as e:
        return None, str(e)
    if not torch.isfinite(sums).all():
        return None, "non-finite reference log-probs"
    if not torch.equal(counts, expected_counts(split)):
        return None, "its token counts differ from the split's response lengths"
    reason = spot_check(table) if spot_check is not None else ""
    return (None, reason) if reason else (table, "")


def load_or_compute(
    split: Split,
    key: str,
    cache_dir: Path,
    compute: Callable[[], ReferenceTable],
    name: str,
    spot_check: Callable[[ReferenceTable], str] | None = None,
) -> ReferenceTable:
    """The cached table for ``key`` if it verifies (``verify_table``; every rank must agree), or ``compute()`` it,
    write it (rank 0, atomically) and return it."""
    path = Path(cache_dir) / "reference_logps" / f"{key}.pt"
    table, reason = None, "not cached"
    if path.exists():
        try:
            data = torch.load(path, weights_only=True)
        except Exception as e:  # noqa: BLE001 - an unreadable cache file is recomputed, never trusted
            data, reason = None, f"unreadable ({type(e).__name__}: {e})"
        if data is not None:
            table, reason = verify_table(data, key, split, spot_check)
        if not all(dist.gather_objects(table is not None)):
            table = None
        if table is not None:
            log.info("%s reference log-probs: cached %s (verified)", name, path)
            return table
        log.warning(
            "%s reference log-probs: %s does not verify (%s): computing them again", name, path, reason
        )
    log.info("%s reference log-probs: computing %d rows (cache %s)", name, len(split.dataset), path)
    table = compute()
    if dist.is_main():
        rows = split_rows(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(
            {
                "version": CACHE_VERSION,
                "key": key,
                "rows": rows,
                "sums": table.sums,
                "counts": table.counts,
                "digest": table.digest(key, rows),
                "source": split.source,
            },
            tmp,
        )
        os.replace(tmp, path)
    dist.barrier()
    return table


def spot_checker(
    forward, split: Split, batch_size: int, collate_fn, device, per_token_tolerance: float
) -> Callable[[ReferenceTable], str]:
    """A check that scores this rank's first batch again with ``forward`` (the reference) and compares it with the
    table: '' when every sum is within ``per_token_tolerance`` nats per token (+ 1e-3), else the reason."""

    @torch.no_grad()
    def check(table: ReferenceTable) -> str:
        batch = collate_fn([split.dataset[p] for p in first_batch_positions(len(split.dataset), batch_size)])
        sums, counts = _score(forward, batch, device)
        cached, _ = table.lookup(batch["row"])
        worst = ((sums - cached).abs() - per_token_tolerance * counts).max().item()
        return (
            ""
            if worst <= 1e-3
            else f"one batch scored again differs from it by {worst:.3g} nats beyond tolerance"
        )

    return check
