"""SafeEraser's Prompt-Decouple (PD) loss (Chen et al., "SafeEraser: Enhancing Safety in Multimodal Large
Language Models through Multimodal Machine Unlearning", Findings of ACL 2025, arXiv 2502.12520).

The paper's equation was not readable; this is the released code's (``forget.py``: ``outputs.loss`` of the
PD batch): for each forget row, a *decoupled* row (a benign image + the same question → a normal answer)
trained with plain next-token cross-entropy, the mean over every answer token of the batch

    L_PD(θ) = −(1 / Σ_i |y_i|) Σ_i Σ_t log p_θ(y_i,t | I_benign,i, q_i, y_i,<t),

added to the base method's loss with a weight (reference: 0.5 for GA and GradDiff, 1.0 for KL and PO).
"""

from __future__ import annotations

import torch

from .common import answer_token_logprobs


def prompt_decouple_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_PD: the token-mean cross-entropy over the decoupled rows' answer tokens (labels −100 elsewhere),
    as ``transformers`` computes ``outputs.loss`` for the batch."""
    logp, mask = answer_token_logprobs(logits, labels)
    return -logp.sum() / mask.sum().clamp(min=1)
