"""PO against PO + PD with the real SmolLM2-135M-Instruct as the language model of a LLaVA-style model.

    python benchmarks/multimodal.py --smollm2     # ~20 min on 2 cores; writes results/multimodal_smollm2.*

The model (cached under ``benchmarks/.cache/multimodal/smollm2-vl-<recipe hash>``) is a
``LlavaForConditionalGeneration`` assembled from parts: the CLIP vision tower of the continual benchmark's
base model (trained here on these images), a fresh LLaVA projector, and the real, pretrained
SmolLM2-135M-Instruct (:func:`hf_unlearn.pretrained.load_smollm2`) with an added ``<image>`` token. Stage 1
(LLaVA's alignment stage, on *pre-training* images only): the projector and a LoRA on the language model
(merged afterwards) learn easy-VQA colour and shape questions. Stage 2: PO and PO + PD on the splits of
``benchmarks/multimodal.py`` (fewer rows: ``SMOL``), SafeEraser's LoRA configuration, one seed.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import torch
from _common import atomic_save, fmt, log, recipe_hash, table_header, table_row, versions, write_outputs

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "multimodal"
SMOL = {
    "align_rows": 2400,
    "align_steps": 150,
    "align_batch": 16,
    "align_lr": 1e-3,
    "rows": 64,
    "eval_rows": 60,
    "steps": 40,
    "batch": 8,
    "lr": 5e-4,
    "r": 16,
    "alpha": 32,
    "seeds": [0],
}


def assemble(base, base_processor, smol, smol_tokenizer):
    """(LLaVA model, processor): ``base``'s vision tower, a fresh projector, ``smol`` as the language model."""
    from continual import IMAGE_TOKEN, PATCH
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = copy.deepcopy(smol_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    smol = copy.deepcopy(smol)
    smol.resize_token_embeddings(len(tokenizer))
    config = LlavaConfig(
        vision_config=base.config.vision_config,
        text_config=smol.config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy=base.config.vision_feature_select_strategy,
        vision_feature_layer=base.config.vision_feature_layer,
        tie_word_embeddings=smol.config.tie_word_embeddings,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(base.model.vision_tower.state_dict())
    model.model.language_model.load_state_dict(smol.model.state_dict())
    model.lm_head.load_state_dict(smol.lm_head.state_dict())
    processor = LlavaProcessor(
        image_processor=base_processor.image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )
    return model, processor


def align(model, processor, raw, cfg, folder: Path) -> dict:
    """Stage 1: projector + LoRA (merged) on colour and shape questions of pre-training images."""
    from continual import BankCollator, encode
    from multimodal import short_answer
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from hf_unlearn.tasks import reference_lora_config

    rows = [short_answer(r) for r in raw["rows"]["pretrain"] if r["kind"] in ("color", "shape")]
    rows = random.Random(0).sample(rows, min(cfg["align_rows"], len(rows)))
    from peft import get_peft_model

    peft = get_peft_model(model, reference_lora_config(r=cfg["r"], alpha=cfg["alpha"], dropout=0.0))
    args = TrainingArguments(
        output_dir=str(folder.parent / "align-tmp"),
        max_steps=cfg["align_steps"],
        per_device_train_batch_size=cfg["align_batch"],
        learning_rate=cfg["align_lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0.06,
        logging_steps=max(1, cfg["align_steps"] // 10),
        save_strategy="no",
        report_to=[],
        seed=0,
        remove_unused_columns=False,
        use_cpu=True,
        disable_tqdm=True,
    )
    tokenizer = processor.tokenizer
    trainer = Trainer(
        model=peft,
        args=args,
        train_dataset=encode(rows, tokenizer),
        data_collator=BankCollator(raw["bank"], tokenizer.pad_token_id),
    )
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    merged = peft.merge_and_unload()
    return {
        "model": merged,
        "seconds": time.perf_counter() - t0,
        "loss_curve": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }


def setup_smollm2(env: dict) -> dict:
    """The aligned SmolLM2 LLaVA (cached), its processor and the recipe."""
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from hf_unlearn.pretrained import load_smollm2

    recipe = {
        "smol": {k: SMOL[k] for k in SMOL if k.startswith("align")},
        "base": env["recipe"],
        "version": 1,
    }
    folder = CACHE / f"smollm2-vl-{recipe_hash(recipe)}"
    if (folder / "config.json").is_file():
        log(f"aligned SmolLM2 LLaVA loaded from {folder}")
        info = json.loads((folder / "align_info.json").read_text())
        return {
            "model": LlavaForConditionalGeneration.from_pretrained(folder).eval(),
            "processor": LlavaProcessor.from_pretrained(folder),
            "info": info,
        }
    smol, smol_tokenizer = load_smollm2(ROOT / ".cache" / "continual" / "smollm2")
    model, processor = assemble(env["model"], env["processor"], smol, smol_tokenizer)
    n = sum(p.numel() for p in model.parameters())
    log(f"aligning the SmolLM2 LLaVA ({n / 1e6:.1f} M parameters): {SMOL['align_steps']} steps")
    out = align(model, processor, env["raw"], SMOL, folder)
    info = {"parameters": n, "seconds": out["seconds"], "loss_curve": out["loss_curve"]}

    def write(tmp: Path):
        out["model"].save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "align_info.json").write_text(json.dumps(info, indent=1))

    atomic_save(folder, write)
    log(f"aligned in {out['seconds'] / 60:.1f} min, cached in {folder}")
    return {"model": out["model"].eval(), "processor": processor, "info": info}


def markdown(r: dict) -> str:
    from multimodal import rate_cells

    pct = lambda x: fmt(100 * x, 1)  # noqa: E731
    s, n = r["smol"], r["rows"]
    lines = [
        "# PO vs PO + PD with the real SmolLM2-135M-Instruct as the language model",
        "",
        f"LLaVA-style model of {r['align']['parameters'] / 1e6:.1f} M parameters: the continual benchmark's CLIP "
        f"tower, a fresh projector, SmolLM2-135M-Instruct; aligned here ({s['align_steps']} steps of "
        f"{s['align_batch']}, projector + LoRA, {fmt(r['align']['seconds'] / 60, 1)} min). Concept: red images; "
        f"{n['forget']} forget / {n['pd']} PD / {n['retain_train']} retain pairs; {s['steps']} steps of "
        f"{s['batch']}, lr {s['lr']}, LoRA r {s['r']} + projector; {n['benign']} benign, {n['generality']} "
        f"held-out red, {n['retain']} retain evaluation rows.",
        "",
        *table_header(
            "model",
            "ASR eff ↓",
            "RR eff ↑",
            "ASR gen ↓",
            "RR gen ↑",
            "SARR ↓ (exact)",
            "SARR ↓ (judge)",
            "benign acc ↑",
            "retain ROUGE-L P ↑",
            "s / step",
        ),  # fmt: skip
    ]
    for name, m in r["runs"].items():
        e, j = m["exact"], m["judge"]
        lines.append(
            table_row(
                name,
                *rate_cells(e, pct),
                pct(e["sarr"]),
                pct(j["sarr"]),
                pct(e["benign_accuracy"]),
                pct(j["rouge_l_precision"]),
                fmt(m["step_seconds"], 2),
            )  # fmt: skip
        )
    lines += ["", f"Total {fmt(r['seconds'] / 60, 1)} min. Example responses are in the JSON report.", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["runs"])
    keys = ("rr_efficacy", "sarr", "benign_accuracy")
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / len(names)
    for i, n in enumerate(names):
        ax.bar([k + (i - len(names) / 2) * w for k in range(len(keys))],
               [100 * r["runs"][n]["exact"][k] for k in keys], w, label=n)  # fmt: skip
    ax.set_xticks(range(len(keys)), ["RR efficacy ↑", "SARR ↓", "benign accuracy ↑"])
    ax.set_ylabel("% (exact)")
    ax.legend(fontsize=8)
    ax.set_title("SmolLM2-135M LLaVA: PO vs PO + PD")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_smollm2(args, env: dict) -> None:
    import multimodal as mm

    t0 = time.perf_counter()
    smol = setup_smollm2(env)
    senv = {**env, "model": smol["model"], "processor": smol["processor"]}
    rows = mm.build_splits(env["raw"], mm.SPLIT_SEED, SMOL["rows"], SMOL["rows"], SMOL["eval_rows"])
    bank = env["raw"]["bank"]
    data = {k: mm.to_dataset(rows[k], bank) for k in ("forget", "pd", "retain_train")}
    evaluator = mm.Evaluator(senv, rows)
    mm.check_pixel_path(smol["processor"], evaluator.collator, bank, rows["forget"][:8])
    report = {
        "smol": SMOL,
        "align": smol["info"],
        "rows": {k: len(v) for k, v in rows.items()},
        "runs": {"aligned SmolLM2 LLaVA": {**evaluator(senv["model"]), "step_seconds": float("nan")}},
    }
    log(f"aligned model: {report['runs']['aligned SmolLM2 LLaVA']['exact']}")
    work = CACHE / "smollm2-runs"
    for with_pd in (False, True):
        name = "PO" + (" + PD" if with_pd else "")
        report["runs"][name] = r = mm.run("PO", with_pd, senv, data, evaluator, SMOL, SMOL["seeds"][0], work)
        log(f"{name}: exact {r['exact']} judge sarr {r['judge']['sarr']:.3f} step {r['step_seconds']:.2f}s")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = time.perf_counter() - t0
    report["versions"] = versions()
    files = write_outputs(Path(args.out), "multimodal_smollm2", report, markdown(report), plot)
    log(f"wrote {[str(f) for f in files]}")
    print(markdown(report))
