"""The baselines users compare against: GA, GradDiff, NPO and IDK fine-tuning.

All share :class:`UnlearnTrainer`'s data pipeline; each defines only its loss.
- GA (gradient ascent): maximise the forget NLL, L = −NLL(forget).
- GradDiff: L = −NLL(forget) + λ·NLL(retain) (Liu et al., 2022; TOFU's "grad_diff").
- NPO: L = NPO(forget; π_ref) + λ·NLL(retain) when a retain set is given (Zhang et al., 2024).
- IDK: fine-tune on the forget questions with refusal answers, L = NLL(x_f, y_idk) + λ·NLL(retain)
  (TOFU's "idk" baseline; SafeEraser's "PO").
- NPO+KL: L = NPO(forget; π_ref) + λ·KL(π_ref ‖ π_θ) on the retain rows (Zhang et al., 2024, Sec. 5).
- SimNPO: L = −(2/β)·logσ(β·NLL̄(forget) − γ) + λ·NLL(retain) when a retain set is given; no reference
  model (Fan et al., 2024).
- KL: L = −NLL(forget) + λ·KL(p_orig ‖ p_θ) on the retain rows (TOFU's "KL"; SafeEraser's ``kl``).
Every one also takes SafeEraser's Prompt-Decouple rows (``pd_dataset``, :class:`UnlearnTrainer`).
NLL is the mean over answer tokens of each sample, averaged over the batch. GA and GradDiff also take
image/text classifiers, with the cross-entropy of the true label in place of the NLL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..losses.common import sequence_logprob, sequence_nll
from ..losses.kl import KL_REDUCTIONS, retain_kl
from ..losses.npo import npo_loss, simnpo_loss
from ..papers import NPO_PAPER, SIMNPO_PAPER, TOFU_PAPER
from ..registry import register_method
from .base import UnlearnConfig
from .forget_retain import TemplateAnswerArgs, UnlearnTrainer


@dataclass
class GAConfig(UnlearnConfig):
    """Gradient ascent has no hyper-parameters beyond :class:`UnlearnConfig`."""


@register_method("trainer", GAConfig)
class GATrainer(UnlearnTrainer):
    """Gradient ascent on the forget answers: L = −NLL(forget)."""

    _name = "ga"
    _paper = TOFU_PAPER
    _tag_names = ["gradient-ascent"]
    config_class = GAConfig
    pd_default_weight = 0.5  # SafeEraser's gapd / gdpd
    supported_tasks = ("causal_lm", "classification", "vision_language")
    uses_retain = False

    def unlearning_loss(self, model, inputs):
        nll_f = self.sample_losses(model, inputs["forget"]).mean()
        return -nll_f, {"forget_nll": nll_f.detach()}


@dataclass
class GradDiffConfig(UnlearnConfig):
    """GradDiff: ``retain_weight`` is λ of L = −NLL(forget) + λ·NLL(retain)."""

    pd_retain_weight: float | None = field(
        default=0.5,
        metadata={
            "help": "λ when a pd_dataset is given (SafeEraser's gdpd halves the retain term: 0.5); "
            "None: retain_weight."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        w = self.pd_retain_weight
        if w is not None and not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"pd_retain_weight must be a finite number >= 0, got {w}")


@register_method("trainer", GradDiffConfig)
class GradDiffTrainer(UnlearnTrainer):
    """Gradient difference: L = −NLL(forget) + λ·NLL(retain), λ = ``retain_weight``."""

    _name = "graddiff"
    _paper = TOFU_PAPER
    _tag_names = ["gradient-difference"]
    config_class = GradDiffConfig
    pd_default_weight = 0.5  # SafeEraser's gapd / gdpd
    supported_tasks = ("causal_lm", "classification", "vision_language")
    requires_retain = True

    def unlearning_loss(self, model, inputs):
        nll_f = self.sample_losses(model, inputs["forget"]).mean()
        nll_r = self.sample_losses(model, inputs["retain"]).mean()
        weight = self.args.retain_weight
        if "pd" in inputs and self.args.pd_retain_weight is not None:
            weight = self.args.pd_retain_weight
        return -nll_f + weight * nll_r, {
            "forget_nll": nll_f.detach(),
            "retain_nll": nll_r.detach(),
        }


@dataclass
class NPOConfig(UnlearnConfig):
    beta: float = field(default=0.1, metadata={"help": "β of the NPO loss (inverse temperature)."})

    def __post_init__(self):
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"NPO beta must be > 0, got {self.beta}")


def _check_kl_reduction(value: str) -> None:
    if value not in KL_REDUCTIONS:
        raise ValueError(f"kl_reduction must be one of {KL_REDUCTIONS}, got {value!r}")


KL_REDUCTION_HELP = (
    "answer_tokens: the mean KL over the retain answer positions; reference: the batchmean over every "
    "flattened position (prompt, image and padding too), as TOFU's, SafeEraser's and open-unlearning's code."
)


@register_method("trainer", NPOConfig)
class NPOTrainer(UnlearnTrainer):
    """NPO against a frozen reference model (+ λ·NLL(retain) when a retain set is given: NPO+RT).

    The reference is the adapter-disabled base for PEFT models (no copy), else one frozen copy of the
    model as it was when the trainer was built (or ``ref_model``).
    """

    _name = "npo"
    _paper = NPO_PAPER
    _tag_names = ["npo"]
    config_class = NPOConfig
    supported_tasks = ("causal_lm", "vision_language")
    needs_ref_model = True

    def npo_term(self, model, inputs):
        f = inputs["forget"]
        logp = sequence_logprob(self.forward(model, f), f["labels"])
        ref_logp = sequence_logprob(self.ref_forward(model, f), f["labels"])
        loss = npo_loss(logp, ref_logp, self.args.beta)
        return loss, {"npo_loss": loss.detach(), "forget_logratio": (logp - ref_logp).mean().detach()}

    def unlearning_loss(self, model, inputs):
        loss, logs = self.npo_term(model, inputs)
        if "retain" in inputs:
            nll_r = self.mean_nll(model, inputs["retain"])
            loss = loss + self.args.retain_weight * nll_r
            logs["retain_nll"] = nll_r.detach()
        return loss, logs


@dataclass
class NPOKLConfig(NPOConfig):
    """NPO+KL: ``retain_weight`` is λ of L = NPO(forget) + λ·KL(π_ref ‖ π_θ) on the retain rows."""

    kl_reduction: str = field(default="answer_tokens", metadata={"help": KL_REDUCTION_HELP})

    def __post_init__(self):
        super().__post_init__()
        _check_kl_reduction(self.kl_reduction)


@register_method("trainer", NPOKLConfig)
class NPOKLTrainer(NPOTrainer):
    """NPO with the retain term of the NPO paper's NPO-KL (Zhang et al., 2024, Sec. 5): the retain rows'
    next-token distributions are held to the reference model's, L = L_NPO + λ·KL(π_ref ‖ π_θ), instead of
    NPO+RT's retain NLL. One frozen reference serves both terms."""

    _name = "npo_kl"
    _paper = NPO_PAPER
    _tag_names = ["npo", "npo-kl"]
    config_class = NPOKLConfig
    requires_retain = True

    def unlearning_loss(self, model, inputs):
        loss, logs = self.npo_term(model, inputs)
        r = inputs["retain"]
        kl = retain_kl(
            self.forward(model, r), self.ref_forward(model, r), r["labels"], self.args.kl_reduction
        )
        return loss + self.args.retain_weight * kl, {**logs, "retain_kl": kl.detach()}


@dataclass
class SimNPOConfig(UnlearnConfig):
    """SimNPO: β and γ of L = −(2/β)·logσ(β·NLL̄ − γ) (+ ``retain_weight`` · NLL(retain) with a retain set)."""

    beta: float = field(
        default=2.5, metadata={"help": "β of SimNPO (inverse temperature of the length-normalised reward)."}
    )
    gamma: float = field(
        default=0.0,
        metadata={"help": "γ, the reward margin (open-unlearning's δ = γ/β; its default δ = 0)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"SimNPO beta must be a finite number > 0, got {self.beta}")
        if not math.isfinite(self.gamma):
            raise ValueError(f"SimNPO gamma must be a finite number, got {self.gamma}")


@register_method("trainer", SimNPOConfig)
class SimNPOTrainer(UnlearnTrainer):
    """SimNPO (Fan et al., 2024, Eq. 4): NPO without the reference model, its reward length-normalised,
    L = −(2/β)·mean logσ(β·NLL̄(forget) − γ), + λ·NLL(retain) when a retain set is given."""

    _name = "simnpo"
    _paper = SIMNPO_PAPER
    _tag_names = ["simnpo"]
    config_class = SimNPOConfig
    supported_tasks = ("causal_lm", "vision_language")

    def unlearning_loss(self, model, inputs):
        f = inputs["forget"]
        nll_f = sequence_nll(self.forward(model, f), f["labels"])
        loss = simnpo_loss(nll_f, self.args.beta, self.args.gamma)
        logs = {"simnpo_loss": loss.detach(), "forget_nll": nll_f.mean().detach()}
        if "retain" in inputs:
            nll_r = self.mean_nll(model, inputs["retain"])
            loss = loss + self.args.retain_weight * nll_r
            logs["retain_nll"] = nll_r.detach()
        return loss, logs


@dataclass
class IDKConfig(TemplateAnswerArgs, UnlearnConfig):
    """IDK: the refusals come from ``template_column`` or ``templates`` (default: built-in)."""


@register_method("trainer", IDKConfig)
class IDKTrainer(UnlearnTrainer):
    """IDK fine-tuning: L = NLL(x_f, y_refusal) + λ·NLL(retain)."""

    _name = "idk"
    _paper = TOFU_PAPER
    _tag_names = ["idk"]
    config_class = IDKConfig
    supported_tasks = ("causal_lm", "vision_language")
    requires_retain = True

    def extra_views(self, forget, tokenize, args):
        answers = self.template_answers(
            forget, args.template_column, args.templates, args.data_seed or args.seed
        )
        return {"idk": tokenize(forget, "forget_dataset (refusal answers)", answers)}

    def unlearning_loss(self, model, inputs):
        nll_idk = self.mean_nll(model, inputs["idk"])
        nll_r = self.mean_nll(model, inputs["retain"])
        return nll_idk + self.args.retain_weight * nll_r, {
            "idk_nll": nll_idk.detach(),
            "retain_nll": nll_r.detach(),
        }


@dataclass
class KLConfig(UnlearnConfig):
    """KL: ``retain_weight`` is λ of L = −NLL(forget) + λ·KL(p_orig ‖ p_θ) on the retain rows."""

    kl_reduction: str = field(default="answer_tokens", metadata={"help": KL_REDUCTION_HELP})

    def __post_init__(self):
        super().__post_init__()
        _check_kl_reduction(self.kl_reduction)


@register_method("trainer", KLConfig)
class KLTrainer(UnlearnTrainer):
    """The KL baseline: gradient ascent on the forget rows, the retain rows' next-token distributions held to
    the original model's (frozen reference: the adapter-disabled base for PEFT models, else a copy)."""

    _name = "kl"
    _paper = TOFU_PAPER
    _tag_names = ["kl"]
    config_class = KLConfig
    supported_tasks = ("causal_lm", "vision_language")
    requires_retain = True
    needs_ref_model = True

    def unlearning_loss(self, model, inputs):
        nll_f = self.mean_nll(model, inputs["forget"])
        r = inputs["retain"]
        kl = retain_kl(
            self.forward(model, r), self.ref_forward(model, r), r["labels"], self.args.kl_reduction
        )
        return -nll_f + self.args.retain_weight * kl, {"forget_nll": nll_f.detach(), "retain_kl": kl.detach()}
