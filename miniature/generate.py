"""Batched generation from a causal LM for chat prompts: greedy (held-out accuracy) or sampled (on-policy pairs).

The prompt is what the model sees at evaluation: the chat template with the generation prompt, BOS once in front
(as lm-eval's HF backend adds it), left-padded in batches. Generation stops at EOS or ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def render_prompt(tokenizer, question: str) -> str:
    """The chat-formatted prompt text for one user question, ending in the generation prompt."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


@torch.no_grad()
def generate(
    model,
    tokenizer,
    questions: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 128,
    num_samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[list[str]]:
    """For each question, ``num_samples`` answers (decoded, special tokens dropped); greedy when temperature is 0.

    Sampling is seeded (``seed``) and deterministic for a fixed batch size and thread count.
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompts = [tokenizer(render_prompt(tokenizer, q)).input_ids for q in questions]
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(num_samples)]
    out: list[list[str]] = [[] for _ in questions]
    for start in range(0, len(flat), batch_size):
        chunk = flat[start : start + batch_size]
        width = max(len(p) for _, p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for _, p in chunk])
        mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for _, p in chunk])[:, None]).long()
        position = (mask.cumsum(1) - 1).clamp(min=0)
        done = torch.zeros(len(chunk), dtype=torch.bool)
        new = []
        past = None
        step_ids, step_pos = ids, position
        for _ in range(max_new_tokens):
            res = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, past_key_values=past)
            past = res.past_key_values
            logits = res.logits[:, -1].float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1)
                nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
            else:
                nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            new.append(nxt)
            done |= nxt == eos
            if done.all():
                break
            step_ids = nxt[:, None]
            step_pos = step_pos[:, -1:] + 1
            mask = torch.cat([mask, mask.new_ones(len(chunk), 1)], 1)
        tokens = torch.stack(new, 1).tolist() if new else [[] for _ in chunk]
        for (i, _), row in zip(chunk, tokens, strict=True):
            if eos in row:
                row = row[: row.index(eos)]
            out[i].append(tokenizer.decode(row, skip_special_tokens=True))
    return out
