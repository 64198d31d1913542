"""Classification data for unlearning: rows of model inputs (``pixel_values`` or ``input_ids``) and a label.

Image and text classifiers take already-processed rows, as ``Trainer`` does: run the image processor
or tokenizer with ``dataset.map`` first. :func:`prepare_classification_dataset` checks the rows (non-empty,
label column present, every label a class of the model) and :class:`ClassificationCollator` batches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from datasets import Dataset

MODEL_INPUTS = ("pixel_values", "input_ids", "attention_mask", "token_type_ids", "input_values")


def prepare_classification_dataset(
    dataset: Dataset, name: str, num_labels: int, label_column: str = "labels"
) -> Dataset:
    """Check ``dataset`` and return it with columns (model inputs..., ``labels``) in torch format.

    ``label_column`` is renamed to ``labels``; ``label`` is accepted when ``labels`` is absent (the
    ``datasets`` convention). Raises ``ValueError`` naming the dataset and the problem.
    """
    if dataset is None:
        raise ValueError(f"{name} is None; pass a datasets.Dataset of model inputs and labels")
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{name} must be a datasets.Dataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty: there is nothing to unlearn or evaluate")
    cols = dataset.column_names
    if label_column not in cols and label_column == "labels" and "label" in cols:
        label_column = "label"
    if label_column not in cols:
        raise ValueError(f"{name} has no label column {label_column!r}; it has {cols}. Set label_column.")
    inputs = [c for c in MODEL_INPUTS if c in cols]
    if not inputs or inputs == ["attention_mask"]:
        raise ValueError(
            f"{name} has no model-input column (one of {list(MODEL_INPUTS[:2])}); it has {cols}. "
            "Run the image processor or tokenizer with dataset.map first."
        )
    labels = dataset.with_format("arrow")[label_column].to_pylist()  # one Arrow read, not row by row
    check_labels(labels, num_labels, name)
    if label_column != "labels":
        dataset = dataset.rename_column(label_column, "labels")
    return dataset.select_columns([*inputs, "labels"]).with_format("torch")


def check_labels(labels: Sequence, num_labels: int, name: str) -> None:
    """Every label must be an integer class id of the model: 0 <= y < num_labels."""
    bad = sorted({y for y in labels if not isinstance(y, int) or not 0 <= y < num_labels}, key=str)
    if bad:
        raise ValueError(
            f"{name} has labels {bad[:5]}{' ...' if len(bad) > 5 else ''} that the model does not have "
            f"(it predicts num_labels={num_labels} classes: 0..{num_labels - 1})"
        )


@dataclass
class ClassificationCollator:
    """Stacks fixed-size inputs (``pixel_values``) and right-pads token inputs (``input_ids``)."""

    pad_token_id: int | None = 0

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        out = {}
        for key in rows[0]:
            values = [torch.as_tensor(r[key]) for r in rows]
            if values[0].dim() == 1 and key in ("input_ids", "attention_mask", "token_type_ids"):
                pad = (self.pad_token_id or 0) if key == "input_ids" else 0
                out[key] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=pad)
            else:
                out[key] = torch.stack(values)
        return out
