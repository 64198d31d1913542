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


def _free_port() -> str:
    """A free local port, so parallel runs of the suite do not collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _launch(cmd: list[str], timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:  # the first traceback names the failing rank's error; the tail, the launcher's
        err = proc.stderr
        first = err.find("Traceback")
        raise AssertionError(
            f"{' '.join(cmd)} failed:\n{err[first : first + 4000] if first >= 0 else ''}\n…\n{err[-2000:]}"
        )
    return proc


def run_torchrun(script, *args, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc script args`` (gloo on CPU) on a free port; asserts success."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    return _launch([*cmd, "--master_port", _free_port(), str(script), *map(str, args)], timeout)


def run_accelerate(
    config, script, *args, nproc: int = 2, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file config --num_processes nproc script args`` on a free port (the
    script chooses CPU/gloo itself), with ``env`` added to the environment; asserts success."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    cmd += ["--num_processes", str(nproc), "--main_process_port", _free_port()]
    return _launch([*cmd, str(script), *map(str, args)], timeout, env)
