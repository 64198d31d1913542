"""Per-token and per-sequence scores of answer tokens (labels != -100) under causal-LM logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.qa import IGNORE_INDEX


def answer_token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y_t | x, y_<t) for every next-token position, and the mask of answer positions.

    logits: (B, L, V); labels: (B, L) with -100 on prompt and padding.
    Returns (logp, mask), both (B, L-1); ``logp`` is 0 where ``mask`` is False.
    """
    logits = logits[:, :-1].float()  # (B, L-1, V): position t predicts token t+1
    targets = labels[:, 1:]  # (B, L-1)
    mask = targets != IGNORE_INDEX
    safe = targets.masked_fill(~mask, 0)
    logp = torch.gather(F.log_softmax(logits, dim=-1), 2, safe.unsqueeze(-1)).squeeze(-1)  # (B, L-1)
    return logp * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ_t log p(y_t | x, y_<t) over answer tokens, per sample: (B,). NPO's log π(y|x)."""
    logp, _ = answer_token_logprobs(logits, labels)
    return logp.sum(-1)


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over each sample's answer tokens: (B,)."""
    logp, mask = answer_token_logprobs(logits, labels)
    return -logp.sum(-1) / mask.sum(-1).clamp(min=1)


def sequence_mean_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """FLAT's score P_θ(x, y) = (1/|y|) Σ_i p_θ(y_i | x, y_<i) (arithmetic mean of probabilities).

    Per sample, (B,). The reference code's batch scalar over a fixed padded length is
    :func:`hf_unlearn.losses.flat.padded_mean_prob`.
    """
    logp, mask = answer_token_logprobs(logits, labels)
    probs = logp.exp() * mask  # (B, L-1)
    return probs.sum(-1) / mask.sum(-1).clamp(min=1)


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample loss, (B,): cross-entropy for class logits (B, K) with labels (B,), or the mean
    answer-token NLL for causal-LM logits (B, L, V) with token labels (B, L)."""
    if labels.dim() == 1:
        return F.cross_entropy(logits.float(), labels, reduction="none")
    return sequence_nll(logits, labels)
