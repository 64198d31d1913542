#!/usr/bin/env python
"""Miniature TOFU benchmark: GA, GradDiff, NPO, NPO+RT, IDK and FLAT (KL, JS, Pearson, TV) on the real
TOFU questions (``../shared/data/tofu``), with a small Llama trained here on the CPU.

    python benchmarks/tofu.py                        # forget01/05/10, all methods (~30 min on 2 cores)
    python benchmarks/tofu.py --quick                # smoke configuration (~1-2 min)
    python benchmarks/tofu.py --splits forget05 --methods graddiff flat_kl

Writes ``benchmarks/results/tofu.json`` (every number, the configuration, library versions, stage
times), ``tofu.md`` (tables, cost table, targets met/missed, computed from the numbers) and
``tofu.png`` (forget quality vs model utility). Trained target / retain models are cached under
``benchmarks/.cache/`` keyed by a hash of their recipe, so reruns skip their training.

Design (the miniature TOFU protocol; the Markdown output repeats it)
--------------------------------------------------------------------
* Data: the local TOFU files (``$HF_UNLEARN_TOFU_PATH`` or ``<repo>/../shared/data/tofu``; the script
  stops with a message when they are absent). forget01 ⊂ forget05 ⊂ forget10 (20 authors × 20 QA),
  retain.jsonl (15 other authors), real_authors and world_facts (utility probes with 3 perturbed
  answers each), idk.jsonl (refusal templates).
* Holdout: the last 3 retain authors (60 rows) are never trained on by any model; they are the
  "unseen" non-members of the min-k% membership-inference attack (forget vs holdout AUC, 0.5 = the
  forget set looks unseen). "retain" below always means retain.jsonl minus these authors (240 rows).
* Tokenizer: byte-level BPE (``hf_unlearn.tiny.train_tokenizer``, 4,000 tokens) trained on all TOFU
  text in the plain prompt format (questions, answers, perturbed answers, idk.jsonl refusals and
  ``hf_unlearn.data.templates.REFUSALS``). It has no chat template, so every model sees
  ``"Question: {q}\\nAnswer: {a}</s>"`` with the loss on answer tokens only.
* Pre-training stand-in: a tiny model trained from scratch knows nothing about real authors or world
  facts, so its TOFU model utility (a harmonic mean that includes those splits) would be ~0 for every
  model. real_authors and world_facts are therefore added to the training set of *every* model (target
  and retain models alike), as the analogue of the knowledge TOFU's pre-trained Llama brings; model
  utility then measures how much of that knowledge (and of the retain authors) unlearning destroys.
* Target model: ``tiny_llama`` (hidden 128, 4 layers, 4 heads, ~1.6 M parameters) fine-tuned with
  ``finetune_qa`` (30 epochs, batch 8, peak lr 3e-3, cosine) on forget10 ∪ retain ∪ real_authors ∪
  world_facts. Retain model of split S: the same initialisation and recipe on retain ∪ (forget10 − S) ∪
  real_authors ∪ world_facts, i.e. the gold standard that never saw S.
* Unlearning: every method gets TOFU's budget and schedule: 5 epochs over the forget split, batch 32,
  AdamW (weight decay 0.01), linear decay after a 1-epoch warm-up. One learning rate for all methods,
  by TOFU's rule: TOFU unlearns at the learning rate it fine-tuned the target with (1e-5 for both), so
  here unlearning runs at the target's training peak, 3e-3. (A first full run used 1e-4, TOFU's
  unlearning lr / Llama-2's pre-training peak = 1/30 of ours; there no method moved the model at all:
  forget probability stayed >= 0.98 and forget quality at the target's for every method, a benchmark
  that cannot tell methods apart. That rule was dropped for this one before seeing any result of it.)
  Every method is also run at 1e-4, 3e-4 and 1e-3 on forget05 (``--sweep-lrs``) and reported in a
  sensitivity table; the targets are judged on the main lr only.
  GA, NPO and FLAT use forget data only (NPO with β = 0.1 against a frozen copy of the
  target); GradDiff, IDK and NPO+RT add the retain set (240 rows, weight 1). IDK and FLAT use the
  idk.jsonl refusals as template answers (sampled per row with the seed). FLAT uses the paper's
  per-sample mean answer-token probability.
* Evaluation (``hf_unlearn.evaluation.evaluate_tofu``) of every unlearned model and of the target and
  retain models, per split: the forget split (all rows), retain (a fixed, seeded 100-row sample of the
  240, for speed), real_authors (100) and world_facts (117). Forget quality = KS-test p-value between
  the model's forget truth ratios and the retain model's; model utility = harmonic mean of
  probability, ROUGE-L recall and truth-ratio score on retain, real_authors, world_facts. Forget and
  retain rows have no hand-written perturbations in the local files: the library builds 3 per row from
  other authors' answers to the question at the same position. Greedy generations are capped at 64
  new tokens, and all sequences at 128 tokens.
* Cost: the timing split's runs (forget05 by default) are run back to back, each in its own
  subprocess (same batch size, sequence lengths and data for all methods): the full-budget run whose
  model is evaluated, then (``timing_rounds`` - 1) further short timing-only rounds in reverse order to
  average out drift of the shared machine. Step time = wall time between ``on_step_begin`` and
  ``on_step_end`` (forward, backward, optimizer step; data loading excluded), median over steps after
  the first 2 of each run. Memory: a thread in the child samples its RSS every 2 ms from trainer
  construction to the end of ``train()``; reported are that peak and the peak minus the RSS right after
  loading the model (what the method adds: reference copy, extra views, activations, optimizer state),
  absolute (MB) and relative to GradDiff. The kernel's exact high-water mark ``ru_maxrss`` of each child
  is stored too, but it was not chosen: for a model this small it is set by the loading phase (imports,
  datasets, tokenizer), which peaks above training, so it reads the same for every method.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from _common import (
    RSSSampler,
    Stages,
    atomic_save,
    current_rss,
    fmt,
    log,
    make_step_timer,
    max_rss,
    quiet_transformers,
    ratio,
    recipe_hash,
    sha256_file,
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
DEFAULT_CACHE = REPO / "benchmarks" / ".cache"
CACHE_VERSION = 1
ALL_SPLITS = ("forget01", "forget05", "forget10")
DATA_FILES = ("forget01", "forget05", "forget10", "retain", "real_authors", "world_facts", "idk")

# method id -> (label, trainer name, extra config, uses the retain set)
METHODS: dict[str, tuple[str, str, dict, bool]] = {
    "ga": ("GA", "GATrainer", {}, False),
    "graddiff": ("GradDiff", "GradDiffTrainer", {}, True),
    "npo": ("NPO", "NPOTrainer", {}, False),
    "npo_rt": ("NPO+RT", "NPOTrainer", {}, True),
    "idk": ("IDK", "IDKTrainer", {}, True),
    "flat_kl": ("FLAT (KL)", "FLATTrainer", {"divergence": "kl"}, False),
    "flat_js": ("FLAT (JS)", "FLATTrainer", {"divergence": "js"}, False),
    "flat_pearson": ("FLAT (Pearson)", "FLATTrainer", {"divergence": "pearson"}, False),
    "flat_tv": ("FLAT (TV)", "FLATTrainer", {"divergence": "tv"}, False),
    # retrain-free and saliency methods (issue 3): SSD's one-shot edit (α = 10, λ = 1, reference
    # defaults; I_D over retain ∪ forget) and SalUn with the NPO forget loss on the top-50 % salient weights
    "ssd": ("SSD", "SSDTrainer", {}, True),
    "salun": ("SalUn (NPO)", "SalUnTrainer", {"forget_loss": "npo"}, True),
}
BASELINES = ("ga", "graddiff", "npo", "npo_rt", "idk")
REFERENCE = "graddiff"  # the cost reference


@dataclass
class BenchConfig:
    """Everything that defines a result (stored in the JSON; model caches are keyed by a hash of it)."""

    # tokenizer and model
    vocab_size: int = 4000
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    max_length: int = 128
    # target / retain model training (hf_unlearn.tiny.finetune_qa)
    ft_epochs: float = 30
    ft_lr: float = 3e-3
    ft_batch_size: int = 8
    holdout_authors: int = 3
    # unlearning: TOFU's budget (5 epochs, batch 32, AdamW wd 0.01, 1 warm-up epoch, linear decay)
    unlearn_epochs: float = 5
    unlearn_batch_size: int = 32
    unlearn_lr_ratio: float = 1.0  # lr = ft_lr * ratio (TOFU unlearns at its fine-tuning lr, 1e-5)
    weight_decay: float = 0.01
    warmup_epochs: float = 1
    npo_beta: float = 0.1
    retain_weight: float = 1.0
    # evaluation
    eval_retain_rows: int = 100
    eval_max_rows: int | None = None  # cap on every evaluation split (quick mode only)
    max_new_tokens: int = 64
    eval_batch_size: int = 64
    n_perturbed: int = 3
    mia_k: float = 0.2
    # cost measurement
    timing_split: str = "forget05"
    timing_rounds: int = 2
    timing_extra_steps: int = 12
    timing_skip_steps: int = 2
    rss_interval_s: float = 0.002
    # learning-rate sensitivity: every method again at these lrs on one split (same budget otherwise)
    sweep_split: str = "forget05"
    sweep_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)

    @property
    def unlearn_lr(self) -> float:
        return self.ft_lr * self.unlearn_lr_ratio


QUICK = dict(
    vocab_size=1000,
    hidden_size=64,
    num_layers=2,
    ft_epochs=3,
    ft_batch_size=16,
    unlearn_epochs=1,
    unlearn_batch_size=8,
    eval_retain_rows=16,
    eval_max_rows=16,
    max_new_tokens=16,
    timing_rounds=1,
    sweep_lrs=(1e-3,),
)


# ---------------------------------------------------------------------------------------------------
# The TOFU files
# ---------------------------------------------------------------------------------------------------


def find_data(path: str | None) -> Path:
    """The TOFU folder: --data, $HF_UNLEARN_TOFU_PATH or <repo>/../shared/data/tofu; exit if absent."""
    candidates = [path, os.environ.get("HF_UNLEARN_TOFU_PATH"), str(REPO.parent / "shared" / "data" / "tofu")]
    for c in candidates:
        if c:
            folder = Path(c)
            missing = [f for f in DATA_FILES if not (folder / f"{f}.jsonl").is_file()]
            if not missing:
                return folder.resolve()
            if c == path or c == os.environ.get("HF_UNLEARN_TOFU_PATH"):
                if not folder.is_dir():
                    sys.exit(
                        f"error: the TOFU data folder {folder} does not exist (from --data / $HF_UNLEARN_TOFU_PATH)"
                    )
                sys.exit(f"error: TOFU folder {folder} lacks {', '.join(m + '.jsonl' for m in missing)}")
    sys.exit(
        "error: the TOFU data folder was not found. It is looked for in --data, $HF_UNLEARN_TOFU_PATH and "
        f"{REPO.parent / 'shared' / 'data' / 'tofu'}; it must hold {', '.join(f + '.jsonl' for f in DATA_FILES)}."
    )


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


class Data:
    """The TOFU files and the sets derived from them (see the module docstring)."""

    def __init__(self, path: Path, cfg: BenchConfig, seed: int):
        import datasets

        from hf_unlearn.data.tofu import load_tofu

        datasets.disable_progress_bars()
        self.path = path
        self.raw = {s: load_tofu(s, path) for s in DATA_FILES}
        retain = self.raw["retain"]
        authors = sorted(set(retain["author_index"]))
        hold = set(authors[-cfg.holdout_authors :])
        self.holdout_authors = sorted(hold)
        self.retain = retain.filter(lambda r: r["author_index"] not in hold)
        self.holdout = retain.filter(lambda r: r["author_index"] in hold)
        f10 = self.raw["forget10"]
        f10_q = set(f10["question"])
        self.forget = {}
        for s in ALL_SPLITS:
            ds = self.raw[s]
            if not set(ds["question"]) <= f10_q:
                sys.exit(f"error: {s}.jsonl is not a subset of forget10.jsonl; these files are not TOFU's")
            self.forget[s] = ds
        self.idk = [a for a in self.raw["idk"]["answer"] if a.strip()]
        rng = random.Random(seed)
        idx = sorted(rng.sample(range(len(self.retain)), min(cfg.eval_retain_rows, len(self.retain))))
        self.eval_retain = self.retain.select(idx)
        self.eval_forget = {s: self._cap(self.forget[s], cfg, seed) for s in ALL_SPLITS}
        self.utility = {
            "retain": self._cap(self.eval_retain, cfg, seed),
            "real_authors": self._cap(self.raw["real_authors"], cfg, seed),
            "world_facts": self._cap(self.raw["world_facts"], cfg, seed),
        }
        self.eval_holdout = self._cap(self.holdout, cfg, seed)

    @staticmethod
    def _cap(ds, cfg: BenchConfig, seed: int):
        if cfg.eval_max_rows is None or len(ds) <= cfg.eval_max_rows:
            return ds
        idx = sorted(random.Random(seed).sample(range(len(ds)), cfg.eval_max_rows))
        return ds.select(idx)

    def qa(self, ds):
        return ds.select_columns(["question", "answer"])

    def train_set(self, split: str | None):
        """Target (split None): forget10 ∪ retain ∪ real ∪ world; retain model: forget10 − split instead."""
        import datasets

        f10 = self.raw["forget10"]
        if split is not None:
            drop = set(self.forget[split]["question"])
            f10 = f10.filter(lambda r: r["question"] not in drop)
        parts = [f10, self.retain, self.raw["real_authors"], self.raw["world_facts"]]
        return datasets.concatenate_datasets([self.qa(p) for p in parts])

    def tokenizer_texts(self) -> list[str]:
        from hf_unlearn.data.qa import PLAIN_PROMPT_TEMPLATE
        from hf_unlearn.data.templates import REFUSALS

        texts = []
        for name in ("forget10", "retain", "real_authors", "world_facts"):
            for r in self.raw[name]:
                prompt = PLAIN_PROMPT_TEMPLATE.format(question=r["question"])
                texts.append(f"{prompt} {r['answer']}")
                texts.extend(r.get("perturbed_answer") or [])
        return texts + self.idk + list(REFUSALS)

    def fingerprint(self) -> dict:
        return {f: sha256_file(self.path / f"{f}.jsonl")[:16] for f in DATA_FILES}


# ---------------------------------------------------------------------------------------------------
# Tokenizer and the target / retain models (cached)
# ---------------------------------------------------------------------------------------------------


def get_tokenizer(data: Data, cfg: BenchConfig, cache: Path):
    from transformers import PreTrainedTokenizerFast

    from hf_unlearn.tiny import train_tokenizer

    recipe = {"v": CACHE_VERSION, "kind": "tokenizer", "vocab": cfg.vocab_size, "data": data.fingerprint()}
    folder = cache / f"tokenizer-{recipe_hash(recipe)}"
    if not (folder / "tokenizer.json").is_file():
        tok = train_tokenizer(data.tokenizer_texts(), vocab_size=cfg.vocab_size)

        def write(tmp):
            tok.save_pretrained(tmp)
            (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2))

        atomic_save(folder, write)
    return PreTrainedTokenizerFast.from_pretrained(folder), folder, recipe_hash(recipe)


def model_recipe(cfg: BenchConfig, data: Data, tok_hash: str, split: str | None, seed: int) -> dict:
    import torch
    import transformers

    return {
        "v": CACHE_VERSION,
        "kind": "target" if split is None else f"retain-{split}",
        "tokenizer": tok_hash,
        "data": data.fingerprint(),
        "holdout_authors": cfg.holdout_authors,
        "model": [cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.max_length],
        "finetune": [cfg.ft_epochs, cfg.ft_lr, cfg.ft_batch_size],
        "seed": seed,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def get_model(data: Data, tok, tok_hash: str, cfg: BenchConfig, cache: Path, split: str | None, seed: int):
    """Train (or load from the cache) the target model (split None) or the retain model of ``split``."""
    from transformers import AutoModelForCausalLM

    from hf_unlearn.tiny import finetune_qa, tiny_llama

    recipe = model_recipe(cfg, data, tok_hash, split, seed)
    name = "target" if split is None else f"retain-{split}"
    folder = cache / f"{name}-{recipe_hash(recipe)}"
    info_file = folder / "train_info.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        info["cached"] = True
        return AutoModelForCausalLM.from_pretrained(folder).eval(), folder, info
    train = data.train_set(split)
    model = tiny_llama(
        tok,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        max_position_embeddings=max(256, cfg.max_length),
        seed=seed,
    )
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
        )
    info = {
        "train_rows": len(train),
        "train_seconds": time.perf_counter() - t0,
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": recipe,
    }

    def write(tmp):
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "train_log.txt").write_text(out.getvalue())
        (tmp / "train_info.json").write_text(json.dumps(info, indent=2))

    atomic_save(folder, write)
    info["cached"] = False
    return model.eval(), folder, info


# ---------------------------------------------------------------------------------------------------
# Unlearning
# ---------------------------------------------------------------------------------------------------


def build_trainer(
    method: str, model, tok, data: Data, split: str, cfg: BenchConfig, seed: int, out_dir, callbacks, lr=None
):
    import hf_unlearn.trainers as trainers

    label, trainer_name, extra, uses_retain = METHODS[method]
    cls = getattr(trainers, trainer_name)
    forget = data.qa(data.forget[split])
    steps_per_epoch = math.ceil(len(forget) / cfg.unlearn_batch_size)
    kwargs = dict(
        output_dir=str(out_dir),
        num_train_epochs=cfg.unlearn_epochs,
        per_device_train_batch_size=cfg.unlearn_batch_size,
        learning_rate=cfg.unlearn_lr if lr is None else lr,
        lr_scheduler_type="linear",
        warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)),
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        retain_weight=cfg.retain_weight,
        logging_steps=steps_per_epoch,
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **extra,
    )
    if trainer_name == "NPOTrainer":
        kwargs["beta"] = cfg.npo_beta
    if trainer_name == "SalUnTrainer":
        kwargs["npo_beta"] = cfg.npo_beta
    if trainer_name in ("IDKTrainer", "FLATTrainer"):
        kwargs["templates"] = data.idk
    args = cls.config_class(**kwargs)
    retain = data.qa(data.retain) if uses_retain else None
    trainer = cls(
        model=model,
        args=args,
        forget_dataset=forget,
        retain_dataset=retain,
        processing_class=tok,
        callbacks=callbacks,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def train_unlearning(trainer, timer) -> dict:
    from hf_unlearn.trainers.base import NonFiniteLossError

    t0 = time.perf_counter()
    diverged = None
    try:
        trainer.train()
    except NonFiniteLossError as err:  # the model keeps its last finite weights
        diverged = str(err)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "steps": trainer.state.global_step,
        "train_seconds": time.perf_counter() - t0,
        "diverged": diverged,
        "step_times": timer.times,
        "last_log": logs[-1] if logs else None,
    }


def worker(spec_path: str) -> None:
    """Child process: one unlearning run on the timing split, timed, with its memory measured."""
    spec = json.loads(Path(spec_path).read_text())
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    quiet_transformers()
    torch.set_num_threads(spec["threads"])
    cfg = BenchConfig(**spec["cfg"])
    data = Data(Path(spec["data"]), cfg, spec["seed"])
    tok = PreTrainedTokenizerFast.from_pretrained(spec["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(spec["target"])
    base_rss = current_rss()
    sampler = RSSSampler(cfg.rss_interval_s)
    sampler.start()
    timer = make_step_timer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(
            spec["method"], model, tok, data, spec["split"], cfg, spec["seed"], tmp, [timer]
        )
        if spec.get("max_steps"):
            trainer.args.max_steps = spec["max_steps"]
        info = train_unlearning(trainer, timer)
    peak = sampler.stop()
    info.update(base_rss_mb=base_rss / 2**20, peak_rss_mb=peak / 2**20, ru_maxrss_mb=max_rss() / 2**20)
    info["added_rss_mb"] = info["peak_rss_mb"] - info["base_rss_mb"]
    if spec.get("save_to"):
        model.save_pretrained(spec["save_to"])
    Path(spec["result"]).write_text(json.dumps(info))


def run_worker(spec: dict, tmpdir: Path) -> dict:
    spec_path = tmpdir / f"spec-{spec['method']}-{spec['round']}.json"
    spec["result"] = str(tmpdir / f"result-{spec['method']}-{spec['round']}.json")
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['method']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(Path(spec["result"]).read_text())


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------


def eval_kwargs(cfg: BenchConfig, seed: int) -> dict:
    return dict(
        max_length=cfg.max_length,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.eval_batch_size,
        n_perturbed=cfg.n_perturbed,
        group_column="author_index",
        seed=seed,
        disable_tqdm=True,
    )


def evaluate_utility(model, tok, data: Data, cfg: BenchConfig, seed: int) -> dict:
    from hf_unlearn.evaluation import evaluate_tofu

    res = evaluate_tofu(model, tok, data.utility, None, **eval_kwargs(cfg, seed))
    return {"model_utility": res["model_utility"], "splits": res["splits"]}


def evaluate_model(model, tok, data: Data, split: str, retain_ratios, cfg, seed, utility=None) -> dict:
    """Forget quality, model utility, forget probability / ROUGE-L and min-k% MIA AUC of ``model``."""
    from hf_unlearn.evaluation import evaluate_tofu, min_k_mia

    t0 = time.perf_counter()
    forget = data.eval_forget[split]
    res = evaluate_tofu(model, tok, {"forget": forget}, retain_ratios, **eval_kwargs(cfg, seed))
    if utility is None:
        utility = evaluate_utility(model, tok, data, cfg, seed)
    mia = min_k_mia(
        model,
        tok,
        forget,
        data.eval_holdout,
        k=cfg.mia_k,
        max_length=cfg.max_length,
        batch_size=cfg.eval_batch_size,
        disable_tqdm=True,
    )
    f = res["splits"]["forget"]
    return {
        "forget_quality": res["forget_quality"],
        "ks_statistic": res["ks_statistic"],
        "model_utility": utility["model_utility"],
        "forget_probability": f["probability"],
        "forget_rouge_l": f["rouge_l_recall"],
        "forget_truth_ratio": f["truth_ratio"],
        "mia_auc": mia["auc"],
        "utility_splits": utility["splits"],
        "eval_seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What every stage of :func:`run` reads: the settings, the data and tokenizer, the target model's
    folder and the retain models' truth ratios (filled in by the stages in order), the stage clock and
    the progress bar."""

    cfg: BenchConfig
    splits: list[str]
    methods: list[str]
    sweep_lrs: list[float]
    seed: int
    data_path: Path
    cache: Path
    stages: Stages
    data: Data | None = None
    tok: object = None
    tok_dir: Path | None = None
    tok_hash: str | None = None
    target_dir: Path | None = None
    retain_ratios: dict | None = None
    bar: object = None


def plan(args) -> Context:
    """The configuration (quick or full), splits, methods and swept learning rates of this run."""
    cfg = BenchConfig(**QUICK) if args.quick else BenchConfig()
    splits = list(args.splits or (["forget01"] if args.quick else ALL_SPLITS))
    methods = list(args.methods or METHODS)
    if REFERENCE not in methods:
        methods.insert(0, REFERENCE)  # the cost reference is always measured
        log(f"adding {REFERENCE}: it is the reference of the cost ratios")
    timing_split = cfg.timing_split if cfg.timing_split in splits else splits[0]
    sweep_split = cfg.sweep_split if cfg.sweep_split in splits else splits[0]
    if args.sweep_lrs is not None:
        cfg = replace(cfg, sweep_lrs=tuple(args.sweep_lrs))
    cfg = replace(cfg, timing_split=timing_split, sweep_split=sweep_split)
    sweep_lrs = [lr for lr in cfg.sweep_lrs if not math.isclose(lr, cfg.unlearn_lr)]
    data_path = find_data(args.data)
    cache = Path(args.cache_dir).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    Path(args.output_dir).resolve().mkdir(parents=True, exist_ok=True)
    return Context(cfg, splits, methods, sweep_lrs, args.seed, data_path, cache, Stages())


def load_data(ctx: Context) -> None:
    with ctx.stages("data + tokenizer"):
        ctx.data = Data(ctx.data_path, ctx.cfg, ctx.seed)
        ctx.tok, ctx.tok_dir, ctx.tok_hash = get_tokenizer(ctx.data, ctx.cfg, ctx.cache)


def progress_bar(ctx: Context):
    from tqdm.auto import tqdm

    n_splits, n_methods = len(ctx.splits), len(ctx.methods)
    n_extra_timing = (ctx.cfg.timing_rounds - 1) * n_methods
    total = (1 + n_splits) + n_splits * (2 + n_methods) + n_extra_timing + len(ctx.sweep_lrs) * n_methods
    return tqdm(total=total, desc="tofu benchmark", unit="run", dynamic_ncols=True)


def train_reference_models(ctx: Context):
    """Stage 1: the target model and one retain model per split (cached). Returns (target, retain models,
    models info)."""
    models_info = {}
    with ctx.stages("target + retain models"):
        ctx.bar.set_postfix_str("target model")
        target, ctx.target_dir, models_info["target"] = get_model(
            ctx.data, ctx.tok, ctx.tok_hash, ctx.cfg, ctx.cache, None, ctx.seed
        )
        ctx.bar.update()
        retain_models = {}
        for s in ctx.splits:
            ctx.bar.set_postfix_str(f"retain model {s}")
            retain_models[s], _, models_info[f"retain-{s}"] = get_model(
                ctx.data, ctx.tok, ctx.tok_hash, ctx.cfg, ctx.cache, s, ctx.seed
            )
            ctx.bar.update()
    for k, v in models_info.items():
        log(f"{k}: {v['train_rows']} rows, {v['train_seconds']:.0f}s{' (cached)' if v['cached'] else ''}")
    return target, retain_models, models_info


def evaluate_references(ctx: Context, target, retain_models) -> dict:
    """Stage 2: the retain models' forget truth ratios (the reference of forget quality) and the scores of
    the target and retain models. Returns ``{split: {"target": ..., "retain_model": ...}}``."""
    from hf_unlearn.evaluation import model_truth_ratios

    cfg, seed = ctx.cfg, ctx.seed
    with ctx.stages("evaluation"):
        ctx.bar.set_postfix_str("evaluating target and retain models")
        target_utility = evaluate_utility(target, ctx.tok, ctx.data, cfg, seed)
        ctx.retain_ratios, results = {}, {s: {} for s in ctx.splits}
        for s in ctx.splits:
            ctx.retain_ratios[s] = model_truth_ratios(
                retain_models[s],
                ctx.tok,
                ctx.data.eval_forget[s],
                n_perturbed=cfg.n_perturbed,
                group_column="author_index",
                seed=seed,
                max_length=cfg.max_length,
                batch_size=cfg.eval_batch_size,
                disable_tqdm=True,
            )
            results[s]["target"] = evaluate_model(
                target, ctx.tok, ctx.data, s, ctx.retain_ratios[s], cfg, seed, target_utility
            )
            ctx.bar.update()
            results[s]["retain_model"] = evaluate_model(
                retain_models[s], ctx.tok, ctx.data, s, ctx.retain_ratios[s], cfg, seed
            )
            ctx.bar.update()
    return results


def run_timing_split(ctx: Context) -> tuple[dict, dict]:
    """Stage 3: on the timing split, every method in its own subprocess, back to back (the full-budget run
    whose model is evaluated, then the short timing-only rounds). Returns (timing runs per method,
    ``{method: scores}`` of the timing split)."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg, split = ctx.cfg, ctx.cfg.timing_split
    timing: dict[str, list[dict]] = {m: [] for m in ctx.methods}
    run_info: dict[str, dict] = {}
    results = {}
    with tempfile.TemporaryDirectory(dir=ctx.cache) as tmp:
        tmp = Path(tmp)
        with ctx.stages("unlearning (timed subprocesses)"):
            base_spec = {
                "cfg": asdict(cfg),
                "data": str(ctx.data_path),
                "tokenizer": str(ctx.tok_dir),
                "target": str(ctx.target_dir),
                "split": split,
                "seed": ctx.seed,
                "threads": torch.get_num_threads(),
            }
            for m in ctx.methods:
                ctx.bar.set_postfix_str(f"{split} {METHODS[m][0]} (timed subprocess)")
                save_to = tmp / f"model-{m}"
                info = run_worker({**base_spec, "method": m, "round": 0, "save_to": str(save_to)}, tmp)
                timing[m].append(info)
                run_info[m] = info
            for r in range(1, cfg.timing_rounds):
                order = ctx.methods[::-1] if r % 2 else ctx.methods
                for m in order:
                    ctx.bar.set_postfix_str(f"timing round {r + 1}: {METHODS[m][0]}")
                    info = run_worker(
                        {**base_spec, "method": m, "round": r, "max_steps": cfg.timing_extra_steps}, tmp
                    )
                    timing[m].append(info)
                    ctx.bar.update()
        with ctx.stages("evaluation"):
            for m in ctx.methods:
                ctx.bar.set_postfix_str(f"evaluating {split} {METHODS[m][0]}")
                model = AutoModelForCausalLM.from_pretrained(tmp / f"model-{m}")
                res = evaluate_model(model, ctx.tok, ctx.data, split, ctx.retain_ratios[split], cfg, ctx.seed)
                results[m] = {**res, **_train_summary(run_info[m])}
                ctx.bar.update()
    return timing, results


def unlearn_and_evaluate(ctx: Context, m: str, s: str, lr: float) -> dict:
    """One method on one split at learning rate ``lr``, in this process, then its scores."""
    from transformers import AutoModelForCausalLM

    with ctx.stages("unlearning (in process)"):
        model = AutoModelForCausalLM.from_pretrained(ctx.target_dir)
        timer = make_step_timer()
        with tempfile.TemporaryDirectory(dir=ctx.cache) as tmp:
            trainer = build_trainer(m, model, ctx.tok, ctx.data, s, ctx.cfg, ctx.seed, tmp, [timer], lr=lr)
            info = train_unlearning(trainer, timer)
        del trainer
    with ctx.stages("evaluation"):
        res = evaluate_model(model, ctx.tok, ctx.data, s, ctx.retain_ratios[s], ctx.cfg, ctx.seed)
    return {**res, **_train_summary(info)}


def run_other_splits(ctx: Context, results: dict) -> None:
    """Stage 4: every method on the splits other than the timing split, in this process."""
    for s in ctx.splits:
        if s == ctx.cfg.timing_split:
            continue
        for m in ctx.methods:
            ctx.bar.set_postfix_str(f"{s} {METHODS[m][0]}")
            results[s][m] = unlearn_and_evaluate(ctx, m, s, ctx.cfg.unlearn_lr)
            ctx.bar.update()


def run_lr_sweep(ctx: Context, results: dict) -> dict:
    """Stage 5: every method again at the other learning rates on the sweep split; ``{lr: {method:
    scores}}``, the main lr's from ``results``, sorted by lr."""
    split = ctx.cfg.sweep_split
    sweep: dict[str, dict] = {}
    for lr in ctx.sweep_lrs:
        sweep[f"{lr:g}"] = {}
        for m in ctx.methods:
            ctx.bar.set_postfix_str(f"lr sweep {split} lr={lr:g} {METHODS[m][0]}")
            sweep[f"{lr:g}"][m] = unlearn_and_evaluate(ctx, m, split, lr)
            ctx.bar.update()
    sweep[f"{ctx.cfg.unlearn_lr:g}"] = {m: results[split][m] for m in ctx.methods}
    return dict(sorted(sweep.items(), key=lambda kv: float(kv[0])))


def build_report(ctx: Context, args, models_info, results, sweep, timing) -> dict:
    cfg, data = ctx.cfg, ctx.data
    report = {
        "benchmark": "miniature TOFU (benchmarks/tofu.py)",
        "command": " ".join(["python benchmarks/tofu.py", *sys.argv[1:]]),
        "quick": bool(args.quick),
        "seed": ctx.seed,
        "splits": ctx.splits,
        "methods": ctx.methods,
        "config": {**asdict(cfg), "unlearn_lr": cfg.unlearn_lr},
        "data": {
            "path": str(ctx.data_path),
            "files": data.fingerprint(),
            "holdout_authors": data.holdout_authors,
            "holdout_rows": len(data.holdout),
            "retain_rows": len(data.retain),
            "eval_rows": {
                **{f"forget ({s})": len(data.eval_forget[s]) for s in ctx.splits},
                **{k: len(v) for k, v in data.utility.items()},
                "holdout": len(data.eval_holdout),
            },
            "idk_templates": len(data.idk),
        },
        "models": models_info,
        "results": results,
        "lr_sweep": {"split": cfg.sweep_split, "results": sweep},
        "cost": cost_table(timing, ctx.methods, cfg, cfg.timing_split),
        "versions": versions(),
        "stage_seconds": ctx.stages.seconds,
    }
    report["targets"] = check_targets(report)
    return report


def run(args) -> dict:
    """The whole benchmark, stage by stage: reference models, their evaluation, the timed split, the other
    splits, the learning-rate sweep, then the report."""
    quiet_transformers()
    t_start = time.perf_counter()
    ctx = plan(args)
    load_data(ctx)
    ctx.bar = progress_bar(ctx)
    target, retain_models, models_info = train_reference_models(ctx)
    results = evaluate_references(ctx, target, retain_models)
    del retain_models
    timing, timed = run_timing_split(ctx)
    results[ctx.cfg.timing_split].update(timed)
    run_other_splits(ctx, results)
    sweep = run_lr_sweep(ctx, results)
    ctx.bar.close()
    report = build_report(ctx, args, models_info, results, sweep, timing)
    report["wall_seconds"] = time.perf_counter() - t_start
    return report


def _train_summary(info: dict) -> dict:
    return {
        "steps": info["steps"],
        "train_seconds": info["train_seconds"],
        "diverged": info["diverged"],
        "last_log": info["last_log"],
    }


def cost_table(timing: dict, methods: list[str], cfg: BenchConfig, split: str) -> dict:
    rows = {}
    for m in methods:
        runs = timing[m]
        steps = [t for r in runs for t in r["step_times"][cfg.timing_skip_steps :]]
        rows[m] = {
            "median_step_s": statistics.median(steps) if steps else float("nan"),
            "timed_steps": len(steps),
            "round_medians_s": [
                statistics.median(r["step_times"][cfg.timing_skip_steps :])
                if len(r["step_times"]) > cfg.timing_skip_steps
                else None
                for r in runs
            ],
            "ru_maxrss_mb": max(r["ru_maxrss_mb"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "base_rss_mb": statistics.median(r["base_rss_mb"] for r in runs),
            "added_rss_mb": max(r["added_rss_mb"] for r in runs),
        }
    ref = rows.get(REFERENCE)
    for row in rows.values():
        for key, name in (
            ("median_step_s", "step_ratio"),
            ("peak_rss_mb", "peak_rss_ratio"),
            ("added_rss_mb", "added_rss_ratio"),
            ("ru_maxrss_mb", "maxrss_ratio"),
        ):
            row[name] = ratio(row[key], ref[key]) if ref else float("nan")
    return {
        "split": split,
        "batch_size": cfg.unlearn_batch_size,
        "rounds": cfg.timing_rounds,
        "methods": rows,
    }


# ---------------------------------------------------------------------------------------------------
# Targets (computed from the numbers)
# ---------------------------------------------------------------------------------------------------

MEMORISATION_RATIO = 2.0  # target forget probability >= 2x the retain model's ...
MEMORISATION_MARGIN = 0.3  # ... and at least 0.3 above it
UTILITY_TOLERANCE = 0.10  # FLAT's model utility >= 90% of the target's
COST_LIMIT = 1.2  # FLAT step <= 1.2x a GradDiff step


def check_targets(report: dict) -> dict:
    out = {"memorisation": {}, "flat_vs_baselines": {}, "cost": {}}
    for s, res in report["results"].items():
        t, r = res["target"], res["retain_model"]
        mem_ratio = ratio(t["forget_probability"], r["forget_probability"])
        out["memorisation"][s] = {
            "target_forget_probability": t["forget_probability"],
            "retain_forget_probability": r["forget_probability"],
            "target_forget_rouge_l": t["forget_rouge_l"],
            "retain_forget_rouge_l": r["forget_rouge_l"],
            "ratio": mem_ratio,
            "met": mem_ratio >= MEMORISATION_RATIO
            and t["forget_probability"] - r["forget_probability"] >= MEMORISATION_MARGIN,
        }
        mu_target = t["model_utility"]
        baselines = {m: res[m] for m in BASELINES if m in res}
        flats = {m: res[m] for m in res if m.startswith("flat_")}
        if not baselines or not flats:
            continue
        best_b = max(baselines, key=lambda m: baselines[m]["forget_quality"])
        keep_b = {
            m: v for m, v in baselines.items() if v["model_utility"] >= (1 - UTILITY_TOLERANCE) * mu_target
        }
        best_keep = max(keep_b, key=lambda m: keep_b[m]["forget_quality"]) if keep_b else None
        variants = {}
        for m, v in flats.items():
            variants[m] = {
                "forget_quality": v["forget_quality"],
                "model_utility": v["model_utility"],
                "utility_ratio": ratio(v["model_utility"], mu_target),
                "utility_ok": v["model_utility"] >= (1 - UTILITY_TOLERANCE) * mu_target,
                "fq_ge_all_baselines": v["forget_quality"] >= baselines[best_b]["forget_quality"],
                "fq_ge_utility_preserving_baselines": best_keep is None
                or v["forget_quality"] >= keep_b[best_keep]["forget_quality"],
            }
            variants[m]["met"] = variants[m]["utility_ok"] and variants[m]["fq_ge_all_baselines"]
        out["flat_vs_baselines"][s] = {
            "target_model_utility": mu_target,
            "best_baseline": best_b,
            "best_baseline_forget_quality": baselines[best_b]["forget_quality"],
            "best_baseline_model_utility": baselines[best_b]["model_utility"],
            "best_utility_preserving_baseline": best_keep,
            "variants": variants,
            "met_by": [m for m, v in variants.items() if v["met"]],
            "met": any(v["met"] for v in variants.values()),
        }
    sw = report.get("lr_sweep") or {}
    out["lr_sweep"] = {}
    for lr, res in (sw.get("results") or {}).items():
        mu_target = report["results"][sw["split"]]["target"]["model_utility"]
        base = [res[m]["forget_quality"] for m in BASELINES if m in res]
        if not base:
            continue
        out["lr_sweep"][lr] = {
            "target_forget_quality": report["results"][sw["split"]]["target"]["forget_quality"],
            "best_baseline_forget_quality": max(base),
            "best_flat_forget_quality": max(res[m]["forget_quality"] for m in res if m.startswith("flat_")),
            "best_flat_utility_ratio": ratio(
                max(res[m]["model_utility"] for m in res if m.startswith("flat_")), mu_target
            ),
            "met_by": [
                m
                for m in res
                if m.startswith("flat_")
                and res[m]["model_utility"] >= (1 - UTILITY_TOLERANCE) * mu_target
                and res[m]["forget_quality"] >= max(base)
            ],
        }
    rows = report["cost"]["methods"]
    for m, row in rows.items():
        if m.startswith("flat_"):
            out["cost"][m] = {"step_ratio": row["step_ratio"], "met": row["step_ratio"] <= COST_LIMIT}
    return out


# ---------------------------------------------------------------------------------------------------
# Markdown and plot
# ---------------------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    cfg = report["config"]
    v = report["versions"]
    lines = [
        "# Miniature TOFU benchmark"
        + (" (QUICK smoke configuration: not a result)" if report["quick"] else ""),
        "",
        f"Produced by `{report['command'].strip()}` in {report['wall_seconds'] / 60:.1f} min on {v['cpu_count']} CPU cores "
        f"(torch {v['torch']}, transformers {v['transformers']}, {v['torch_threads']} threads); "
        f"seed {report['seed']}. All numbers: `{report.get('name', 'tofu')}.json`; plot: "
        f"`{report.get('name', 'tofu')}.png`.",
        "",
        "## Setup",
        "",
        f"- Data: the real TOFU questions (forget01/05/10, retain, real_authors, world_facts, idk) from "
        f"`{Path(report['data']['path']).name}/`. Retain authors {report['data']['holdout_authors']} "
        f"({report['data']['holdout_rows']} rows) are held out of all training: the unseen set of the min-k% MIA. "
        f"'Retain' = the other {report['data']['retain_rows']} retain rows.",
        f"- Models: a Llama with hidden {cfg['hidden_size']}, {cfg['num_layers']} layers, {cfg['num_heads']} heads "
        f"({report['models']['target']['parameters'] / 1e6:.2f} M parameters), BPE tokenizer of "
        f"{cfg['vocab_size']} tokens trained on all TOFU text, plain `Question: …\\nAnswer:` prompts. "
        f"Target: `finetune_qa` ({cfg['ft_epochs']:g} epoch(s), batch {cfg['ft_batch_size']}, lr {cfg['ft_lr']:g}) on "
        "forget10 ∪ retain ∪ real_authors ∪ world_facts (the last two stand in for pre-training knowledge, so "
        "that model utility is not ~0 for every model). Retain model of a split: the same recipe without that split.",
        f"- Unlearning budget, identical for all methods (TOFU's recipe): {cfg['unlearn_epochs']:g} epoch(s) over the "
        f"forget split, batch {cfg['unlearn_batch_size']}, AdamW (weight decay {cfg['weight_decay']:g}), "
        f"{cfg['warmup_epochs']:g} warm-up epoch(s) then linear decay, lr {cfg['unlearn_lr']:.3g} for every method "
        f"(TOFU's rule: unlearn at the target's fine-tuning lr, here {cfg['ft_lr']:g} × {cfg['unlearn_lr_ratio']:g}; "
        "TOFU uses 1e-5 for both; a first full run at 1e-4 = 1/30 of it moved no method, see the sensitivity "
        f"table). GA, NPO (β = {cfg['npo_beta']:g}, frozen copy of the target as reference) and FLAT use forget "
        f"data only; GradDiff, IDK and NPO+RT add the retain set (weight {cfg['retain_weight']:g}). IDK and FLAT "
        "use the idk.jsonl refusals as template answers; FLAT scores answers by the paper's per-sample mean "
        "answer-token probability.",
        f"- Evaluation (`evaluate_tofu`): the whole forget split; retain = a fixed {cfg['eval_retain_rows']}-row "
        "sample; real_authors; world_facts. Forget quality = KS p-value of the forget truth ratios vs the retain "
        "model's (↑, the retain model scores 1 by construction); model utility = harmonic mean of probability, "
        "ROUGE-L and truth-ratio score on retain, real_authors, world_facts (↑); forget prob / ROUGE-L ↓; "
        "MIA AUC = min-k% (k = 0.2) forget vs holdout (0.5 = looks unseen). Forget/retain perturbed answers are "
        f"built from other authors' answers (the local files have none). Generation ≤ {cfg['max_new_tokens']} "
        f"new tokens; sequences ≤ {cfg['max_length']} tokens.",
        "",
    ]
    for s, res in report["results"].items():
        mu_t = res["target"]["model_utility"]
        lines += [
            f"## {s} ({report['data']['eval_rows'][f'forget ({s})']} forget rows)",
            "",
            *table_header(
                "method",
                "forget quality ↑",
                "model utility ↑",
                "utility / target",
                "forget prob ↓",
                "forget ROUGE-L ↓",
                "MIA AUC",
                "steps",
            ),
        ]
        order = ["target", "retain_model", *[m for m in report["methods"] if m in res]]
        for m in order:
            r = res[m]
            name = {"target": "Target (before)", "retain_model": "Retain model (gold)"}.get(m) or METHODS[m][
                0
            ]
            note = " (diverged)" if r.get("diverged") else ""
            lines.append(
                f"| {name}{note} | {fmt(r['forget_quality'])} | {fmt(r['model_utility'])} | "
                f"{fmt(ratio(r['model_utility'], mu_t), 2)} | {fmt(r['forget_probability'])} | {fmt(r['forget_rouge_l'])} "
                f"| {fmt(r['mia_auc'])} | {r.get('steps', '–')} |"
            )
        lines.append("")
    sw = report.get("lr_sweep") or {}
    if len(sw.get("results", {})) > 1:
        lrs = list(sw["results"])
        mu_t = report["results"][sw["split"]]["target"]["model_utility"]
        main_lr = f"{cfg['unlearn_lr']:g}"
        lines += [
            f"## Learning-rate sensitivity ({sw['split']})",
            "",
            "Every method again at other learning rates, everything else unchanged. Cell: forget quality / "
            "model utility ÷ target's / forget probability. The main tables use the bold column (the rule above).",
            "",
            *table_header("method", *(f"**lr {lr}**" if lr == main_lr else f"lr {lr}" for lr in lrs)),
        ]
        for m in report["methods"]:
            cells = []
            for lr in lrs:
                r = sw["results"][lr].get(m)
                cells.append(
                    "–"
                    if r is None
                    else f"{fmt(r['forget_quality'])} / {fmt(ratio(r['model_utility'], mu_t), 2)} / "
                    f"{fmt(r['forget_probability'])}{' (diverged)' if r.get('diverged') else ''}"
                )
            lines.append(table_row(METHODS[m][0], *cells))
        lines.append("")
    c = report["cost"]
    ref_label = METHODS[REFERENCE][0]
    lines += [
        f"## Cost per step ({c['split']}, batch {c['batch_size']}, {c['rounds']} round(s) back to back)",
        "",
        "Each method ran in its own subprocess on the same data and the same target model. Step time: median "
        f"over all steps after the first {report['config']['timing_skip_steps']} of each run. Memory is sampled "
        "(every 2 ms) from the child's RSS: peak RSS = the highest value from trainer construction to the end "
        "of training; added = that peak minus the RSS right after the model was loaded (what the method adds: "
        "reference copy, extra views, activations, optimizer state). The kernel's `ru_maxrss` of each child is "
        f"in `{report.get('name', 'tofu')}.json`, but it is set by the loading phase (datasets, tokenizer, imports), which peaks higher "
        "than training for a model this small, so it is the same for every method. The machine is shared, so "
        "timings are noisy.",
        "",
        *table_header(
            "method",
            "step (s)",
            f"× {ref_label}",
            "peak RSS (MB)",
            f"× {ref_label}",
            "added RSS (MB)",
            f"× {ref_label}",
            "timed steps",
        ),
    ]
    for m, row in c["methods"].items():
        lines.append(
            f"| {METHODS[m][0]} | {fmt(row['median_step_s'])} | {fmt(row['step_ratio'], 2)} | "
            f"{row['peak_rss_mb']:.0f} | {fmt(row['peak_rss_ratio'], 2)} | {row['added_rss_mb']:.1f} | "
            f"{fmt(row['added_rss_ratio'], 2)} | {row['timed_steps']} |"
        )
    lines += ["", "## Targets", ""]
    t = report["targets"]
    yes = {True: "**met**", False: "**missed**"}
    for s, m in t["memorisation"].items():
        lines.append(
            f"- Memorisation, {s}: {yes[m['met']]}: target forget probability {m['target_forget_probability']:.3f} "
            f"vs retain model {m['retain_forget_probability']:.3f} ({m['ratio']:.1f}×; criterion: ≥ "
            f"{MEMORISATION_RATIO:g}× and ≥ {MEMORISATION_MARGIN:g} above); forget ROUGE-L {m['target_forget_rouge_l']:.3f} vs "
            f"{m['retain_forget_rouge_l']:.3f}."
        )
    for s, f in t["flat_vs_baselines"].items():
        parts = []
        for m, vv in f["variants"].items():
            parts.append(
                f"{METHODS[m][0]} FQ {fmt(vv['forget_quality'])}, utility {fmt(vv['utility_ratio'], 2)}× target"
                f"{'' if vv['utility_ok'] else ' (< 0.90)'}{' ✓' if vv['met'] else ''}"
            )
        keep = f["best_utility_preserving_baseline"]
        lines.append(
            f"- FLAT forget quality ≥ every baseline's at utility ≥ {1 - UTILITY_TOLERANCE:.2f}× target, {s}: "
            f"{yes[f['met']]}"
            + (f" (by {', '.join(METHODS[m][0] for m in f['met_by'])})" if f["met_by"] else "")
            + f". Best baseline FQ: {METHODS[f['best_baseline']][0]} {fmt(f['best_baseline_forget_quality'])} "
            f"(utility {fmt(ratio(f['best_baseline_model_utility'], f['target_model_utility']), 2)}× target); "
            + (
                f"best baseline keeping utility ≥ 0.90×: {METHODS[keep][0]}. "
                if keep
                else "no baseline keeps utility ≥ 0.90×. "
            )
            + "; ".join(parts)
            + "."
        )
    if t.get("lr_sweep"):
        cells = [
            f"lr {lr}: {'met by ' + ', '.join(METHODS[m][0] for m in v['met_by']) if v['met_by'] else 'missed'} "
            f"(best FQ: FLAT {fmt(v['best_flat_forget_quality'])}, baselines {fmt(v['best_baseline_forget_quality'])}, "
            f"target {fmt(v['target_forget_quality'])}; best FLAT utility {fmt(v['best_flat_utility_ratio'], 2)}× target)"
            for lr, v in t["lr_sweep"].items()
        ]
        lines.append(
            f"- (Not the target, which is judged at the main lr: the same test on {report['lr_sweep']['split']} at "
            "every swept lr) " + "; ".join(cells) + "."
        )
    for m, cc in t["cost"].items():
        lines.append(
            f"- {METHODS[m][0]} step ≤ {COST_LIMIT:g}× {ref_label}: {yes[cc['met']]} ({cc['step_ratio']:.2f}×)."
        )
    lines += [
        "",
        "## Stage times",
        "",
        *table_header("stage", "seconds"),
        *[table_row(k, f"{s:.0f}") for k, s in report["stage_seconds"].items()],
        table_row("total wall time", f"{report['wall_seconds']:.0f}"),
        "",
    ]
    return "\n".join(lines)


def _headroom(ax) -> None:
    """Room above forget quality 1 (the retain model) on a log axis spanning many decades."""
    lo = max(ax.get_ylim()[0], 1e-300)
    ax.set_ylim(top=10 ** max(0.3, -0.06 * math.log10(lo)))


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(report["results"])
    sw = report.get("lr_sweep") or {}
    has_sweep = len(sw.get("results", {})) > 1
    n_panels = len(splits) + has_sweep
    ncols = 2 if n_panels >= 3 else n_panels
    nrows = math.ceil(n_panels / ncols)
    width = 5.2 * ncols + 2.2  # + room for the legend on the right
    fig, grid = plt.subplots(nrows, ncols, figsize=(width, 4.2 * nrows), squeeze=False)
    axes = [list(grid.flat)]
    for ax in axes[0][n_panels:]:
        ax.set_visible(False)
    markers = {"ga": "v", "graddiff": "s", "npo": "^", "npo_rt": "<", "idk": "P"}
    colors = plt.get_cmap("tab10")
    for ax, s in zip(axes[0][: len(splits)], splits, strict=True):
        res = report["results"][s]
        mu_t = res["target"]["model_utility"]
        for i, m in enumerate(report["methods"]):
            if m not in res:
                continue
            r = res[m]
            is_flat = m.startswith("flat_")
            ax.scatter(
                r["model_utility"],
                max(r["forget_quality"], 1e-300),
                marker="o" if is_flat else markers.get(m, "x"),
                s=70 if is_flat else 55,
                color=colors(i % 10),
                edgecolor="black" if is_flat else None,
                label=METHODS[m][0],
                zorder=3,
            )
        for key, mk, label in (("target", "*", "target (before)"), ("retain_model", "D", "retain model")):
            r = res[key]
            ax.scatter(
                r["model_utility"], max(r["forget_quality"], 1e-300), marker=mk, s=140, color="black",
                facecolor="none" if key == "retain_model" else "black", label=label, zorder=4,
            )  # fmt: skip
        ax.axvline(
            (1 - UTILITY_TOLERANCE) * mu_t, color="grey", ls="--", lw=0.8, label="90% of target utility"
        )
        ax.set_yscale("log")
        _headroom(ax)
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("model utility")
        ax.set_ylabel("forget quality (KS p-value, log)")
        ax.set_title(s)
        ax.grid(alpha=0.3, which="both")
    if has_sweep:
        ax = axes[0][-1]
        lrs = list(sw["results"])
        sizes = {lr: 20 + 90 * i / max(1, len(lrs) - 1) for i, lr in enumerate(lrs)}
        for i, m in enumerate(report["methods"]):
            pts = [(sw["results"][lr][m], lr) for lr in lrs if m in sw["results"][lr]]
            xs = [r["model_utility"] for r, _ in pts]
            ys = [max(r["forget_quality"], 1e-300) for r, _ in pts]
            ax.plot(xs, ys, color=colors(i % 10), lw=0.8, alpha=0.7)
            ax.scatter(xs, ys, s=[sizes[lr] for _, lr in pts], color=colors(i % 10), zorder=3)
        ref = report["results"][sw["split"]]
        ax.scatter(ref["target"]["model_utility"], max(ref["target"]["forget_quality"], 1e-300), marker="*",
                   s=140, color="black", zorder=4)  # fmt: skip
        ax.scatter(ref["retain_model"]["model_utility"], 1.0, marker="D", s=140, facecolor="none",
                   color="black", zorder=4)  # fmt: skip
        ax.set_yscale("log")
        _headroom(ax)
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("model utility")
        ax.set_ylabel("forget quality (KS p-value, log)")
        ax.set_title(f"{sw['split']}: lr {', '.join(lrs)} (marker size ∝ lr)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.suptitle("Miniature TOFU: forget quality vs model utility" + (" (quick)" if report["quick"] else ""))
    fig.tight_layout(rect=(0, 0, 1 - 2.2 / width, 1 - 0.45 / (4.2 * nrows)))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def console_table(report: dict) -> str:
    rows = []
    for s, res in report["results"].items():
        mu_t = res["target"]["model_utility"]
        for m, r in res.items():
            name = {"target": "target", "retain_model": "retain model"}.get(m) or METHODS[m][0]
            rows.append(
                f"{s:9s} {name:16s} FQ {fmt(r['forget_quality']):>9s}  MU {r['model_utility']:.3f} "
                f"({fmt(ratio(r['model_utility'], mu_t), 2)}x)  P_f {r['forget_probability']:.3f}  "
                f"R_f {r['forget_rouge_l']:.3f}  AUC {r['mia_auc']:.3f}"
            )
    for m, row in report["cost"]["methods"].items():
        rows.append(
            f"cost      {METHODS[m][0]:16s} step {row['median_step_s']:.3f}s ({row['step_ratio']:.2f}x)  "
            f"peak {row['peak_rss_mb']:.0f} MB ({row['peak_rss_ratio']:.2f}x)  "
            f"added {row['added_rss_mb']:.1f} MB ({row['added_rss_ratio']:.2f}x)"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--splits", nargs="+", choices=ALL_SPLITS, help="forget splits (default: all three)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="methods (default: all)")
    p.add_argument("--quick", action="store_true", help="small smoke configuration (~1-2 min; not a result)")
    p.add_argument(
        "--output-dir", default=None, help=f"default: {DEFAULT_OUTPUT} (quick: {DEFAULT_CACHE / 'quick'})"
    )
    p.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE), help="trained target/retain models (default: %(default)s)"
    )
    p.add_argument(
        "--data", default=None, help="TOFU folder (default: $HF_UNLEARN_TOFU_PATH or ../shared/data/tofu)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="tofu", help="output file stem: <name>.json/.md/.png (default: tofu)")
    p.add_argument(
        "--sweep-lrs",
        nargs="*",
        type=float,
        default=None,
        help="extra learning rates for the sensitivity table on forget05 (default: 1e-4 3e-4 1e-3; "
        "give none to skip)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.output_dir is None:
        args.output_dir = str(DEFAULT_CACHE / "quick" if args.quick else DEFAULT_OUTPUT)
    report = run(args)
    report["name"] = args.name
    files = write_outputs(Path(args.output_dir), args.name, report, markdown(report), plot)
    print(console_table(report))
    print(f"\nwritten {', '.join(map(str, files))} ({report['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
