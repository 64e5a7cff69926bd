"""TRL's dataset formats load as TRL reads them: the same prompt and answers, whichever form a row takes."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from align.config import compose
from align.preference_data import load_preference_data

Q, A, B = "What is 2 + 3?", "5", "6"
FORMS = {
    # conversational, implicit prompt (UltraFeedback): whole conversations
    "implicit": {
        "chosen": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}],
        "rejected": [{"role": "user", "content": Q}, {"role": "assistant", "content": B}],
    },
    # conversational, explicit prompt (trl-lib/ultrafeedback_binarized): prompt list, assistant-only answers
    "explicit": {
        "prompt": [{"role": "user", "content": Q}],
        "chosen": [{"role": "assistant", "content": A}],
        "rejected": [{"role": "assistant", "content": B}],
    },
    # standard, explicit prompt: strings
    "standard": {"prompt": Q, "chosen": A, "rejected": B},
}


def test_trl_forms_give_the_same_tokens(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    seen = {}
    for name, row in FORMS.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(row) + "\n")
        cfg = compose(
            ["output_dir=unused", "dataset=local_file", f"dataset.path={path}", "dataset.eval_fraction=0"]
        ).dataset
        got = load_preference_data(cfg, tok, seed=0).train.dataset[0]
        seen[name] = (got["prompt_ids"], got["chosen_ids"], got["rejected_ids"])
    assert len(set(map(str, seen.values()))) == 1, seen
    assert tok.decode(seen["explicit"][1]) == "5</s>"
