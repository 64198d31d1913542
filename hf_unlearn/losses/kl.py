"""The retain KL term of the "KL" unlearning baseline (TOFU; SafeEraser's ``kl``): keep the model's
next-token distributions on the retain rows close to the original model's, KL(p_orig ‖ p_θ)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.qa import IGNORE_INDEX

KL_REDUCTIONS = ("answer_tokens", "reference")


def retain_kl(
    logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, reduction: str = "answer_tokens"
) -> torch.Tensor:
    """KL(p_orig ‖ p_θ) on the retain batch.

    ``"answer_tokens"``: Σ_v p_orig log(p_orig / p_θ) at every position that predicts an answer token,
    averaged over those positions. ``"reference"``: SafeEraser's ``F.kl_div(log p_θ, log p_orig,
    reduction="batchmean", log_target=True)`` over the flattened (B·L, V) logits, i.e. the sum over every
    position (prompt, image and padding ones too) divided by B·L (its pitfall 5: not comparable in size).
    """
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")
    logp = F.log_softmax(logits.float(), dim=-1)
    ref = F.log_softmax(ref_logits.float(), dim=-1)
    if reduction == "reference":
        v = logp.shape[-1]
        return F.kl_div(logp.reshape(-1, v), ref.reshape(-1, v), reduction="batchmean", log_target=True)
    per_position = (ref.exp() * (ref - logp)).sum(-1)[:, :-1]  # position t predicts token t + 1
    mask = labels[:, 1:] != IGNORE_INDEX
    return (per_position * mask).sum() / mask.sum().clamp(min=1)
