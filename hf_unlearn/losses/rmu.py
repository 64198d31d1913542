"""Representation Misdirection for Unlearning (RMU; Li et al., 2024, "The WMDP Benchmark", arXiv 2403.03218,
Sec. 5): push the forget activations of one layer towards a fixed scaled random vector c·u and hold the
retain activations to the frozen model's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

RMU_POSITIONS = ("answer_tokens", "reference")


def steering_vector(hidden_size: int, coefficient: float, seed: int) -> torch.Tensor:
    """c·u with u drawn once from U[0, 1)^d and normalised to unit length (the WMDP code's control vector),
    from a seeded generator so that a resumed run uses the same vector. (d,), float32."""
    u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return coefficient * u / u.norm()


def activation_mse(
    activations: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The squared error of RMU's two terms.

    ``mask`` given (``"answer_tokens"``, open-unlearning's TOFU setting): per sample, the mean over the
    hidden dimension of (h − t)², averaged over the masked positions; then the batch mean.
    ``mask`` None (``"reference"``, the WMDP code's ``F.mse_loss``): the mean over every element of the
    (B, L, d) tensor, padding positions included.

    activations: (B, L, d); target: broadcastable to it ((d,) for the forget term's c·u); mask: (B, L) bool.
    """
    target = target.to(activations.dtype).expand_as(activations)
    if mask is None:
        return F.mse_loss(activations, target)
    per_position = (activations - target).pow(2).mean(-1)  # (B, L)
    mask = mask.to(per_position.dtype)
    return ((per_position * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
