"""SEFE's continual-learning metrics and the superficial / essential split, by hand."""

import pytest

from hf_unlearn.evaluation.continual import (
    backward_transfer,
    continual_metrics,
    forgetting_kinds,
    mean_average_accuracy,
    mean_final_accuracy,
)

ACC = [[0.9], [0.6, 0.8], [0.5, 0.7, 0.9]]


def test_metrics_by_hand():
    assert mean_final_accuracy(ACC) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert mean_average_accuracy(ACC) == pytest.approx((0.9 + 0.7 + 0.7) / 3)
    assert backward_transfer(ACC) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert set(continual_metrics(ACC)) == {"MFN", "MAA", "BWT"} and "BWT" not in continual_metrics([[0.5]])


def test_bad_shapes():
    with pytest.raises(ValueError, match="row 1"):
        mean_final_accuracy([[0.9], [0.1]])
    with pytest.raises(ValueError, match="two tasks"):
        backward_transfer([[0.9]])


def test_superficial_and_essential_forgetting():
    preds = ["A", "b", "The answer is C because", "D"]
    refs = ["A", "C", "C", "B"]
    kinds = forgetting_kinds(preds, refs, in_format=lambda p: p.strip().upper() in {"A", "B", "C", "D"})
    # A correct; "b" in format but wrong (essential); the sentence is out of format (superficial); D essential
    assert kinds == {"correct": 0.25, "superficial_forgetting": 0.25, "essential_forgetting": 0.5}
