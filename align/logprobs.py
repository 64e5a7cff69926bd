"""Per-sequence log-probs of response tokens: one forward over chosen and rejected together.

The batch holds 2B sequences (chosen rows first, then rejected), right-padded, with ``loss_mask`` marking the
response tokens. The backbone runs once; only hidden states at response positions go through ``lm_head``, in
chunks of ``chunk_size`` tokens that are recomputed in backward, so full-vocabulary float32 logits are never held
for the whole batch. ``naive_sequence_logps`` is the textbook version (full logits, ``log_softmax``) that the
parity tests compare against.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class SequenceLogps(NamedTuple):
    """Sums of response-token log-probs and response-token counts, both (N,)."""

    sums: Tensor
    counts: Tensor

    @property
    def means(self) -> Tensor:
        return self.sums / self.counts.clamp(min=1)


def causal_lm_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone, lm_head) of a transformers causal LM, also inside a peft wrapper."""
    if hasattr(
        model, "get_base_model"
    ):  # peft: adapters are injected in place, so the inner modules carry them
        model = model.get_base_model()
    return getattr(model, model.base_model_prefix), model.get_output_embeddings()


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _token_logps(lm_head: nn.Module, hidden: Tensor, labels: Tensor, softcap: float | None) -> Tensor:
    logits = _at_least_fp32(lm_head(hidden))  # (M, V)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def sequence_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    loss_mask: Tensor,
    chunk_size: int = 1024,
) -> SequenceLogps:
    """Log-probs of the tokens where ``loss_mask`` is 1, summed per sequence. Inputs (N, T); outputs (N,)."""
    backbone, lm_head = causal_lm_parts(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    target = loss_mask[:, 1:].bool()  # token t+1 is predicted from position t
    rows, cols = target.nonzero(as_tuple=True)  # (M,)
    h = hidden[:, :-1][rows, cols]  # (M, H)
    labels = input_ids[:, 1:][rows, cols]  # (M,)
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    parts = []
    for start in range(0, h.shape[0], chunk_size):
        args = (lm_head, h[start : start + chunk_size], labels[start : start + chunk_size], softcap)
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_token_logps, *args, use_reentrant=False))
        else:
            parts.append(_token_logps(*args))
    token_logps = torch.cat(parts) if parts else _at_least_fp32(h.new_zeros(0))
    sums = torch.zeros(input_ids.shape[0], dtype=token_logps.dtype, device=input_ids.device)
    sums = sums.index_add(0, rows, token_logps)
    return SequenceLogps(sums, target.sum(dim=1))


def naive_sequence_logps(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor
) -> SequenceLogps:
    """Reference implementation: full logits from ``model(...)``, ``log_softmax``, masked sum (tests only)."""
    logits = _at_least_fp32(model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits)
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = loss_mask[:, 1:].to(logps.dtype)
    return SequenceLogps((logps * mask).sum(dim=1), mask.sum(dim=1).long())


class PolicyLogps(nn.Module):
    """Wraps a causal LM so that its forward returns per-sequence log-probs (what DeepSpeed's engine calls)."""

    def __init__(self, model: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor) -> tuple[Tensor, Tensor]:
        out = sequence_logps(self.model, input_ids, attention_mask, loss_mask, self.chunk_size)
        return out.sums, out.counts
