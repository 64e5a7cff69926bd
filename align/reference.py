"""Reference log-probs: computed once, cached on disk, reused by every run that can.

The cache key is the reference weights (``models.model_fingerprint``), the tokenized split's content hash and
the precision, so a sweep over methods, betas or learning rates on the same model and data computes it once.
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

CACHE_VERSION = 1  # bump when the log-prob computation changes meaning


@dataclass
class ReferenceTable:
    """Reference sums and counts per source row of one split: ``sums``/``counts`` are (max_row + 1, 2),
    column 0 chosen, column 1 rejected; rows absent from the split hold NaN."""

    sums: torch.Tensor
    counts: torch.Tensor

    def lookup(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sums (B, 2), counts (B, 2)) for source rows (B,)."""
        sums, counts = self.sums[rows], self.counts[rows]
        if torch.isnan(sums).any():
            raise KeyError("reference log-probs missing for some rows: the cache does not match this data")
        return sums, counts


def cache_key(model_fp: str, split: Split, precision: str) -> str:
    blob = json.dumps(
        {"v": CACHE_VERSION, "model": model_fp, "data": split.fingerprint, "precision": precision}
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


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
    per_rank = math.ceil(n / world)
    # Every rank runs the same number of batches (ZeRO-3 forwards are collective); the tail repeats the last row.
    positions = [min(rank + k * world, n - 1) for k in range(per_rank)]
    rows, sums, counts = [], [], []
    for start in range(0, per_rank, batch_size):
        batch = collate_fn([ds[p] for p in positions[start : start + batch_size]])
        s, c = forward({k: v.to(device) for k, v in batch.items()})
        b = batch["row"].shape[0]
        rows.append(batch["row"])
        sums.append(torch.stack([s[:b], s[b:]], dim=1).float().cpu())
        counts.append(torch.stack([c[:b], c[b:]], dim=1).float().cpu())
    parts = dist.gather_objects((torch.cat(rows), torch.cat(sums), torch.cat(counts)))
    all_rows = torch.cat([p[0] for p in parts])
    size = int(all_rows.max()) + 1
    table = ReferenceTable(torch.full((size, 2), float("nan")), torch.zeros((size, 2)))
    table.sums[all_rows] = torch.cat([p[1] for p in parts])
    table.counts[all_rows] = torch.cat([p[2] for p in parts])
    return table


def load_or_compute(
    split: Split, key: str, cache_dir: Path, compute: Callable[[], ReferenceTable], name: str
) -> ReferenceTable:
    """The cached table for ``key``, or ``compute()`` it, write it (rank 0, atomically) and return it."""
    path = Path(cache_dir) / "reference_logps" / f"{key}.pt"
    if path.exists():
        log.info("%s reference log-probs: cached %s", name, path)
        data = torch.load(path, weights_only=True)
        return ReferenceTable(data["sums"], data["counts"])
    log.info("%s reference log-probs: computing %d rows (cache %s)", name, len(split.dataset), path)
    table = compute()
    if dist.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"sums": table.sums, "counts": table.counts, "source": split.source}, tmp)
        os.replace(tmp, path)
    dist.barrier()
    return table
