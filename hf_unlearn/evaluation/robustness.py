"""Does the forgetting last? Two attacks on an unlearned causal LM, usable with the output of every trainer.

* :func:`relearning_attack`: fine-tune a *copy* of the model for k steps on related data (a part of the
  forget set, or retain data) and measure the forget metrics on held-out forget rows after each k in
  ``steps`` — the relearning curve. Run the same attack on the retain model (which never saw the forget
  set) for the gold standard: knowledge that was removed comes back no faster than it is learnt from scratch,
  knowledge that was only suppressed returns within a few steps (Hu et al., 2024, "Jogging the memory of
  unlearned LLMs through targeted relearning attacks", arXiv 2406.13356; Łucki et al., 2024, arXiv 2409.18025).
* :func:`quantization_attack`: the forget metrics after casting a copy to bfloat16 and after weight-only
  round-to-nearest int8 / int4 quantization (Zhang et al., 2024, "Catastrophic failure of LLM unlearning via
  quantization", arXiv 2410.16454: an unlearned model whose weight changes are smaller than the rounding
  step can get its answers back when quantized).

Both evaluate with :func:`hf_unlearn.evaluation.evaluate_tofu` on ``{"forget": eval_dataset}``: forget
probability, ROUGE-L recall, truth ratio and, given the retain model's truth ratios on the same rows,
forget quality. The caller's model is never modified.
"""

from __future__ import annotations

import copy
import math
import tempfile
import warnings
from collections.abc import Sequence

import torch
from datasets import Dataset

from ..data.qa import QACollator, check_qa_columns, tokenize_qa_dataset
from .tofu import _pad_token_id, check_split, evaluate_tofu

PRECISIONS = ("original", "bfloat16", "int8", "int4")


def _forget_metrics(model, tokenizer, eval_dataset, retain_truth_ratios, eval_kwargs) -> dict:
    res = evaluate_tofu(model, tokenizer, {"forget": eval_dataset}, retain_truth_ratios, **eval_kwargs)
    f = res["splits"]["forget"]
    out = {
        "forget_probability": f["probability"],
        "forget_rouge_l": f["rouge_l_recall"],
        "forget_truth_ratio": f["truth_ratio"],
    }
    if retain_truth_ratios is not None:
        out["forget_quality"] = res["forget_quality"]
    return out


def _check_steps(steps: Sequence[int]) -> list[int]:
    steps = sorted(set(steps))
    if not steps or any(not isinstance(k, int) or isinstance(k, bool) or k < 0 for k in steps):
        raise ValueError(f"steps must be a non-empty list of integers >= 0, got {steps}")
    return steps


def relearning_attack(
    model,
    tokenizer,
    attack_dataset: Dataset,
    eval_dataset: Dataset,
    *,
    steps: Sequence[int] = (0, 5, 10, 20),
    learning_rate: float = 1e-4,
    batch_size: int = 8,
    max_length: int = 256,
    retain_truth_ratios: Sequence[float] | None = None,
    seed: int = 0,
    eval_kwargs: dict | None = None,
    disable_tqdm: bool = True,
) -> dict:
    """Fine-tune a copy of ``model`` on ``attack_dataset`` (question/answer rows, loss on the answer tokens;
    AdamW at a constant ``learning_rate``, no weight decay) and score ``eval_dataset`` before step 1 and after
    each step count in ``steps``.

    Only the copy's parameters with ``requires_grad`` train, so freeze what the attacker may not touch (e.g.
    the layers frozen during unlearning) before calling; a PEFT model trains its adapters.
    ``retain_truth_ratios`` (:func:`~hf_unlearn.evaluation.model_truth_ratios` of the retain model on
    ``eval_dataset``, computed with the same ``eval_kwargs``) adds forget quality. ``eval_kwargs`` go to
    :func:`~hf_unlearn.evaluation.evaluate_tofu` (``max_new_tokens``, ``batch_size``, ``n_perturbed``, ...).

    Returns ``{"steps": [k...], "forget_probability": [...], "forget_rouge_l": [...],
    "forget_truth_ratio": [...], ("forget_quality": [...]), "train_loss": [loss at each k > 0 ...],
    "attack_rows": int, "eval_rows": int}``; the lists are aligned with ``steps``.
    """
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    steps = _check_steps(steps)
    if not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_qa_columns(attack_dataset, "attack_dataset")
    check_split("eval_dataset", eval_dataset)
    if retain_truth_ratios is not None and len(retain_truth_ratios) != len(eval_dataset):
        raise ValueError(
            f"retain_truth_ratios has {len(retain_truth_ratios)} values but eval_dataset has {len(eval_dataset)} "
            "rows; compute them on the same rows"
        )
    eval_kwargs = {
        "max_length": max_length,
        "disable_tqdm": disable_tqdm,
        "seed": seed,
        **(eval_kwargs or {}),
    }
    train = tokenize_qa_dataset(attack_dataset, tokenizer, max_length, name="attack_dataset")
    attacked = copy.deepcopy(model)  # the caller's model is never touched
    if not any(p.requires_grad for p in attacked.parameters()):
        raise ValueError("the model has no parameter with requires_grad: the attack would train nothing")
    curve: dict[str, list] = {"steps": [], "train_loss": []}

    def record(k: int, loss: float | None) -> None:
        metrics = _forget_metrics(attacked, tokenizer, eval_dataset, retain_truth_ratios, eval_kwargs)
        curve["steps"].append(k)
        for name, value in metrics.items():
            curve.setdefault(name, []).append(value)
        if loss is not None:
            curve["train_loss"].append(loss)

    class EvalAtSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in steps:
                logs = [h["loss"] for h in state.log_history if "loss" in h]
                record(state.global_step, logs[-1] if logs else None)

    if steps[0] == 0:
        record(0, None)
    if steps[-1] > 0:
        device = next(attacked.parameters()).device
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(
                output_dir=tmp,
                max_steps=steps[-1],
                per_device_train_batch_size=batch_size,
                learning_rate=learning_rate,
                lr_scheduler_type="constant",
                weight_decay=0.0,
                logging_steps=1,
                save_strategy="no",
                report_to=[],
                seed=seed,
                data_seed=seed,
                disable_tqdm=disable_tqdm,
                use_cpu=device.type == "cpu",
            )
            trainer = Trainer(
                model=attacked,
                args=args,
                train_dataset=train,
                data_collator=QACollator(_pad_token_id(tokenizer)),
                callbacks=[EvalAtSteps()],
            )
            trainer.remove_callback(PrinterCallback)
            trainer.train()
        if not all(math.isfinite(x) for x in curve["train_loss"]):
            raise ValueError(
                f"the relearning attack's loss became NaN/inf ({curve['train_loss']}): lower learning_rate"
            )
    curve.update(attack_rows=len(attack_dataset), eval_rows=len(eval_dataset))
    return curve


def quantize_weights_(model, bits: int, group_size: int = 128) -> int:
    """Weight-only round-to-nearest quantization of every ``nn.Linear`` of ``model``, in place, simulated:
    each row of a weight is cut into groups of ``group_size`` inputs, each group scaled by max|w| / (2^(b−1) − 1)
    and rounded to the symmetric integer grid, then multiplied back (what a weight-only int-b kernel computes,
    up to accumulation precision). The output embedding is skipped when it is tied to the input embedding.
    Returns the number of quantized weight matrices.
    """
    if bits < 2 or bits > 16:
        raise ValueError(f"bits must be in [2, 16], got {bits}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    qmax = 2 ** (bits - 1) - 1
    tied = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    skip = tied if tied is not None and embed is not None and tied.weight is embed.weight else None
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, torch.nn.Linear) or module is skip:
                continue
            w = module.weight
            out_f, in_f = w.shape
            pad = (-in_f) % group_size
            groups = torch.nn.functional.pad(w.float(), (0, pad)).reshape(out_f, -1, group_size)
            scale = groups.abs().amax(-1, keepdim=True).clamp(min=1e-12) / qmax
            q = (groups / scale).round().clamp(-qmax - 1, qmax) * scale
            w.copy_(q.reshape(out_f, -1)[:, :in_f].to(w.dtype))
            count += 1
    return count


def quantization_attack(
    model,
    tokenizer,
    eval_dataset: Dataset,
    *,
    precisions: Sequence[str] = PRECISIONS,
    group_size: int = 128,
    retain_truth_ratios: Sequence[float] | None = None,
    eval_kwargs: dict | None = None,
) -> dict:
    """The forget metrics of copies of ``model`` at each precision: ``"original"`` (the model as given),
    ``"bfloat16"`` (cast), ``"int8"`` / ``"int4"`` (:func:`quantize_weights_`, group size ``group_size``).
    Returns ``{precision: {"forget_probability", "forget_rouge_l", "forget_truth_ratio", ("forget_quality")}}``.
    """
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise ValueError(f"precisions must be a non-empty subset of {PRECISIONS}, got {list(precisions)}")
    check_split("eval_dataset", eval_dataset)
    eval_kwargs = {"disable_tqdm": True, **(eval_kwargs or {})}
    out = {}
    for precision in precisions:
        if precision == "original":
            variant = model
        else:
            variant = copy.deepcopy(model)
            if precision == "bfloat16":
                variant = variant.to(torch.bfloat16)
            else:
                quantize_weights_(variant, int(precision[3:]), group_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[precision] = _forget_metrics(
                variant, tokenizer, eval_dataset, retain_truth_ratios, eval_kwargs
            )
        del variant
    return out
