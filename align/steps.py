"""What one micro-batch consumes and computes: the order of the training rows, the method's loss on per-sequence
log-probs, and the statistics logged from it (pair-weighted, accumulated on the device).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from align import distributed as dist
from align.losses import Method, hyperparameters, mi_estimates


def preference_loss(
    method: Method,
    method_cfg,
    sums: torch.Tensor,
    counts: torch.Tensor,
    ref: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The method's loss on one micro-batch and the statistics it logs.

    ``sums``/``counts``: policy response log-prob sums and token counts, (2B,), chosen rows first.
    ``ref``: reference (sums, counts), each (B, 2) with columns chosen/rejected, or None. Reference-free methods
    ignore it in their loss; with it, every method logs ``displacement/*``: the policy's log-probs minus the
    reference's (chosen and rejected sums, the chosen per token, the fraction of chosen below their reference).
    """
    b = sums.shape[0] // 2
    counts = counts.clamp(min=1).to(sums.dtype)
    means = sums / counts
    pick = means if method_cfg.length_normalize else sums
    rc = rr = None
    if method.needs_reference:
        ref_sums, ref_counts = ref
        ref_pick = ref_sums / ref_counts.clamp(min=1) if method_cfg.length_normalize else ref_sums
        rc, rr = ref_pick[:, 0].to(sums), ref_pick[:, 1].to(sums)
    out = method.fn(
        pick[:b], pick[b:], rc, rr, **{k: method_cfg[k] for k in hyperparameters(method_cfg.name)}
    )
    nll = -means[:b]  # per-token mean NLL of each chosen response
    displacement = {}
    if (
        ref is not None
    ):  # likelihood displacement: the policy's log-probs against the reference's, every method
        ref_sums, ref_counts = ref
        ref_means = ref_sums / ref_counts.clamp(min=1)
        gap = (means[:b] - ref_means[:, 0].to(sums)).detach()  # (B,) per token
        displacement = {
            "displacement/chosen": (sums[:b].detach() - ref_sums[:, 0].to(sums)).mean(),
            "displacement/rejected": (sums[b:].detach() - ref_sums[:, 1].to(sums)).mean(),
            "displacement/chosen_per_token": gap.mean(),
            "displacement/chosen_below_ref": (gap < 0).float().mean(),
        }
    loss = out.losses.mean()
    if method_cfg.sft_weight:
        loss = loss + method_cfg.sft_weight * nll.mean()
    cw, cl = out.chosen_rewards, out.rejected_rewards
    stats = {
        "loss": loss.detach(),
        "rewards/chosen": cw.mean(),
        "rewards/rejected": cl.mean(),
        "rewards/margins": (cw - cl).mean(),
        "rewards/accuracies": (cw > cl).float().mean(),
        "logps/chosen": sums[:b].detach().mean(),
        "logps/rejected": sums[b:].detach().mean(),
        "logps/chosen_mean": means[:b].detach().mean(),
        "logps/rejected_mean": means[b:].detach().mean(),
        "nll/chosen": nll.detach().mean(),
        **mi_estimates(cw, cl),
        **displacement,
    }
    return loss, stats


class Averager:
    """Pair-weighted means of per-batch statistics, accumulated on their device (no host sync per batch);
    ``read`` sums across ranks and copies once. Every rank must ``add`` at least once before ``read``."""

    def __init__(self):
        self.keys: list[str] | None = None
        self.total: torch.Tensor | None = (
            None  # (K + 1,): weighted sums of the K statistics, then the pair count
        )

    def add(self, stats: dict[str, torch.Tensor], pairs: float) -> None:
        if self.keys is None:
            self.keys = sorted(stats)
        vec = torch.stack([stats[k].detach().double() for k in self.keys])
        vec = torch.cat([vec * pairs, vec.new_tensor([pairs])])
        self.total = vec if self.total is None else self.total + vec

    def read(self) -> dict[str, float]:
        if self.total is None:
            return {}
        vec = dist.all_reduce_sum(self.total).cpu()
        pairs = max(float(vec[-1]), 1.0)
        return {k: float(v) / pairs for k, v in zip(self.keys, vec[:-1], strict=True)}


# --------------------------------------------------------------------------------------------- batching


@dataclass
class BatchOrder:
    """Deterministic, resumable order of micro-batches: epoch e is a permutation seeded with seed + e; each
    global micro-batch of ``micro_bs * world`` rows is split across ranks. The last partial batch is dropped.

    With ``lengths`` (``trainer.group_by_length``), each run of 64 global batches of the permutation is sorted by
    length and the batches are then shuffled, as Hugging Face's LengthGroupedSampler does: less padding, still random.
    """

    n: int
    micro_bs: int
    seed: int
    lengths: list[int] | None = None
    _epoch: tuple[int, list[int]] | None = field(default=None, repr=False)

    @property
    def per_epoch(self) -> int:
        return self.n // (self.micro_bs * dist.world_size())

    def epoch_order(self, epoch: int) -> list[int]:
        if self._epoch is None or self._epoch[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n, generator=gen).tolist()
            if self.lengths is not None:
                g = self.micro_bs * dist.world_size()
                mega = 64 * g
                order = [
                    i
                    for s in range(0, self.n, mega)
                    for i in sorted(order[s : s + mega], key=lambda i: -self.lengths[i])
                ]
                batches = [order[s : s + g] for s in range(0, self.per_epoch * g, g)]
                order = [i for b in torch.randperm(len(batches), generator=gen).tolist() for i in batches[b]]
            self._epoch = (epoch, order)
        return self._epoch[1]

    def positions(self, micro_index: int) -> list[int]:
        epoch, i = divmod(micro_index, self.per_epoch)
        g = self.micro_bs * dist.world_size()
        start = i * g + dist.rank() * self.micro_bs
        return self.epoch_order(epoch)[start : start + self.micro_bs]


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
