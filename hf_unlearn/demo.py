"""The built-in demo: unlearn two fictitious people from a tiny Llama, on the CPU, with no downloads.

1. make the demo data (forget / retain / holdout people) and train a tokenizer on it;
2. train a *target* model on forget ∪ retain, and a *retain model* (the gold standard) on retain only;
3. unlearn the forget people from the target with FLAT;
4. evaluate all three (answer probability, ROUGE-L recall, truth ratio, forget quality against the
   retain model, min-k% membership-inference AUC forget vs holdout);
5. write the unlearned checkpoint + model card, report.json, report.md and report.png.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from tqdm.auto import tqdm


def _evaluate(model, tok, data, retain_ratios, seed):
    from .evaluation import evaluate_tofu, min_k_mia

    res = evaluate_tofu(
        model,
        tok,
        {"forget": data["forget"], "retain": data["retain"]},
        retain_ratios,
        max_new_tokens=24,
        group_column="person",
        seed=seed,
        disable_tqdm=True,
    )
    out = {
        "forget_probability": res["splits"]["forget"]["probability"],
        "forget_rouge_l": res["splits"]["forget"]["rouge_l_recall"],
        "retain_probability": res["splits"]["retain"]["probability"],
        "retain_rouge_l": res["splits"]["retain"]["rouge_l_recall"],
        "mia_auc": min_k_mia(model, tok, data["forget"], data["holdout"], disable_tqdm=True)["auc"],
    }
    if "forget_quality" in res:
        out["forget_quality"] = res["forget_quality"]
    return out, res["forget_truth_ratios"]


def run_demo(
    output_dir: str = "demo_out",
    divergence: str = "kl",
    seed: int = 0,
    steps: int = 30,
    learning_rate: float = 5e-4,
) -> dict:
    """Run the demo end to end and return the report (also written to ``output_dir``)."""
    import datasets
    import transformers

    from .data.demo import make_demo_dataset
    from .data.templates import REFUSALS
    from .tiny import finetune_qa, tiny_llama, train_tokenizer
    from .trainers.flat import FLATConfig, FLATTrainer

    transformers.logging.set_verbosity_error()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=6, desc="hf-unlearn demo", unit="stage")

    data = make_demo_dataset(n_people=12, n_forget=2, n_holdout=2, seed=seed)
    texts = [r["question"] + " " + r["answer"] for split in data.values() for r in split] + list(REFUSALS)
    tok = train_tokenizer(texts, vocab_size=800)
    bar.set_postfix_str("training the target model")
    target = tiny_llama(tok, hidden_size=96, num_hidden_layers=3, num_attention_heads=4, seed=seed)
    finetune_qa(
        target,
        tok,
        datasets.concatenate_datasets([data["forget"], data["retain"]]),
        str(out / "_target"),
        epochs=60,
        batch_size=8,
        seed=seed,
    )
    bar.update()
    bar.set_postfix_str("training the retain model")
    retain_model = tiny_llama(tok, hidden_size=96, num_hidden_layers=3, num_attention_heads=4, seed=seed)
    finetune_qa(retain_model, tok, data["retain"], str(out / "_retain"), epochs=60, batch_size=8, seed=seed)
    bar.update()

    bar.set_postfix_str("evaluating")
    from .evaluation import model_truth_ratios

    retain_ratios = model_truth_ratios(
        retain_model, tok, data["forget"], group_column="person", seed=seed, disable_tqdm=True
    )
    retain_metrics, _ = _evaluate(retain_model, tok, data, retain_ratios, seed)
    before, _ = _evaluate(target, tok, data, retain_ratios, seed)
    bar.update()

    bar.set_postfix_str(f"unlearning with FLAT ({divergence})")
    model = copy.deepcopy(target)
    args = FLATConfig(
        output_dir=str(out / "flat-unlearned"),
        divergence=divergence,
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=learning_rate,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = FLATTrainer(model=model, args=args, forget_dataset=data["forget"], processing_class=tok)
    trainer.train()
    bar.update()
    bar.set_postfix_str("evaluating")
    after, _ = _evaluate(model, tok, data, retain_ratios, seed)
    bar.update()

    trainer.record_metrics("before", before)
    trainer.record_metrics("after", after)
    trainer.record_metrics("retain_model", retain_metrics)
    trainer.save_model()
    report = {
        "method": "flat",
        "divergence": divergence,
        "steps": steps,
        "seed": seed,
        "forget_rows": len(data["forget"]),
        "retain_rows": len(data["retain"]),
        "metrics": {"target": before, "unlearned": after, "retain_model": retain_metrics},
    }
    report["markdown"] = _markdown(report)
    (out / "report.json").write_text(
        json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=2)
    )
    (out / "report.md").write_text(report["markdown"])
    _plot(report, out / "report.png")
    bar.set_postfix_str(f"written to {out}")
    bar.update()
    bar.close()
    return report


def _markdown(report: dict) -> str:
    m = report["metrics"]
    names = list(m["target"])
    lines = [
        f"# hf-unlearn demo: FLAT ({report['divergence']}), {report['steps']} steps",
        "",
        f"Forget set: {report['forget_rows']} QA pairs about 2 fictitious people; retain set: {report['retain_rows']}.",
        "",
        "| metric | target (before) | FLAT (after) | retain model (never saw the forget set) |",
        "| --- | --- | --- | --- |",
    ]
    for n in names:
        cells = [f"{m[k].get(n, float('nan')):.4g}" for k in ("target", "unlearned", "retain_model")]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = report["metrics"]
    names = [n for n in m["target"] if n != "forget_quality"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.27
    for i, (key, label) in enumerate(
        [("target", "target (before)"), ("unlearned", "FLAT (after)"), ("retain_model", "retain model")]
    ):
        ax.bar(
            [x + (i - 1) * width for x in range(len(names))], [m[key][n] for n in names], width, label=label
        )
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylim(0, 1.05)
    fq = m["unlearned"].get("forget_quality")
    ax.set_title(
        f"FLAT ({report['divergence']}) on the demo data" + (f" — forget quality {fq:.3g}" if fq else "")
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
