"""Per-sequence log-probs of response tokens: one forward over chosen and rejected together.

Two batch layouts (``align.preference_data``): ``collate`` gives 2B right-padded rows (chosen rows first, then
rejected) with ``loss_mask`` marking response tokens; ``collate_shared`` gives one row per pair, prompt + chosen +
rejected, where a 4D mask hides the chosen from the rejected tokens and position ids restart the rejected right
after the prompt, so the prompt runs once (``model.share_prompt``). Either way the backbone runs once; only hidden
states at response positions go through ``lm_head``, in chunks of ``chunk_size`` tokens that are recomputed in
backward, so full-vocabulary float32 logits are never held for the whole batch. ``naive_sequence_logps`` is the
textbook version (full logits, ``log_softmax``) that the parity tests compare against.
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


def _gathered_logps(
    model, hidden, input_ids, t_row, t_pred, t_pos, t_seq, n_seq: int, chunk_size: int
) -> SequenceLogps:
    """Sum, per sequence ``t_seq``, the log-prob of token ``input_ids[t_row, t_pos]`` given the hidden state at
    ``[t_row, t_pred]``. Index tensors (M,), one entry per response token."""
    _, lm_head = causal_lm_parts(model)
    h = hidden[t_row, t_pred]  # (M, H)
    labels = input_ids[t_row, t_pos]  # (M,)
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    parts = []
    for start in range(0, h.shape[0], chunk_size):
        args = (lm_head, h[start : start + chunk_size], labels[start : start + chunk_size], softcap)
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_token_logps, *args, use_reentrant=False))
        else:
            parts.append(_token_logps(*args))
    token_logps = torch.cat(parts) if parts else _at_least_fp32(h.new_zeros(0))
    sums = torch.zeros(n_seq, dtype=token_logps.dtype, device=input_ids.device).index_add(
        0, t_seq, token_logps
    )
    return SequenceLogps(sums, torch.bincount(t_seq, minlength=n_seq))


def sequence_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    loss_mask: Tensor,
    chunk_size: int = 1024,
) -> SequenceLogps:
    """Log-probs of the tokens where ``loss_mask`` is 1, summed per sequence. Inputs (N, T); outputs (N,)."""
    backbone, _ = causal_lm_parts(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    rows, cols = loss_mask[:, 1:].bool().nonzero(as_tuple=True)  # token t+1 is predicted from position t
    return _gathered_logps(
        model, hidden, input_ids, rows, cols, cols + 1, rows, input_ids.shape[0], chunk_size
    )


def shared_prompt_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    tgt_row: Tensor,
    tgt_pred: Tensor,
    tgt_pos: Tensor,
    tgt_seq: Tensor,
    chunk_size: int = 1024,
) -> SequenceLogps:
    """Per-sequence log-probs from one row per pair (``collate_shared``): inputs (B, L), a (B, 1, L, L) boolean
    mask, explicit predecessor positions; outputs (2B,) in ``collate``'s order (chosen rows, then rejected)."""
    backbone, _ = causal_lm_parts(model)
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    return _gathered_logps(
        model, hidden, input_ids, tgt_row, tgt_pred, tgt_pos, tgt_seq, 2 * input_ids.shape[0], chunk_size
    )


def naive_sequence_logps(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor
) -> SequenceLogps:
    """Reference implementation: full logits from ``model(...)``, ``log_softmax``, masked sum (tests only)."""
    logits = _at_least_fp32(model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits)
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = loss_mask[:, 1:].to(logps.dtype)
    return SequenceLogps((logps * mask).sum(dim=1), mask.sum(dim=1).long())


class PolicyLogps(nn.Module):
    """Wraps a causal LM so that its forward returns per-sequence log-probs (what DeepSpeed's engine calls), for
    either batch layout."""

    def __init__(self, model: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor | None = None, **shared: Tensor
    ) -> tuple[Tensor, Tensor]:
        if shared:
            out = shared_prompt_logps(
                self.model, input_ids, attention_mask, chunk_size=self.chunk_size, **shared
            )
        else:
            out = sequence_logps(self.model, input_ids, attention_mask, loss_mask, self.chunk_size)
        return out.sums, out.counts


MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "loss_mask",
    "position_ids",
    "tgt_row",
    "tgt_pred",
    "tgt_pos",
    "tgt_seq",
)


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The entries of a collated batch that ``PolicyLogps.forward`` takes (not ``row`` or ``n_tokens``)."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}
