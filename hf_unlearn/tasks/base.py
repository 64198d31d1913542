"""What every task adapter provides: detection, dataset preparation, collation, forward, per-sample loss
and card metadata for one kind of model. Trainers ask their adapter instead of branching on a task name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from ..losses.common import sequence_nll


def unwrap_peft(model):
    """The transformers model inside a PEFT wrapper (or ``model`` itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class TaskAdapter:
    """One kind of model. Subclasses set the class attributes and implement :meth:`matches`,
    :meth:`prepare` and :meth:`collator`; :meth:`forward` passes every model input of a collated view."""

    name: ClassVar[str]
    description: ClassVar[str]  # "a causal language model (AutoModelForCausalLM)", for errors
    pipeline_tag: ClassVar[str]
    auto_class: ClassVar[str]

    def __init__(self, model, processing_class, args):
        self.processing_class, self.args = processing_class, args

    @classmethod
    def matches(cls, model: PreTrainedModel) -> bool:
        raise NotImplementedError

    def check(self, model) -> None:
        """Check the processing class against the model (before anything is modified)."""

    def prepare(self, dataset: Dataset, name: str, answers=None) -> Dataset:
        """Check and encode one dataset (``answers`` replaces the answer column, for template views)."""
        raise NotImplementedError

    def collator(self) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
        """The collator of one view: prepared rows → a batch of tensors."""
        raise NotImplementedError

    @staticmethod
    def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Everything the model takes from a collated view: every key but ``labels``."""
        return {k: v for k, v in batch.items() if k != "labels"}

    def forward(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of ``model`` on a collated view, given every model input (images too)."""
        return model(**self.model_inputs(batch)).logits

    def per_sample_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,): the mean answer-token NLL of each row (token logits (B, L, V), labels (B, L) with -100
        on prompt and padding); classifiers override it with the cross-entropy of the label."""
        return sequence_nll(logits, batch["labels"])

    @property
    def pad_token_id(self) -> int | None:
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        return getattr(tokenizer, "pad_token_id", None)
