"""Causal language models on question/answer rows (prompt tokens masked out of the labels)."""

from __future__ import annotations

import warnings

from transformers.models.auto import modeling_auto as auto

from ..data.qa import QACollator, tokenize_qa_dataset
from .base import TaskAdapter, unwrap_peft


def check_vocabulary(model, tokenizer) -> None:
    """Refuse a tokenizer with more tokens than the model's embedding matrix (its ids would index past
    it mid-training); warn when it has far fewer (a tokenizer of another model). Models often pad
    their embedding matrix beyond the tokenizer, so a small gap is normal."""
    embeddings = unwrap_peft(model).get_input_embeddings()
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None or tokenizer is None:
        return
    n = len(tokenizer)
    if n > rows:
        raise ValueError(
            f"the tokenizer has {n} tokens but {type(unwrap_peft(model)).__name__}'s embedding matrix has "
            f"{rows} rows: is it this model's tokenizer? If you added tokens, call "
            f"model.resize_token_embeddings(len(tokenizer)) first"
        )
    if n < 0.9 * rows:
        warnings.warn(
            f"the tokenizer has {n} tokens but the model's embedding matrix has {rows} rows; "
            "check that processing_class is this model's tokenizer",
            stacklevel=4,
        )


def check_tokenizer(tokenizer, what: str = "question/answer data") -> None:
    if tokenizer is None:
        raise ValueError(f"processing_class (the tokenizer) is required to format {what}")
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise ValueError(
            "the tokenizer has no pad token; set one first, e.g. `tokenizer.pad_token = tokenizer.eos_token`"
        )


class CausalLMTask(TaskAdapter):
    name = "causal_lm"
    description = "a causal language model (AutoModelForCausalLM)"
    pipeline_tag = "text-generation"
    auto_class = "AutoModelForCausalLM"

    @classmethod
    def matches(cls, model) -> bool:
        name = type(model).__name__
        return name in set(auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) or name.endswith("ForCausalLM")

    def check(self, model) -> None:
        check_tokenizer(self.processing_class)
        check_vocabulary(model, self.processing_class)

    def prepare(self, dataset, name, answers=None):
        a = self.args
        return tokenize_qa_dataset(
            dataset, self.processing_class, a.max_length, name, a.question_column, a.answer_column, answers
        )

    def collator(self):
        return QACollator(self.pad_token_id)
