"""Image and text classifiers on rows of processed model inputs and a label."""

from __future__ import annotations

import torch.nn.functional as F
from transformers.models.auto import modeling_auto as auto

from ..data.classification import ClassificationCollator, prepare_classification_dataset
from .base import TaskAdapter, unwrap_peft


class ClassificationTask(TaskAdapter):
    name = "classification"
    description = "an image/text classifier (AutoModelFor{Image,Sequence}Classification)"
    pipeline_tag = "image-classification"
    auto_class = "AutoModelForImageClassification"

    def __init__(self, model, processing_class, args):
        super().__init__(model, processing_class, args)
        base = unwrap_peft(model)
        self.num_labels = int(base.config.num_labels)
        if type(base).__name__.endswith("ForSequenceClassification"):
            self.pipeline_tag, self.auto_class = "text-classification", "AutoModelForSequenceClassification"

    @classmethod
    def matches(cls, model) -> bool:
        name = type(model).__name__
        classifiers = {
            *auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.values(),
            *auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values(),
        }
        return name in classifiers or name.endswith(("ForImageClassification", "ForSequenceClassification"))

    def prepare(self, dataset, name, answers=None):
        if answers is not None:
            raise ValueError(
                "template answers need question/answer rows; a classifier has labels, not answers"
            )
        return prepare_classification_dataset(dataset, name, self.num_labels, self.args.label_column)

    def per_sample_loss(self, logits, batch):
        """(B,): cross-entropy of each row's label, logits (B, K), labels (B,)."""
        return F.cross_entropy(logits.float(), batch["labels"], reduction="none")

    def collator(self):
        return ClassificationCollator(self.pad_token_id)
