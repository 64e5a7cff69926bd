"""The chunked one-forward log-probs against a naive per-token loop, in value and in gradient."""

from __future__ import annotations

import math

import pytest
import torch

from align.logprobs import naive_sequence_logps, sequence_logps
from align.preference_data import collate


@pytest.fixture(scope="module")
def model_and_batch(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    # Pairs of different prompt and answer lengths, so padding and masking matter.
    rows = [
        {"prompt_ids": [2, 10, 11, 12], "chosen_ids": [20, 21, 3], "rejected_ids": [22, 3], "row": 0},
        {"prompt_ids": [2, 13], "chosen_ids": [23, 24, 25, 26, 3], "rejected_ids": [27, 28, 29, 3], "row": 1},
        {
            "prompt_ids": [2, 14, 15, 16, 17, 18],
            "chosen_ids": [30, 3],
            "rejected_ids": [31, 32, 33, 34, 35, 3],
            "row": 2,
        },
    ]
    return model, rows, collate(rows, pad_id=1)


def loop_logps(model, rows):
    """One sequence at a time, one token at a time: log p(token | everything before it), summed over answers."""
    out = []
    for key in ("chosen_ids", "rejected_ids"):
        for r in rows:
            ids = torch.tensor([r["prompt_ids"] + r[key]])
            logits = model(input_ids=ids).logits[0]
            total = 0.0
            for pos in range(len(r["prompt_ids"]), ids.shape[1]):
                total = total + torch.log_softmax(logits[pos - 1], dim=-1)[ids[0, pos]]
            out.append(total)
    return torch.stack(out)


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_chunked_logps_match_per_token_loop(model_and_batch, chunk):
    model, rows, b = model_and_batch
    fast = sequence_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"], chunk_size=chunk)
    slow = loop_logps(model, rows)
    torch.testing.assert_close(fast.sums, slow, rtol=1e-9, atol=1e-9)
    expected_counts = [len(r[k]) for k in ("chosen_ids", "rejected_ids") for r in rows]
    assert fast.counts.tolist() == expected_counts
    torch.testing.assert_close(fast.means, fast.sums / torch.tensor(expected_counts, dtype=fast.sums.dtype))


def test_gradients_match_naive_full_logits(model_and_batch):
    model, _, b = model_and_batch
    weights = torch.linspace(-1, 1, b["input_ids"].shape[0], dtype=torch.float64)

    def grad_of(fn):
        model.zero_grad()
        (
            fn(model, b["input_ids"], b["attention_mask"], b["loss_mask"]).sums.double() * weights
        ).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    fast = grad_of(lambda *a: sequence_logps(*a, chunk_size=2))
    naive = grad_of(naive_sequence_logps)
    for name in naive:
        torch.testing.assert_close(fast[name], naive[name], rtol=1e-9, atol=1e-12, msg=name)


def test_padding_does_not_change_logps(model_and_batch):
    """A pair scored alone equals the same pair scored in a padded batch."""
    model, rows, b = model_and_batch
    alone = collate(rows[:1], pad_id=1)
    one = sequence_logps(model, alone["input_ids"], alone["attention_mask"], alone["loss_mask"]).sums
    many = sequence_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"]).sums
    torch.testing.assert_close(one, many[[0, 3]], rtol=1e-9, atol=1e-9)
    assert all(math.isfinite(x) for x in many.tolist())


def test_shared_prompt_layout_gives_the_same_logps_and_gradients(tiny_model_dir):
    """collate_shared (prompt once, 4D mask, restarted positions) = collate (two rows per pair), in float64."""
    from transformers import AutoModelForCausalLM

    from align.logprobs import PolicyLogps, model_inputs
    from align.preference_data import collate_shared

    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float64, attn_implementation="sdpa"
    )
    rows = [
        {"prompt_ids": [2, 10, 11, 12], "chosen_ids": [20, 21, 3], "rejected_ids": [22, 3], "row": 0},
        {"prompt_ids": [2], "chosen_ids": [23, 24, 25, 26, 3], "rejected_ids": [27, 28, 29, 3], "row": 1},
        {
            "prompt_ids": [2, 14, 15, 16, 17, 18],
            "chosen_ids": [30],
            "rejected_ids": [31, 32, 33, 34, 35, 3],
            "row": 2,
        },
    ]
    policy = PolicyLogps(model, chunk_size=4)
    weights = torch.linspace(-1, 1, 6, dtype=torch.float64)

    def run_layout(batch):
        model.zero_grad()
        sums, counts = policy(**model_inputs(batch))
        (sums * weights).sum().backward()
        return sums.detach(), counts, {n: p.grad.clone() for n, p in model.named_parameters()}

    a_sums, a_counts, a_grads = run_layout(collate(rows, pad_id=1))
    shared = collate_shared(rows, pad_id=1)
    b_sums, b_counts, b_grads = run_layout(shared)
    torch.testing.assert_close(b_sums, a_sums, rtol=1e-9, atol=1e-9)
    assert b_counts.tolist() == a_counts.tolist()
    # Llama's RMSNorm computes in float32 even for a float64 model, and here the prompt positions sum the chosen's
    # and the rejected's gradients before that rounding: agreement to float32 precision is all that can hold.
    for name in a_grads:
        scale = a_grads[name].abs().max().item()
        torch.testing.assert_close(b_grads[name], a_grads[name], rtol=0, atol=1e-6 * max(scale, 1.0))
    assert shared["input_ids"].shape == (3, 13)  # 3 rows of at most 6 + 1 + 6 tokens instead of 6 rows
    assert int(shared["n_tokens"]) == int(collate(rows, pad_id=1)["n_tokens"])
