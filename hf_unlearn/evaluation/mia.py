"""Min-k% probability membership inference (Shi et al., 2023, "Detecting Pretraining Data from Large
Language Models").

A text seen in training rarely contains tokens the model finds very unlikely. The score of a sample
is the mean of its ``k``% lowest answer-token log-probs,

    MinK%(a|q) = (1/|S|) sum_{t in S} log p(a_t | q, a_<t),   S = the max(1, floor(k |a|)) lowest tokens,

and higher means "member". After unlearning, the forget set should look like unseen data: an AUC
(forget = positive, unseen = negative) near 0.5. The token log-probs come from
:func:`hf_unlearn.evaluation.tofu.answer_logprobs`, the routine behind the TOFU metrics.

Two named conventions (:data:`MIN_K_CONVENTIONS`) fix ``k`` and whether the answer's EOS token is
scored:

* ``"hf_unlearn"`` (the default): ``k = 0.2``, the value Shi et al. recommend, over every answer token
  the TOFU metrics score, the final EOS included;
* ``"open-unlearning"``: ``k = 0.4`` and the EOS prediction dropped, as open-unlearning's TOFU / MUSE
  ``mia_min_k`` (``configs/eval/tofu_metrics/mia_min_k.yaml``; ``tokenwise_logprobs`` ignores the
  last labelled token). Use it to compare AUCs with open-unlearning. (open-unlearning drops the last
  token even when ``max_length`` cut the EOS off; here only an EOS is dropped.)

An explicit ``k`` or ``include_eos`` overrides the convention's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from datasets import Dataset
from sklearn.metrics import roc_auc_score

from .tofu import answer_logprobs, check_split


@dataclass(frozen=True)
class MinKConvention:
    """A min-k% setting: the fraction ``k`` of lowest tokens and whether the answer's EOS is scored."""

    k: float
    include_eos: bool


MIN_K_CONVENTIONS: dict[str, MinKConvention] = {
    "hf_unlearn": MinKConvention(k=0.2, include_eos=True),
    "open-unlearning": MinKConvention(k=0.4, include_eos=False),
}
DEFAULT_MIN_K_CONVENTION = "hf_unlearn"


def min_k_convention(
    convention: str = DEFAULT_MIN_K_CONVENTION, k: float | None = None, include_eos: bool | None = None
) -> MinKConvention:
    """The :class:`MinKConvention` named ``convention``; ``k`` / ``include_eos`` override it when given."""
    if convention not in MIN_K_CONVENTIONS:
        raise ValueError(
            f"unknown min-k% convention {convention!r}; choose one of {sorted(MIN_K_CONVENTIONS)}"
        )
    base = MIN_K_CONVENTIONS[convention]
    return MinKConvention(
        k=base.k if k is None else k, include_eos=base.include_eos if include_eos is None else include_eos
    )


def min_k_percent_score(token_logprobs: torch.Tensor, k: float = 0.2) -> float:
    """Mean of the ``max(1, floor(k * T))`` lowest entries of a 1-D tensor of ``T`` token log-probs.

    ``k = 0.2`` is Shi et al.'s recommended value; open-unlearning's TOFU / MUSE configs use 0.4.
    """
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    if token_logprobs.ndim != 1 or token_logprobs.numel() == 0:
        raise ValueError(
            f"expected a non-empty 1-D tensor of token log-probs, got shape {tuple(token_logprobs.shape)}"
        )
    n_lowest = max(1, int(k * token_logprobs.numel()))
    return torch.topk(token_logprobs.double(), n_lowest, largest=False).values.mean().item()


def mia_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC of membership ``scores`` (higher = member) against ``labels`` (1 = member, 0 = not)."""
    if len(set(labels)) != 2 or not set(labels) <= {0, 1}:
        raise ValueError(f"labels must contain both 0 (non-member) and 1 (member), got {sorted(set(labels))}")
    return float(roc_auc_score(list(labels), list(scores)))


def min_k_mia(
    model,
    tokenizer,
    members: Dataset,
    nonmembers: Dataset,
    k: float | None = None,
    *,
    include_eos: bool | None = None,
    convention: str = DEFAULT_MIN_K_CONVENTION,
    max_length: int = 256,
    batch_size: int = 16,
    disable_tqdm: bool = False,
) -> dict:
    """Min-k% membership inference of ``model``: ``members`` (e.g. forget) vs ``nonmembers`` (unseen).

    ``convention`` (:data:`MIN_K_CONVENTIONS`): ``"hf_unlearn"`` (default: ``k = 0.2``, EOS scored) or
    ``"open-unlearning"`` (``k = 0.4``, EOS dropped); ``k`` / ``include_eos``, when given, override it.
    Returns ``{"auc": float, "k": float, "include_eos": bool, "convention": str,
    "member_scores": [float], "nonmember_scores": [float]}``.
    """
    setting = min_k_convention(convention, k, include_eos)
    if not 0 < setting.k <= 1:
        raise ValueError(f"k must be in (0, 1], got {setting.k}")
    scores = {}
    for name, dataset in (("members", members), ("nonmembers", nonmembers)):
        check_split(name, dataset)
        logprobs = answer_logprobs(
            model,
            tokenizer,
            dataset["question"],
            dataset["answer"],
            max_length=max_length,
            batch_size=batch_size,
            name=name,
            disable_tqdm=disable_tqdm,
            include_eos=setting.include_eos,
        )
        scores[name] = [min_k_percent_score(lp, setting.k) for lp in logprobs]
    labels = [1] * len(scores["members"]) + [0] * len(scores["nonmembers"])
    return {
        "auc": mia_auc(scores["members"] + scores["nonmembers"], labels),
        "k": setting.k,
        "include_eos": setting.include_eos,
        "convention": convention,
        "member_scores": scores["members"],
        "nonmember_scores": scores["nonmembers"],
    }
