"""Tiny models and data built in memory for the tests (no downloads)."""

from __future__ import annotations

import copy
import functools
import os
import socket
import subprocess
import sys
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


def run_torchrun(script, *args, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc script args`` (gloo on CPU) on a free port; asserts success."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with socket.socket() as sock:  # a free port, so parallel runs of the suite do not collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        port,
    ]
    proc = subprocess.run(
        [*cmd, str(script), *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
