"""Tiny models and data built in memory for the tests (no downloads)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import datasets

from hf_unlearn.data.demo import make_demo_dataset
from hf_unlearn.tiny import finetune_qa, tiny_llama, train_tokenizer

SHARED_TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"


@functools.lru_cache(maxsize=1)
def _demo_world():
    data = make_demo_dataset(n_people=8, n_forget=2, n_holdout=1)
    texts = [r["question"] + " " + r["answer"] for split in data.values() for r in split]
    texts += ["I don't know the answer to that. I'm not sure about that. Sorry, I have no idea."]
    tok = train_tokenizer(texts, vocab_size=500)
    model = tiny_llama(tok, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    finetune_qa(
        model,
        tok,
        datasets.concatenate_datasets([data["forget"], data["retain"]]),
        "/tmp/hfu-tests-ft",
        epochs=40,
        batch_size=8,
    )
    return data, tok, model


def demo_world():
    """(DatasetDict forget/retain/holdout, tokenizer, fine-tuned tiny Llama) — a fresh model copy each call."""
    data, tok, model = _demo_world()
    return data, tok, copy.deepcopy(model)
