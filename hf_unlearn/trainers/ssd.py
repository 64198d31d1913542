"""SSD: Selective Synaptic Dampening (Foster, Schoepf & Brintrup, AAAI 2024, arXiv 2308.07707).

Retrain-free: ``SSDTrainer.train()`` takes no optimizer step. It computes the diagonal Fisher importance
of every parameter on the forget set (I_f) and on the full training data (I_D, or loads it from a
safetensors file computed earlier), selects the parameters that matter much more to the forget set,
I_f > α·I_D, and dampens them, θ ← min(λ·I_D / I_f, 1)·θ (paper Sec. 3, Eq. 3–4). With
``selection="adaptive"`` (adaptive SSD, arXiv 2402.10098) α is not tuned but set to a percentile of the
ratios I_f / I_D (:func:`~hf_unlearn.importance.fisher.adaptive_alpha`). The maths lives in
:mod:`hf_unlearn.importance.fisher`.

Works for image/text classifiers and for causal LMs on question/answer data (any model whose forward
returns a loss). Under ``torchrun`` every process computes importances on its share of the batches; the
sums are reduced across processes before the edit, so every rank applies the same edit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import concatenate_datasets

from ..importance.fisher import (
    DEFINITIONS,
    accumulate_importance,
    adaptive_alpha,
    check_importance,
    dampen_,
    load_importance,
    save_importance,
    trainable_parameters,
)
from ..papers import SSD_PAPER
from ..registry import register_method
from .base import UnlearnConfig, is_peft_model
from .one_shot import OneShotTrainer

FULL_IMPORTANCE_FILE = "ssd_full_importance.safetensors"
SELECTIONS = ("fixed", "adaptive")


@dataclass
class SSDConfig(UnlearnConfig):
    """SSD's hyper-parameters (reference defaults: α = 10, λ = 1, batch 64 for ResNet18 full-class)."""

    selection_weighting: float = field(
        default=10.0, metadata={"help": "α: a parameter is selected when I_f > α·I_D (must be > 0)."}
    )
    selection: str = field(
        default="fixed",
        metadata={
            "help": "fixed: α = selection_weighting (SSD); adaptive: α = the adaptive_percentile-th percentile of "
            "the importance ratios I_f/I_D over all parameter elements (adaptive SSD, arXiv 2402.10098; "
            "selection_weighting unused)."
        },
    )
    adaptive_percentile: float = field(
        default=99.0,
        metadata={
            "help": "Adaptive SSD: the percentile of I_f/I_D that becomes α (0-100; our default, see the README)."
        },
    )
    dampening_constant: float = field(
        default=1.0, metadata={"help": "λ: selected parameters are scaled by min(λ·I_D/I_f, 1) (>= 0)."}
    )
    importance_batch_size: int = field(
        default=64,
        metadata={
            "help": "Batch size of the importance passes (per process). With importance_definition='batch' "
            "the importances scale with it: re-tune α if you change it."
        },
    )
    importance_definition: str = field(
        default="batch",
        metadata={
            "help": "'batch': squared batch-mean gradients averaged over batches (reference code); "
            "'per_sample': squared per-sample gradients averaged over samples (batch-size independent)."
        },
    )
    label_free: bool = field(
        default=False,
        metadata={"help": "LFSSD: importance from |∇ mean ||logits||²| instead of the labelled loss."},
    )
    full_importance_path: str | None = field(
        default=None,
        metadata={"help": "A saved I_D (safetensors) to reuse instead of a pass over the full data."},
    )
    save_full_importance: bool = field(
        default=True,
        metadata={"help": f"Save the computed I_D as output_dir/{FULL_IMPORTANCE_FILE} for later requests."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.selection_weighting > 0:  # also rejects NaN
            raise ValueError(f"selection_weighting (α) must be > 0, got {self.selection_weighting}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if not 0 < self.adaptive_percentile < 100:
            raise ValueError(f"adaptive_percentile must be in (0, 100), got {self.adaptive_percentile}")
        if not (self.dampening_constant >= 0 and math.isfinite(self.dampening_constant)):
            raise ValueError(
                f"dampening_constant (λ) must be a finite number >= 0, got {self.dampening_constant}"
            )
        if self.importance_batch_size < 1:
            raise ValueError(f"importance_batch_size must be >= 1, got {self.importance_batch_size}")
        if self.importance_definition not in DEFINITIONS:
            raise ValueError(
                f"importance_definition must be one of {DEFINITIONS}, got {self.importance_definition!r}"
            )


@register_method("trainer", SSDConfig)
class SSDTrainer(OneShotTrainer):
    """Selective Synaptic Dampening as a ``Trainer`` whose ``train()`` performs the one-shot edit.

    The full-data importance I_D comes from, in this order: ``full_importance`` (a dict or a path),
    ``args.full_importance_path``, ``full_dataset`` (the whole training set), or ``retain_dataset``
    (then D = retain ∪ forget, as in the reference code).

    Every importance is checked before any weight changes (one finite tensor >= 0 per trainable
    parameter, of its shape; an all-zero I_D is refused): a given I_D in ``__init__``, computed ones as
    soon as they are computed, so a NaN I_D is never saved. The edit itself is all or nothing
    (:func:`~hf_unlearn.importance.fisher.dampen_`).
    """

    _name = "ssd"
    _paper = SSD_PAPER
    _tag_names = ["ssd", "selective-synaptic-dampening", "retrain-free"]
    config_class = SSDConfig
    supported_tasks = ("causal_lm", "classification")

    def __init__(self, *args, full_dataset=None, full_importance=None, **kwargs):
        self._full_dataset, self._full_importance = full_dataset, full_importance
        self.dampened: dict[str, int] = {}
        self.alpha: float | None = None  # the α of the last edit (adaptive: computed from the importances)
        super().__init__(*args, **kwargs)

    def check_inputs(self, model, args, peft_config) -> None:
        if peft_config is not None or is_peft_model(model):
            raise TypeError(
                "SSDTrainer edits the model's own weights, not adapters: merge the adapter first "
                "(model = model.merge_and_unload()) and pass the plain model (no peft_config)"
            )

    def setup(self) -> None:
        a, full_dataset, full_importance = self.args, self._full_dataset, self._full_importance
        self.full_importance = full_importance if full_importance is not None else a.full_importance_path
        self.full_view = None
        if self.full_importance is None:
            tok = self.processing_class
            if full_dataset is not None:
                self.full_view = self.prepare_dataset(full_dataset, "full_dataset", tok, a)
            elif self.retain_raw is not None:
                self.full_view = concatenate_datasets(
                    [
                        self.prepare_dataset(self.retain_raw, "retain_dataset", tok, a),
                        self.train_dataset.views["forget"],
                    ]
                )
            else:
                raise ValueError(
                    "SSDTrainer needs the full-data importance I_D: pass retain_dataset (D = retain ∪ forget), "
                    "full_dataset, or a saved importance (full_importance= or args.full_importance_path)"
                )
        elif isinstance(self.full_importance, (str, Path)):
            self.full_importance, meta = load_importance(self.full_importance, self.model)
            self._check_importance_meta(meta)
        else:
            check_importance(
                self.full_importance,
                trainable_parameters(self.model),
                "full_importance",
                allow_all_zero=False,
            )

    def _check_importance_meta(self, meta: dict) -> None:
        a = self.args
        for key, want in (("definition", a.importance_definition), ("label_free", a.label_free)):
            if key in meta and meta[key] != want:
                raise ValueError(
                    f"the saved importance used {key}={meta[key]!r} but this run uses {want!r}; "
                    "I_f and I_D must be computed the same way"
                )

    def importance(self, dataset, desc: str | None = None) -> dict[str, torch.Tensor]:
        """I over ``dataset``: whole tensors on every process, equal to the single-process importance
        (also for FSDP2-sharded parameters; ZeRO-3 partitions are refused: :meth:`pass_sums`)."""
        a = self.args
        sums, count = self.pass_sums(
            dataset,
            a.importance_batch_size,
            lambda batches: accumulate_importance(self.model, batches, a.importance_definition, a.label_free),
            desc,
        )
        return {n: s / count for n, s in sums.items()}

    def checked_importance(self, dataset, what: str, allow_all_zero: bool = True) -> dict[str, torch.Tensor]:
        """:meth:`importance` over ``dataset``, refused with ``ValueError`` naming ``what`` unless it is
        finite (a NaN/inf input row makes it NaN) and, for I_D, not zero everywhere."""
        importance = self.importance(dataset, f"SSD: {what}")
        check_importance(importance, trainable_parameters(self.model), what, allow_all_zero)
        return importance

    def edit(self) -> tuple[dict[str, float], float]:
        """Compute I_f (and I_D), then dampen the selected parameters in place. No optimizer steps."""
        a = self.args
        i_forget = self.checked_importance(self.train_dataset.views["forget"], "the forget importance I_f")
        if self.full_view is not None:
            i_full = self.checked_importance(
                self.full_view, "the full-data importance I_D", allow_all_zero=False
            )
            if a.save_full_importance and self.is_world_process_zero():
                save_importance(
                    i_full,
                    Path(a.output_dir) / FULL_IMPORTANCE_FILE,
                    self.accelerator.unwrap_model(self.model),
                    definition=a.importance_definition,
                    label_free=a.label_free,
                    batch_size=a.importance_batch_size,
                    num_rows=len(self.full_view),
                )
        else:
            i_full = self.full_importance
        alpha = (
            adaptive_alpha(i_full, i_forget, a.adaptive_percentile)
            if a.selection == "adaptive"
            else a.selection_weighting
        )
        self.dampened = dampen_(self.model, i_full, i_forget, alpha, a.dampening_constant)
        self.alpha = alpha
        total = sum(p.numel() for n, p in self.model.named_parameters() if n in i_forget)
        figures = {
            "alpha": alpha,
            "dampened_parameters": sum(self.dampened.values()),
            "dampened_fraction": sum(self.dampened.values()) / max(total, 1),
        }
        return figures, 0.0

    def _alpha_text(self) -> str:
        if self.args.selection == "fixed":
            return f"{self.args.selection_weighting}"
        value = "computed at the edit" if self.alpha is None else f"{self.alpha:.4g}"
        return (
            f"{value} (adaptive SSD: the {self.args.adaptive_percentile:g}th percentile of the importance ratios "
            "I_f/I_D, arXiv 2402.10098)"
        )

    def card_notes(self) -> str | None:
        a = self.args
        lines = [
            "### SSD edit",
            f"- selection weighting α = {self._alpha_text()}, dampening constant λ = {a.dampening_constant}",
            f"- importance: {a.importance_definition} definition, batch size {a.importance_batch_size}"
            f"{', label-free (LFSSD)' if a.label_free else ''}; I_D "
            f"{'computed on the full data' if self.full_view is not None else 'loaded from a saved file'}",
        ]
        if not self.dampened:
            return "\n".join([*lines, "- the edit has not been applied yet"])
        per_module = defaultdict(lambda: [0, 0])
        sizes = dict(self.model.named_parameters())
        for name, n in self.dampened.items():
            layer = name.rsplit(".", 1)[0]
            per_module[layer][0] += n
            per_module[layer][1] += sizes[name].numel()
        total = sum(self.dampened.values())
        lines += [
            f"- dampened parameters: {total:,} in total",
            "",
            "| module | dampened | of |",
            "|---|---|---|",
        ]
        rows = [(m, d, t) for m, (d, t) in per_module.items() if d]
        for m, d, t in rows[:80]:
            lines.append(f"| `{m}` | {d:,} | {t:,} |")
        if len(rows) > 80:
            lines.append(f"| … {len(rows) - 80} more modules | | |")
        return "\n".join(lines)
