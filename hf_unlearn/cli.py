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

A model or data argument is a local path, never looked up on the Hub, when it exists on disk or when it
has a shape no Hub id has: it starts with '.', '/' or '~', contains more than one '/' or any '\\',
starts with a drive letter ('C:'), or ends with a data-file extension (.json, .jsonl, .csv, .txt,
.parquet, .arrow). A local path that does not exist is an error ("no such file or directory"); anything
else (e.g. 'gpt2', 'locuslab/TOFU') is a Hub id.

Errors print one line, 'hf-unlearn: error: <message>', on stderr and exit with 2 (bad input or usage)
or 1 (anything else); 'hf-unlearn --debug <command> ...' (before the command) also prints the traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset


@dataclass
class ScriptArguments:
    """Model and data of ``hf-unlearn train`` / ``eval``."""

    model_name_or_path: str = field(
        metadata={
            "help": "Hub id or local folder of the model to unlearn (`hf-unlearn --help` says which names are "
            "local paths)."
        }
    )
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


DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".txt", ".parquet", ".arrow")
# exit codes: bad input or usage (these exception types), anything else
INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
EXIT_INPUT, EXIT_FAILURE = 2, 1


def looks_local(spec: str) -> bool:
    """Whether ``spec`` has a shape no Hub id has, so it can only be a local path: it starts with '.',
    '/' or '~', contains more than one '/' or any backslash, starts with a drive letter, or ends with a
    data-file extension (:data:`DATA_SUFFIXES`)."""
    return (
        spec.startswith((".", "/", "~"))
        or spec.count("/") > 1
        or "\\" in spec
        or re.match(r"[A-Za-z]:[\\/]", spec) is not None
        or spec.lower().endswith(DATA_SUFFIXES)
    )


def resolve_path(spec: str, arg: str | None = None) -> str:
    """``spec`` with ``~`` expanded when it names a local path; ``FileNotFoundError`` ("no such file or
    directory", naming ``arg``) when it looks local (:func:`looks_local`) but does not exist. Hub ids and
    ``tofu:`` specs are returned unchanged."""
    if spec.startswith("tofu:"):
        return spec
    path = Path(spec).expanduser()
    if path.exists():
        return str(path)
    if looks_local(spec):
        raise FileNotFoundError(f"{arg + ': ' if arg else ''}no such file or directory: {spec!r}")
    return spec


def load_data(spec: str, split: str = "train", arg: str | None = None) -> Dataset:
    """A dataset (QA rows, or processed classifier rows) from ``tofu:<split>``, a local file or folder,
    or a Hub dataset name; a local-looking path that does not exist raises ``FileNotFoundError``
    (see :func:`resolve_path`; ``arg`` names the flag in the message)."""
    from datasets import load_dataset, load_from_disk

    from .data.tofu import load_tofu

    if spec.startswith("tofu:"):
        return load_tofu(spec.removeprefix("tofu:"))
    spec = resolve_path(spec, arg)
    path = Path(spec)
    if path.is_file():
        kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix)
        if kind is None:
            raise ValueError(f"cannot read {spec}: use .jsonl, .json, .csv or .parquet")
        return load_dataset(kind, data_files=str(path), split="train")
    if path.is_dir():
        return load_from_disk(str(path))
    return load_dataset(spec, split=split)


def check_paths(**specs: str | None) -> None:
    """:func:`resolve_path` on every given ``--flag=spec`` (``None`` skipped): a missing local path is
    reported before anything slow (model loading) starts."""
    for flag, spec in specs.items():
        if spec is not None:
            resolve_path(spec, f"--{flag}")


def _load_model_and_tokenizer(name: str, tokenizer_name: str | None = None):
    """A causal LM and its tokenizer, or an image/text classifier (tokenizer ``None`` for images)."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    name = resolve_path(name, "--model_name_or_path")
    tokenizer_name = tokenizer_name and resolve_path(tokenizer_name, "--tokenizer_name_or_path")
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

    usage = "hf-unlearn train <method> [flags]; methods: " + ", ".join(e.id for e in list_methods())
    if argv[:1] in (["-h"], ["--help"]):
        print("usage: " + usage)
        return 0
    if not argv or argv[0].startswith("-"):
        raise ValueError("missing <method>: " + usage)
    entry = get_method(argv[0])
    if entry.kind == "continual_trainer":
        raise ValueError(
            f"{entry.id} tunes a LoRA model on one task of a sequence: run it from Python ({entry.cls.__name__} "
            "or hf_unlearn.trainers.reglora.run_task_sequence); the CLI runs the unlearning trainers"
        )
    if entry.kind == "diffusion_trainer":
        raise ValueError(
            f"{entry.id} trains a diffusion UNet: run it from Python ({entry.cls.__name__}, with the UNet, "
            "its noise scheduler and image datasets); the CLI trains language and vision classifiers only"
        )
    if entry.kind != "trainer":
        raise ValueError(
            f"{entry.id} is a {entry.kind.replace('_', ' ')}, not a trainer: it changes no weights. Build it in "
            f"Python ({entry.cls.__name__}); see the README."
        )
    parser = HfArgumentParser((ScriptArguments, entry.config_cls), prog=f"hf-unlearn train {entry.id}")
    script, config = parser.parse_args_into_dataclasses(args=argv[1:])
    check_paths(
        model_name_or_path=script.model_name_or_path,
        tokenizer_name_or_path=script.tokenizer_name_or_path,
        forget_data=script.forget_data,
        retain_data=script.retain_data,
    )
    model, tok = _load_model_and_tokenizer(script.model_name_or_path, script.tokenizer_name_or_path)
    peft_config = None
    if script.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=script.lora_r, lora_alpha=script.lora_alpha, task_type="CAUSAL_LM")
    forget = load_data(script.forget_data, script.data_split, "--forget_data")
    retain = load_data(script.retain_data, script.data_split, "--retain_data") if script.retain_data else None
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


EVAL_SPLITS = ("forget", "retain", "real_authors", "world_facts", "test")


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
    check_paths(
        model_name_or_path=a.model_name_or_path,
        retain_model=a.retain_model,
        **{f"{name}_data": getattr(a, f"{name}_data") for name in EVAL_SPLITS},
    )
    model, tok = _load_model_and_tokenizer(a.model_name_or_path)
    if "Classification" in type(model).__name__:
        return _eval_classifier(model, a)
    splits = {"forget": load_data(a.forget_data, arg="--forget_data")}
    for name in ("retain", "real_authors", "world_facts"):
        spec = getattr(a, f"{name}_data")
        if spec:
            splits[name] = load_data(spec, arg=f"--{name}_data")
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
    data = {k: load_data(getattr(a, f"{k}_data"), arg=f"--{k}_data") for k in ("forget", "retain", "test")}
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
    """Run ``hf-unlearn`` on ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Exceptions are caught here: one line ``hf-unlearn: error: <message>`` goes to stderr and the code is
    2 for bad input or usage (:data:`INPUT_ERRORS`), 1 otherwise; a leading ``--debug`` also prints the
    traceback. argparse's own usage errors exit 2 as usual.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = argv[:1] == ["--debug"]
    if debug:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else EXIT_INPUT
    try:
        if argv[0] not in COMMANDS:
            raise ValueError(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)} (or --help)")
        return COMMANDS[argv[0]](argv[1:])
    except KeyboardInterrupt:
        print("hf-unlearn: error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the top level: report, do not crash
        code = EXIT_INPUT if isinstance(e, INPUT_ERRORS) else EXIT_FAILURE
        if debug:
            traceback.print_exc()
        print(f"hf-unlearn: error: {_one_line(e, code, debug)}", file=sys.stderr)
        return code


def _one_line(e: BaseException, code: int, debug: bool) -> str:
    message = " ".join(str(e).split())
    if code != EXIT_INPUT and (not message or isinstance(e, KeyError)):
        message = f"{type(e).__name__}: {message}".rstrip(": ")
    if code != EXIT_INPUT and not debug:
        message += " (run `hf-unlearn --debug ...` for the traceback)"
    return message


if __name__ == "__main__":
    raise SystemExit(main())
