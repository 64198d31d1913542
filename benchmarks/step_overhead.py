#!/usr/bin/env python
"""Per-step overhead of the unlearning trainers against a plain PyTorch loop doing the same update.

    python benchmarks/step_overhead.py            # 5 rows x 5 rounds, 60 timed steps each (~4 min CPU, 1 thread)
    python benchmarks/step_overhead.py --quick    # smoke run: 1 round of 5 timed steps

Writes ``benchmarks/results/step_overhead.{json,md,png}``. Nothing is downloaded.

Protocol (the Markdown output repeats it)
-----------------------------------------
* Rows: GA and SalUn on the digits ResNet (``benchmarks/digits.py``'s model and data: 9.3 k parameters,
  a seeded random 10 % forget set of the 1,437 training images, the rest retain), and GA, SalUn and FLAT
  on a tiny Llama (the demo's size: hidden 96, 3 layers; built-in fictitious-people QA data, 100 people:
  60 forget rows, 540 retain rows, BPE tokenizer trained here). Weights are freshly initialised: the cost
  of a step does not depend on them.
* Updates: GA = −CE (classifier) / −answer NLL (LM); SalUn = random labels + α·CE(retain) (classifier)
  or NPO against a frozen copy + α·NLL(retain) (LM), saliency mask r = 0.5 enforced on gradients and by
  restoring the unmasked weights after each step; FLAT = the KL variational loss on (answer, template
  refusal). Gradients clipped at norm 1, constant learning rate; SGD with momentum 0.9 for the ResNet,
  AdamW for the Llama.
* Three runs per row, one thread (``torch.set_num_threads(1)``), in the same process:
  **trainer** (``GATrainer`` / ``SalUnTrainer`` / ``FLATTrainer``, ``train()`` as a user calls it), the
  same trainer with **row-by-row** fetching (``PairedViews.__getitems__`` disabled: the DataLoader then
  reads one Arrow row per view and item, which is what the library did before batched fetching), and a
  **plain loop**: the views held as in-memory tensors / token lists, the same batches (the trainer's
  recorded row indices), the same initial weights, optimizer, loss and mask, written in plain PyTorch.
* Honesty checks: the plain loop must end at the trainer's weights (``allclose``, rtol 1e-4, atol 1e-6)
  and the row-by-row trainer at exactly the trainer's weights (bit-identical); the run stops otherwise.
* Per step: time from the end of step W (warm-up) to the end of step W + N, divided by N, so data
  loading, collation, forward, backward, clipping, the optimizer and every hook are included. Median over
  rounds; rounds alternate the three runs. Both the wall clock and the process CPU time are recorded;
  the CPU time is reported first (other jobs on a shared machine inflate wall time, not CPU time). Ratio =
  trainer / plain loop, same round, same process.
* Setup: from the trainer's construction (raw datasets in hand) to the start of the first step
  (tokenization or checks of every view, ``Trainer.__init__``, optimizer, SalUn's mask, NPO's reference
  copy); for the plain loop, from the same raw data to its first step (batched tokenization, tensors,
  optimizer, mask, reference copy).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import load_splits, new_model  # noqa: E402  (the digits benchmark's data and ResNet)

from hf_unlearn.data.demo import make_demo_dataset  # noqa: E402
from hf_unlearn.data.paired import PairedViews  # noqa: E402
from hf_unlearn.data.templates import sample_templates  # noqa: E402
from hf_unlearn.evaluation import random_forget_set  # noqa: E402
from hf_unlearn.importance.saliency import saliency_mask  # noqa: E402
from hf_unlearn.tiny import tiny_llama, train_tokenizer  # noqa: E402
from hf_unlearn.trainers import FLATConfig, FLATTrainer, GAConfig, GATrainer, SalUnConfig, SalUnTrainer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / ".cache" / "step_overhead"
QUIET = dict(report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", logging_strategy="no")
ROWS = [("digits ResNet", "GA"), ("digits ResNet", "SalUn"), ("tiny Llama", "GA"), ("tiny Llama", "SalUn")]
ROWS.append(("tiny Llama", "FLAT"))
GOAL = 1.3
MEASURES = ("ms_per_step", "cpu_ms_per_step", "setup_s", "build_s")
SEED = 0


# ------------------------------------------------------------------------------------------ cases
def digits_case() -> dict:
    train, _ = load_splits()
    forget_idx = random_forget_set(len(train), round(0.1 * len(train)), seed=SEED)
    keep = sorted(set(range(len(train))) - set(forget_idx))
    return {
        "task": "classification",
        "make_model": lambda: new_model(SEED),
        "forget": train.select(forget_idx),
        "retain": train.select(keep),
        "tokenizer": None,
        "batch_size": 32,
        "optim": dict(optim="sgd", optim_args="momentum=0.9", weight_decay=0.0),
        "lr": {"GA": 1e-3, "SalUn": 2e-3},
    }


def llama_case() -> dict:
    data = make_demo_dataset(n_people=100, n_forget=10, n_holdout=0, seed=SEED)
    texts = [r["question"] + " " + r["answer"] for split in data.values() for r in split]
    texts += sample_templates(50, seed=SEED)
    tok = train_tokenizer(texts, vocab_size=800)
    return {
        "task": "causal_lm",
        "make_model": lambda: tiny_llama(tok, hidden_size=96, num_hidden_layers=3, num_attention_heads=4),
        "forget": data["forget"].select_columns(["question", "answer"]),
        "retain": data["retain"].select_columns(["question", "answer"]),
        "tokenizer": tok,
        "batch_size": 8,
        "optim": dict(optim="adamw_torch", weight_decay=0.0),
        "lr": {"GA": 1e-4, "SalUn": 1e-4, "FLAT": 1e-4},
    }


# --------------------------------------------------------------------------------------- trainer
class StepClock(TrainerCallback):
    """perf_counter() at the first step's start; (wall, process CPU) clocks at every step's end."""

    def __init__(self):
        self.first_begin, self.ends = None, []

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_begin is None:
            self.first_begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(clocks())


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def per_step(ends: list[tuple[float, float]], warmup: int, steps: int) -> dict[str, float]:
    """ms per step from the end of step ``warmup`` to the end of the last: wall clock and process CPU
    time (the CPU figure is what the run itself spent: less sensitive to other jobs on a shared machine)."""
    (w0, c0), (w1, c1) = ends[warmup - 1], ends[warmup + steps - 1]
    return {"ms_per_step": (w1 - w0) / steps * 1e3, "cpu_ms_per_step": (c1 - c0) / steps * 1e3}


def recording(dataset: PairedViews, row_by_row: bool) -> list[dict[str, list[int]]]:
    """Make ``dataset`` log the rows of every view that each batch reads (or fetch row by row)."""
    log: list[dict[str, list[int]]] = []
    base = type(dataset)

    class Recording(base):
        if row_by_row:
            __getitems__ = None  # the DataLoader then calls __getitem__ once per item
        else:

            def __getitems__(self, indices):
                log.append(self.view_indices(indices))
                return base.__getitems__(self, indices)

    dataset.__class__ = Recording
    return log


def run_trainer(case: dict, method: str, steps: int, warmup: int, row_by_row: bool = False) -> dict:
    model = case["make_model"]()
    common = dict(
        max_steps=warmup + steps,
        per_device_train_batch_size=case["batch_size"],
        learning_rate=case["lr"][method],
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        seed=SEED,
        **case["optim"],
        **QUIET,
    )
    out = str(WORK / method)
    data = {"forget_dataset": case["forget"], "processing_class": case["tokenizer"]}
    start = time.perf_counter()
    if method == "GA":
        trainer = GATrainer(model=model, args=GAConfig(out, **common), **data)
    elif method == "SalUn":
        args = SalUnConfig(out, mask_ratio=0.5, retain_weight=1.0, retain_schedule="paired", **common)
        trainer = SalUnTrainer(model=model, args=args, retain_dataset=case["retain"], **data)
    else:
        trainer = FLATTrainer(model=model, args=FLATConfig(out, divergence="kl", **common), **data)
    built = time.perf_counter()
    log = recording(trainer.train_dataset, row_by_row)
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.remove_callback(PrinterCallback)
    began = time.perf_counter()
    trainer.train()
    return {
        "model": model,
        "batches": log,
        "mask": getattr(trainer, "mask", None),
        **per_step(clock.ends, warmup, steps),
        "setup_s": (built - start) + (clock.first_begin - began),
        "build_s": built - start,
    }


# ------------------------------------------------------------------------------------ plain loop
def plain_qa_rows(tok, questions: list[str], answers: list[str]) -> list[list[int]]:
    """Prompt + answer token ids and labels, tokenized in two batched calls (no chat template)."""
    prompts = tok([f"Question: {q}\nAnswer:" for q in questions])["input_ids"]
    answer_ids = tok([" " + a for a in answers], add_special_tokens=False)["input_ids"]
    rows = []
    for p, a in zip(prompts, answer_ids, strict=True):
        ids = p + a + [tok.eos_token_id]
        rows.append((ids, [-100] * len(p) + ids[len(p) :]))
    return rows


def pad_batch(rows, pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (x, y) in enumerate(rows):
        ids[b, : len(x)], labels[b, : len(y)], mask[b, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_nll(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per answer token −log p (B, L−1) and the answer-token mask."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")  # ignore -100
    return nll, targets != -100


def mean_nll(model, batch) -> torch.Tensor:
    nll, mask = token_nll(model, batch)
    return nll.sum(-1) / mask.sum(-1)  # (B,)


def run_plain(case: dict, method: str, recorded: dict) -> dict:
    """The same update in plain PyTorch on the trainer's recorded batches; returns model, ms/step, setup."""
    steps, warmup, lm = recorded["steps"], recorded["warmup"], case["task"] == "causal_lm"
    start = time.perf_counter()
    torch.manual_seed(SEED)
    model = case["make_model"]()
    views_raw = {"forget": case["forget"]}
    if method == "SalUn":
        views_raw["retain"] = case["retain"]
    if lm:
        tok = case["tokenizer"]
        views = {
            n: plain_qa_rows(tok, list(ds["question"]), list(ds["answer"])) for n, ds in views_raw.items()
        }
        if method == "FLAT":
            templates = sample_templates(len(case["forget"]), None, SEED)
            views["template"] = plain_qa_rows(tok, list(case["forget"]["question"]), templates)

        def batch_of(view, rows):
            return pad_batch([views[view][r] for r in rows], tok.pad_token_id)
    else:
        views = {}
        for n, ds in views_raw.items():
            cols = ds.with_format("numpy")[:]
            views[n] = (torch.from_numpy(cols["pixel_values"]), torch.from_numpy(cols["labels"]))

        def batch_of(view, rows):
            idx = torch.tensor(rows)
            return {"pixel_values": views[view][0][idx], "labels": views[view][1][idx]}

    ref = None
    if lm and method == "SalUn":  # NPO's frozen reference: the model before unlearning
        ref = copy.deepcopy(model).eval().requires_grad_(False)
    frozen = []
    if method == "SalUn":  # saliency mask: global top 50 % of |Σ_b ∇ forget loss| (model in eval mode)
        model.eval()
        n, b = len(case["forget"]), case["batch_size"]
        for i in range(0, n, b):
            batch = batch_of("forget", list(range(i, min(i + b, n))))
            loss = (
                mean_nll(model, batch)
                if lm
                else F.cross_entropy(forget_logits(model, batch), batch["labels"])
            )
            loss.mean().backward()  # gradients add up over batches in .grad
        mask = saliency_mask({k: p.grad for k, p in model.named_parameters()}, 0.5)
        model.zero_grad(set_to_none=True)
        params = dict(model.named_parameters())
        frozen = [(params[k], ~m, params[k].detach().clone()) for k, m in mask.items()]
    lr = case["lr"][method]
    if lm:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    setup = time.perf_counter() - start

    ends = []
    for step, rows in enumerate(recorded["batches"][: warmup + steps]):
        batch = {view: batch_of(view, r) for view, r in rows.items()}
        f = batch["forget"]
        if method == "GA":
            loss = -(
                mean_nll(model, f) if lm else F.cross_entropy(forget_logits(model, f), f["labels"])
            ).mean()
        elif method == "FLAT":
            p = {}
            for view in ("forget", "template"):
                nll, m = token_nll(model, batch[view])
                p[view] = ((-nll).exp() * m).sum(-1) / m.sum(-1)
            loss = (-p["template"] + torch.exp(p["forget"] - 1.0)).mean()  # KL: g* = v, f*(u) = e^(u−1)
        elif lm:  # SalUn, NPO + retain NLL
            nll, m = token_nll(model, f)
            with torch.no_grad():
                ref_nll, _ = token_nll(ref, f)
            logratio = -nll.sum(-1) + ref_nll.sum(-1)
            loss = (
                -(2.0 / 0.1) * F.logsigmoid(-0.1 * logratio).mean() + mean_nll(model, batch["retain"]).mean()
            )
        else:  # SalUn, random labels y' ≠ y (seeded as the trainer seeds them) + retain CE
            logits = forget_logits(model, f)
            g = torch.Generator().manual_seed(hash((SEED, step, 0, 0)) % 2**63)
            wrong = (f["labels"] + torch.randint(1, logits.shape[-1], f["labels"].shape, generator=g)) % 10
            r = batch["retain"]
            loss = F.cross_entropy(logits, wrong) + F.cross_entropy(forget_logits(model, r), r["labels"])
        loss.backward()
        with torch.no_grad():
            for p, off, _ in frozen:
                p.grad[off] = 0
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for p, off, theta0 in frozen:
                p[off] = theta0[off]
                for v in opt.state[p].values():
                    if v.shape == p.shape:
                        v[off] = 0
        model.zero_grad(set_to_none=True)
        ends.append(clocks())
    return {
        "model": model,
        "mask": mask if method == "SalUn" else None,
        **per_step(ends, warmup, steps),
        "setup_s": setup,
        "build_s": setup,
    }


def forget_logits(model, batch):
    return model(pixel_values=batch["pixel_values"]).logits


# ------------------------------------------------------------------------------------------- runs
def max_diff(a, b) -> float:
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters(), strict=True))


def same_weights(a, b, exact: bool) -> bool:
    pairs = list(zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    if exact:
        return all(torch.equal(x, y) for x, y in pairs)
    return all(torch.allclose(x.float(), y.float(), rtol=1e-4, atol=1e-6) for x, y in pairs)


def run_row(case: dict, method: str, steps: int, warmup: int, rounds: int) -> dict:
    runs = {"trainer": [], "row_by_row": [], "plain": []}
    checks = {}
    for r in range(rounds):
        order = ["trainer", "plain", "row_by_row"] if r % 2 == 0 else ["row_by_row", "plain", "trainer"]
        res = {}
        for kind in order:
            if kind == "plain":
                if "trainer" not in res:  # the plain loop needs the trainer's batches: run it first
                    res["trainer"] = run_trainer(case, method, steps, warmup)
                rec = {"batches": res["trainer"]["batches"], "steps": steps, "warmup": warmup}
                res["plain"] = run_plain(case, method, rec)
            elif kind not in res:
                res[kind] = run_trainer(case, method, steps, warmup, row_by_row=kind == "row_by_row")
        t, p, rb = res["trainer"], res["plain"], res["row_by_row"]
        if not same_weights(t["model"], p["model"], exact=False):
            raise SystemExit(
                f"{method}: plain loop and trainer disagree (max |Δw| {max_diff(t['model'], p['model'])})"
            )
        if not same_weights(t["model"], rb["model"], exact=True):
            raise SystemExit(f"{method}: row-by-row fetching changed the result")
        checks = {
            "plain_vs_trainer_max_abs_diff": max_diff(t["model"], p["model"]),
            "row_by_row_bit_identical": True,
            "mask_identical": None
            if t["mask"] is None
            else all(torch.equal(t["mask"][k], p["mask"][k]) for k in t["mask"]),
        }
        for kind in runs:
            runs[kind].append({k: res[kind][k] for k in MEASURES})
    med = {k: {m: statistics.median(x[m] for x in v) for m in MEASURES} for k, v in runs.items()}

    def ratio(kind: str, measure: str) -> float:  # per round (same conditions), then the median
        pairs = zip(runs[kind], runs["plain"], strict=True)
        return statistics.median(a[measure] / b[measure] for a, b in pairs)

    return {
        "median": med,
        "ratio": ratio("trainer", "ms_per_step"),
        "ratio_cpu": ratio("trainer", "cpu_ms_per_step"),
        "ratio_row_by_row": ratio("row_by_row", "ms_per_step"),
        "ratio_row_by_row_cpu": ratio("row_by_row", "cpu_ms_per_step"),
        "setup_ratio": med["trainer"]["setup_s"] / med["plain"]["setup_s"],
        "rounds": runs,
        "checks": checks,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 5 timed steps")
    p.add_argument("--steps", type=int, default=60, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.warmup, a.rounds = 5, 2, 1
    torch.set_num_threads(1)
    load = _loadavg()
    cases = {"digits ResNet": digits_case(), "tiny Llama": llama_case()}
    rows = []
    for model_name, method in ROWS:
        case = cases[model_name]
        row = {"model": model_name, "method": method, **run_row(case, method, a.steps, a.warmup, a.rounds)}
        m = row["median"]
        print(
            f"{model_name:14s} {method:6s} CPU ms/step: trainer {m['trainer']['cpu_ms_per_step']:7.2f}  "
            f"row-by-row {m['row_by_row']['cpu_ms_per_step']:7.2f}  plain {m['plain']['cpu_ms_per_step']:7.2f}  "
            f"ratio {row['ratio_cpu']:.2f} (wall {row['ratio']:.2f})  setup {m['trainer']['setup_s']:.2f} s vs "
            f"{m['plain']['setup_s']:.2f} s",
            flush=True,
        )
        rows.append(row)
    results = {
        "config": {
            "steps": a.steps,
            "warmup": a.warmup,
            "rounds": a.rounds,
            "threads": 1,
            "goal_ratio": GOAL,
            "forget_rows": {k: len(c["forget"]) for k, c in cases.items()},
            "retain_rows": {k: len(c["retain"]) for k, c in cases.items()},
            "batch_size": {k: c["batch_size"] for k, c in cases.items()},
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "datasets": __import__("datasets").__version__,
            "accelerate": __import__("accelerate").__version__,
            "cpu": platform.processor() or platform.machine(),
            "load_average_before": load,
            "load_average_after": _loadavg(),
        },
        "rows": rows,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_overhead.json").write_text(json.dumps(results, indent=1))
    (out / "step_overhead.md").write_text(markdown(results))
    plot(results, out / "step_overhead.png")
    print(f"written to {out}/step_overhead.{{json,md,png}}")
    return results


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in __import__("os").getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    c, env = res["config"], res["environment"]
    lines = [
        "# Per-step overhead: trainers vs a plain PyTorch loop",
        "",
        "`python benchmarks/step_overhead.py` — the protocol is at the top of the script. "
        f"{c['steps']} timed steps after {c['warmup']} warm-up steps, median of {c['rounds']} rounds, "
        f"{c['threads']} thread. ms/step is process CPU time (robust to other jobs on this shared machine); "
        f"ratio = trainer / plain loop in the same round, on CPU time and on wall time (goal ≤ "
        f"{c['goal_ratio']}×, judged on CPU time). "
        "*Row-by-row* is the same trainer reading one Arrow row per view and item (the library before "
        "batched fetching). The plain loop does the same update on the same batches from the same weights "
        "and ends at the trainer's weights (max |Δw| below); the row-by-row trainer ends at bit-identical "
        "weights.",
        "",
        "| model | method | trainer ms/step | row-by-row ms/step | plain loop ms/step | ratio | ratio (wall) "
        "| row-by-row ratio | goal met | setup s: trainer (construction) | setup s: plain | max abs Δw |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in res["rows"]:
        m = r["median"]
        lines.append(
            f"| {r['model']} | {r['method']} | {m['trainer']['cpu_ms_per_step']:.2f} | "
            f"{m['row_by_row']['cpu_ms_per_step']:.2f} | {m['plain']['cpu_ms_per_step']:.2f} | "
            f"{r['ratio_cpu']:.2f} | {r['ratio']:.2f} | {r['ratio_row_by_row_cpu']:.2f} | "
            f"{'yes' if r['ratio_cpu'] <= c['goal_ratio'] else 'no'} | {m['trainer']['setup_s']:.3f} "
            f"({m['trainer']['build_s']:.3f}) | "
            f"{m['plain']['setup_s']:.3f} | {r['checks']['plain_vs_trainer_max_abs_diff']:.1e} |"
        )
    lines += [
        "",
        f"Data: digits forget {c['forget_rows']['digits ResNet']} / retain {c['retain_rows']['digits ResNet']} "
        f"images, batch {c['batch_size']['digits ResNet']}; tiny Llama forget {c['forget_rows']['tiny Llama']} / "
        f"retain {c['retain_rows']['tiny Llama']} QA rows, batch {c['batch_size']['tiny Llama']}. "
        "Setup = construction to the first step (trainer: view preparation, `Trainer.__init__`, optimizer, "
        "SalUn's mask pass, NPO's reference copy; plain loop: batched tokenization or tensors, optimizer, "
        "mask pass, reference copy); in brackets the trainer's construction alone. The rest of the "
        "trainer's setup is `train()` up to the first step, most of it the `gc.collect()` that "
        "`Trainer._inner_training_loop` runs first (`accelerator.free_memory()`; its cost grows with the "
        "number of live Python objects in the process).",
        "",
        f"Environment: Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"datasets {env['datasets']}, accelerate {env['accelerate']}; load average before/after "
        f"{env['load_average_before']} / {env['load_average_after']} (shared machine).",
        "",
    ]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    labels = [f"{r['model']}\n{r['method']}" for r in rows]
    x = np.arange(len(rows))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    for k, (kind, name) in enumerate(
        [
            ("row_by_row", "trainer, row-by-row fetch (before)"),
            ("trainer", "trainer"),
            ("plain", "plain loop"),
        ]
    ):
        ax.bar(x + (k - 1) * 0.27, [r["median"][kind]["cpu_ms_per_step"] for r in rows], 0.27, label=name)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("CPU ms per step (median)")
    ax.set_title("Time per step")
    ax.legend(fontsize=8)
    bx.bar(x - 0.2, [r["ratio_row_by_row_cpu"] for r in rows], 0.4, label="row-by-row / plain")
    bx.bar(x + 0.2, [r["ratio_cpu"] for r in rows], 0.4, label="trainer / plain")
    bx.axhline(
        res["config"]["goal_ratio"], color="k", ls="--", lw=1, label=f"goal {res['config']['goal_ratio']}×"
    )
    bx.set_xticks(x, labels, fontsize=8)
    bx.set_ylabel("ratio to the plain loop")
    bx.set_title("Overhead (same run)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
