"""Negative Preference Optimization (Zhang et al., 2024, arXiv 2404.05868, Eq. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """L_NPO = (2/β) · mean_b log(1 + (π_θ(y|x) / π_ref(y|x))^β) = −(2/β) · mean_b logσ(−β(log π_θ − log π_ref)).

    logp, ref_logp: (B,) sequence log-probabilities of the forget answers. Returns a scalar.
    """
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()
