"""``hf-unlearn``: list methods, unlearn, evaluate, and run the built-in demo.

    hf-unlearn list
    hf-unlearn train flat --model_name_or_path MODEL --forget_data tofu:forget01 --output_dir out [--divergence js ...]
    hf-unlearn eval --model_name_or_path out --forget_data tofu:forget01 --retain_data tofu:retain ...
    hf-unlearn train ssd --model_name_or_path my-resnet --forget_data forget_dir --retain_data retain_dir --output_dir out
    hf-unlearn eval --model_name_or_path out --forget_data forget_dir --retain_data retain_dir --test_data test_dir
    hf-unlearn demo --output_dir demo_out

Every config field of a method is a flag of ``train`` (``transformers.HfArgumentParser``); ``train
<method> --help`` lists them with the paper's symbols. Models and data are Hub names or local paths;
``tofu:<split>`` reads TOFU (the Hub dataset, or ``$HF_UNLEARN_TOFU_PATH``). Image/text classifiers
(SSD, SalUn, IAU, GA, GradDiff) take datasets of processed rows (``pixel_values`` or ``input_ids`` and a
label), e.g. ``save_to_disk`` folders; ``eval`` then reports UA/RA/TA/MIA instead of TOFU metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset


@dataclass
class ScriptArguments:
    """Model and data of ``hf-unlearn train`` / ``eval``."""

    model_name_or_path: str = field(metadata={"help": "Hub id or local folder of the model to unlearn."})
    forget_data: str = field(
        metadata={
            "help": "Forget set: tofu:<split>, a .jsonl/.json/.csv file, a save_to_disk folder or a Hub dataset."
        }
    )
    retain_data: str | None = field(
        default=None, metadata={"help": "Retain set (same forms as forget_data)."}
    )
    data_split: str = field(default="train", metadata={"help": "Split to read from Hub datasets."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer (default: the model's)."}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 = full fine-tuning (FLAT's default)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})


def load_data(spec: str, split: str = "train") -> Dataset:
    """A dataset (QA rows, or processed classifier rows) from ``tofu:<split>``, a local file or folder,
    or a Hub dataset name."""
    from datasets import load_dataset, load_from_disk

    from .data.tofu import load_tofu

    if spec.startswith("tofu:"):
        return load_tofu(spec.removeprefix("tofu:"))
    path = Path(spec)
    if path.is_file():
        kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix)
        if kind is None:
            raise ValueError(f"cannot read {spec}: use .jsonl, .json, .csv or .parquet")
        return load_dataset(kind, data_files=str(path), split="train")
    if path.is_dir():
        return load_from_disk(str(path))
    return load_dataset(spec, split=split)


def _load_model_and_tokenizer(name: str, tokenizer_name: str | None = None):
    """A causal LM and its tokenizer, or an image/text classifier (tokenizer ``None`` for images)."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    archs = getattr(AutoConfig.from_pretrained(name), "architectures", None) or []
    if any(a.endswith("ForImageClassification") for a in archs):
        return AutoModelForImageClassification.from_pretrained(name, use_safetensors=True), None
    if any(a.endswith("ForSequenceClassification") for a in archs):
        model = AutoModelForSequenceClassification.from_pretrained(name, use_safetensors=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(name, use_safetensors=True)
    return model, AutoTokenizer.from_pretrained(tokenizer_name or name)


def cmd_list(argv: list[str]) -> int:
    from .registry import list_methods

    rows = [(e.id, e.kind, e.cls.__name__, e.paper.title, e.paper.link or "") for e in list_methods()]
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(width[i]) for i in range(4)) + "  " + r[4])
    return 0


def cmd_train(argv: list[str]) -> int:
    from transformers import HfArgumentParser

    from .registry import get_method, list_methods

    if not argv or argv[0].startswith("-"):
        print("usage: hf-unlearn train <method> [flags]; methods: " + ", ".join(e.id for e in list_methods()))
        return 2
    entry = get_method(argv[0])
    if entry.kind != "trainer":
        print(
            f"{entry.id} is a {entry.kind.replace('_', ' ')}, not a trainer: it changes no weights. Build it in "
            f"Python ({entry.cls.__name__}); see the README."
        )
        return 2
    parser = HfArgumentParser((ScriptArguments, entry.config_cls), prog=f"hf-unlearn train {entry.id}")
    script, config = parser.parse_args_into_dataclasses(args=argv[1:])
    model, tok = _load_model_and_tokenizer(script.model_name_or_path, script.tokenizer_name_or_path)
    peft_config = None
    if script.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=script.lora_r, lora_alpha=script.lora_alpha, task_type="CAUSAL_LM")
    forget = load_data(script.forget_data, script.data_split)
    retain = load_data(script.retain_data, script.data_split) if script.retain_data else None
    trainer = entry.cls(
        model=model,
        args=config,
        forget_dataset=forget,
        retain_dataset=retain,
        processing_class=tok,
        peft_config=peft_config,
    )
    trainer.train()
    trainer.save_model()
    if config.push_to_hub:
        trainer.push_to_hub()
    print(f"unlearned model and model card written to {config.output_dir}")
    return 0


def cmd_eval(argv: list[str]) -> int:
    from .evaluation import evaluate_tofu, model_truth_ratios

    p = argparse.ArgumentParser(
        prog="hf-unlearn eval", description="TOFU-style forget quality and model utility"
    )
    p.add_argument("--model_name_or_path", required=True)
    p.add_argument("--forget_data", required=True)
    p.add_argument("--retain_data")
    p.add_argument("--real_authors_data")
    p.add_argument("--world_facts_data")
    p.add_argument("--test_data", help="classifiers: held-out test rows (TA and the MIA's non-members)")
    p.add_argument("--retain_model", help="model never trained on the forget set, for forget quality")
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--output", help="write the metrics as JSON here")
    a = p.parse_args(argv)
    model, tok = _load_model_and_tokenizer(a.model_name_or_path)
    if "Classification" in type(model).__name__:
        return _eval_classifier(model, a)
    splits = {"forget": load_data(a.forget_data)}
    for name in ("retain", "real_authors", "world_facts"):
        spec = getattr(a, f"{name}_data")
        if spec:
            splits[name] = load_data(spec)
    ref = None
    if a.retain_model:
        rmodel, rtok = _load_model_and_tokenizer(a.retain_model)
        ref = model_truth_ratios(rmodel, rtok, splits["forget"], batch_size=a.batch_size)
    result = evaluate_tofu(model, tok, splits, ref, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size)
    result.pop("forget_truth_ratios", None)
    text = json.dumps(result, indent=2)
    if a.output:
        Path(a.output).write_text(text)
    print(text)
    return 0


def _eval_classifier(model, a) -> int:
    from .evaluation import evaluate_unlearning

    if not (a.retain_data and a.test_data):
        raise ValueError("evaluating a classifier needs --forget_data, --retain_data and --test_data")
    data = {k: load_data(getattr(a, f"{k}_data")) for k in ("forget", "retain", "test")}
    result = evaluate_unlearning(model, data["forget"], data["retain"], data["test"], batch_size=a.batch_size)
    text = json.dumps(result, indent=2)
    if a.output:
        Path(a.output).write_text(text)
    print(text)
    return 0


def cmd_demo(argv: list[str]) -> int:
    from .demo import run_demo

    p = argparse.ArgumentParser(prog="hf-unlearn demo", description="unlearn on built-in data (no downloads)")
    p.add_argument("--output_dir", default="demo_out")
    p.add_argument("--divergence", default="kl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--learning_rate", type=float, default=5e-4)
    a = p.parse_args(argv)
    report = run_demo(
        a.output_dir, divergence=a.divergence, seed=a.seed, steps=a.steps, learning_rate=a.learning_rate
    )
    print(report["markdown"])
    return 0


COMMANDS = {"list": cmd_list, "train": cmd_train, "eval": cmd_eval, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
