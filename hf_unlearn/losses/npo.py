"""Negative Preference Optimization (Zhang et al., 2024, arXiv 2404.05868, Eq. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """L_NPO = (2/β) · mean_b log(1 + (π_θ(y|x) / π_ref(y|x))^β) = −(2/β) · mean_b logσ(−β(log π_θ − log π_ref)).

    logp, ref_logp: (B,) sequence log-probabilities of the forget answers. Returns a scalar.
    """
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def simnpo_loss(mean_nll: torch.Tensor, beta: float = 2.5, gamma: float = 0.0) -> torch.Tensor:
    """SimNPO (Fan et al., 2024, arXiv 2410.07163, Eq. 4): the reference-free, length-normalised NPO,

        L_SimNPO = −(2/β) · mean_b log σ(−(β/|y|) · log π_θ(y|x) − γ) = −(2/β) · mean_b log σ(β·NLL̄ − γ),

    with NLL̄ = −(1/|y|) log π_θ(y|x), the mean answer-token NLL of each forget sample. γ is the reward
    margin; open-unlearning writes the same loss with δ = γ/β, −(2/β) log σ(β(NLL̄ − δ)).

    mean_nll: (B,) per-sample mean answer-token NLL. Returns a scalar.
    """
    return -(2.0 / beta) * F.logsigmoid(beta * mean_nll - gamma).mean()
