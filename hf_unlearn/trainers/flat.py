"""FLAT: LLM unlearning via loss adjustment with only forget data (Wang et al., ICLR 2025).

Each forget question x_f is paired with its answer y_f and a template answer y_e (a refusal, by
default); the model is trained to raise P_θ(x_f, y_e) and lower P_θ(x_f, y_f) through the
variational f-divergence loss of Eq. 5 (see :mod:`hf_unlearn.losses.flat`). No retain data and no
reference model are needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses.common import sequence_mean_prob
from ..losses.flat import canonical_divergence, flat_loss, padded_mean_prob
from ..papers import FLAT_PAPER
from ..registry import register_method
from .base import UnlearnConfig
from .forget_retain import TemplateAnswerArgs, UnlearnTrainer


@dataclass
class FLATConfig(TemplateAnswerArgs, UnlearnConfig):
    """Hyper-parameters of FLAT (defaults follow the reference TOFU configuration where it has one)."""

    divergence: str = field(
        default="kl",
        metadata={
            "help": "f-divergence D_f of Eq. 5: kl, js (Jensen-Shannon), pearson (χ²) or tv (total variation)."
        },
    )
    official_padding_mean: bool = field(
        default=False,
        metadata={
            "help": "Reproduce the reference code (UCSC-REAL/FLAT): P = batch scalar Σ answer-token p / "
            "(B·(max_length−1)), as if every row were padded to max_length (the reference uses 500: set "
            "--max_length 500 for its numbers), instead of the paper's per-sample mean over answer tokens."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.divergence = canonical_divergence(self.divergence)


@register_method("trainer", FLATConfig)
class FLATTrainer(UnlearnTrainer):
    """``Trainer`` for FLAT. Batches hold the ``forget`` view (x_f, y_f) and the aligned ``template``
    view (x_f, y_e); a given retain set is ignored (FLAT uses forget data only).
    """

    _name = "flat"
    _paper = FLAT_PAPER
    _tag_names = ["flat", "forget-data-only"]
    config_class = FLATConfig
    uses_retain = False

    def extra_views(self, forget, tokenize, args):
        answers = self.template_answers(
            forget, args.template_column, args.templates, args.data_seed or args.seed
        )
        return {"template": tokenize(forget, "forget_dataset (template answers)", answers)}

    def _answer_prob(self, model, batch):
        logits = self.forward(model, batch)
        if self.args.official_padding_mean:  # the reference's mean over a fixed max_length padding
            return padded_mean_prob(logits, batch["labels"], self.args.max_length)
        return sequence_mean_prob(logits, batch["labels"])

    def unlearning_loss(self, model, inputs):
        p_forget = self._answer_prob(model, inputs["forget"])
        p_template = self._answer_prob(model, inputs["template"])
        loss = flat_loss(p_template, p_forget, self.args.divergence)
        return loss, {"forget_prob": p_forget.mean().detach(), "template_prob": p_template.mean().detach()}
