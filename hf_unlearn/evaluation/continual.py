"""Continual-learning metrics of SEFE / CoIN (Chen et al., ICML 2025, arXiv 2505.02486, Sec. 6.1).

``accuracy[i][j]`` is the accuracy on task j after training task i (j ≤ i; a lower-triangular list of
lists, row i has i + 1 entries). With T tasks:

- MFN, mean final accuracy: (1/T) Σ_j a[T−1][j];
- MAA, mean average accuracy: (1/T) Σ_i (1/(i+1)) Σ_{j≤i} a[i][j];
- BWT, backward transfer: (1/(T−1)) Σ_{j<T−1} (a[T−1][j] − a[j][j]) (negative: forgetting).

:func:`forgetting_kinds` splits the wrong answers on an earlier task into *superficial* forgetting (the
answer is not in the task's format) and *essential* forgetting (right format, wrong content).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def _check(accuracy: Sequence[Sequence[float]]) -> int:
    if not accuracy:
        raise ValueError("accuracy has no rows: evaluate at least one task")
    for i, row in enumerate(accuracy):
        if len(row) != i + 1:
            raise ValueError(f"accuracy row {i} must hold tasks 0..{i} ({i + 1} values), got {len(row)}")
    return len(accuracy)


def mean_final_accuracy(accuracy: Sequence[Sequence[float]]) -> float:
    t = _check(accuracy)
    return sum(accuracy[t - 1]) / t


def mean_average_accuracy(accuracy: Sequence[Sequence[float]]) -> float:
    t = _check(accuracy)
    return sum(sum(row) / len(row) for row in accuracy) / t


def backward_transfer(accuracy: Sequence[Sequence[float]]) -> float:
    t = _check(accuracy)
    if t < 2:
        raise ValueError("backward transfer needs at least two tasks")
    return sum(accuracy[t - 1][j] - accuracy[j][j] for j in range(t - 1)) / (t - 1)


def continual_metrics(accuracy: Sequence[Sequence[float]]) -> dict[str, float]:
    """{"MFN", "MAA", "BWT"} (BWT only with two or more tasks)."""
    out = {"MFN": mean_final_accuracy(accuracy), "MAA": mean_average_accuracy(accuracy)}
    if len(accuracy) > 1:
        out["BWT"] = backward_transfer(accuracy)
    return out


def forgetting_kinds(
    predictions: Sequence[str],
    references: Sequence[str],
    in_format: Callable[[str], bool],
    answer_of: Callable[[str], str] | None = None,
) -> dict[str, float]:
    """Shares of ``predictions``: correct (in format and its answer equals the reference), superficial
    forgetting (not ``in_format``), essential forgetting (in format, wrong answer). Answers are compared
    after stripping and lower-casing; ``answer_of`` extracts the answer of a longer response (e.g. the
    option named by an explanation); by default the whole response is the answer."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError("predictions and references must be non-empty and of the same length")
    n = len(predictions)
    extract = answer_of or (lambda text: text)
    superficial = correct = 0
    for raw, ref in zip(predictions, references, strict=True):
        if not in_format(raw):
            superficial += 1
        elif extract(raw).strip().lower() == ref.strip().lower():
            correct += 1
    return {
        "correct": correct / n,
        "superficial_forgetting": superficial / n,
        "essential_forgetting": (n - correct - superficial) / n,
    }
