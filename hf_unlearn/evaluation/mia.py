"""Min-k% probability membership inference (Shi et al., 2023, "Detecting Pretraining Data from Large
Language Models").

A text seen in training rarely contains tokens the model finds very unlikely. The score of a sample
is the mean of its ``k``% lowest answer-token log-probs,

    MinK%(a|q) = (1/|S|) sum_{t in S} log p(a_t | q, a_<t),   S = the max(1, floor(k |a|)) lowest tokens,

and higher means "member". After unlearning, the forget set should look like unseen data: an AUC
(forget = positive, unseen = negative) near 0.5. The token log-probs come from
:func:`hf_unlearn.evaluation.tofu.answer_logprobs`, the routine behind the TOFU metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from datasets import Dataset
from sklearn.metrics import roc_auc_score

from .tofu import answer_logprobs, check_split

MIN_K_BIBTEX = """\
@article{shi2023detecting,
  title={Detecting Pretraining Data from Large Language Models},
  author={Shi, Weijia and Ajith, Anirudh and Xia, Mengzhou and Huang, Yangsibo and Liu, Daogao and Blevins, Terra and Chen, Danqi and Zettlemoyer, Luke},
  journal={arXiv preprint arXiv:2310.16789},
  year={2023}
}
"""


def min_k_percent_score(token_logprobs: torch.Tensor, k: float = 0.2) -> float:
    """Mean of the ``max(1, floor(k * T))`` lowest entries of a 1-D tensor of ``T`` token log-probs."""
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
    k: float = 0.2,
    *,
    max_length: int = 256,
    batch_size: int = 16,
    disable_tqdm: bool = False,
) -> dict:
    """Min-k% membership inference of ``model``: ``members`` (e.g. forget) vs ``nonmembers`` (unseen).

    Returns ``{"auc": float, "k": k, "member_scores": [float], "nonmember_scores": [float]}``.
    """
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
        )
        scores[name] = [min_k_percent_score(lp, k) for lp in logprobs]
    labels = [1] * len(scores["members"]) + [0] * len(scores["nonmembers"])
    return {
        "auc": mia_auc(scores["members"] + scores["nonmembers"], labels),
        "k": k,
        "member_scores": scores["members"],
        "nonmember_scores": scores["nonmembers"],
    }
