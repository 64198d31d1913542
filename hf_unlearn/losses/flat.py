"""FLAT's variational f-divergence loss (Wang et al., ICLR 2025, arXiv 2410.11143, Eq. 4-5).

FLAT maximises the variational lower bound D_f(template ‖ forget) ≥ E[g*(P_e)] − E[f*(g*(P_f))]
(f-GAN form), i.e. it minimises

    L_FLAT = −g*(P_θ(x_f, y_e)) + f*(g*(P_θ(x_f, y_f)))

where P is the mean answer-token probability, y_e the template (refusal) answer and y_f the answer to
forget. Each divergence is the pair (g*, f*∘g*); signs follow f-GAN (Nowozin et al., 2016, Table 6).
The reference code's Reverse-KL, Squared-Hellinger and Neyman entries (UCSC-REAL/FLAT,
``dataloader.py::get_contrastive_loss``) use exp(+v) where f-GAN uses exp(−v), so minimising them lowers the
template probability; they are deliberately not offered (the paper evaluates KL, JS, Pearson and TV).

P is the paper's per-sample mean over answer tokens (:func:`hf_unlearn.losses.sequence_mean_prob`);
:func:`padded_mean_prob` is the reference code's batch scalar (``dataloader.py``, loss type ``"cl"``:
``.mean()`` over all B×(L−1) padded positions, ignored ones counting 0), for parity runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .common import answer_token_logprobs

LOG2 = math.log(2.0)

# name -> (g*(v), f*(g*(v)))
DIVERGENCES: dict[
    str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
] = {
    # KL: g* = v, f*(u) = e^(u−1)
    "kl": (lambda v: v, lambda v: torch.exp(v - 1.0)),
    # Jensen–Shannon: g* = log 2 − log(1 + e^(−v)), f*(u) = −log(2 − e^u)  ⇒  f*(g*(v)) = softplus(v) − log 2
    "js": (lambda v: LOG2 - F.softplus(-v), lambda v: F.softplus(v) - LOG2),
    # Pearson χ²: g* = v, f*(u) = u²/4 + u
    "pearson": (lambda v: v, lambda v: v * v / 4.0 + v),
    # Total variation: g* = tanh(v)/2, f*(u) = u
    "tv": (lambda v: torch.tanh(v) / 2.0, lambda v: torch.tanh(v) / 2.0),
}
ALIASES = {
    "kullback-leibler": "kl",
    "jensen-shannon": "js",
    "jenson-shannon": "js",  # the reference code's spelling
    "pearson-chi2": "pearson",
    "total-variation": "tv",
}


def canonical_divergence(name: str) -> str:
    """Normalise a divergence name (case-insensitive; accepts the reference code's names)."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = ALIASES.get(key, key)
    if key not in DIVERGENCES:
        raise ValueError(
            f"unknown FLAT divergence {name!r}; choose one of {sorted(DIVERGENCES)} "
            "(reverse-KL, squared Hellinger and Neyman are not offered: the reference code's signs are wrong)"
        )
    return key


def flat_loss(p_template: torch.Tensor, p_forget: torch.Tensor, divergence: str = "kl") -> torch.Tensor:
    """L_FLAT averaged over the batch: mean_b[−g*(P_e,b) + f*(g*(P_f,b))].

    p_template, p_forget: (B,) per-sample mean answer probabilities in [0, 1] (or scalars, for the
    reference code's padded batch mean). Returns a scalar.
    """
    g, fstar_g = DIVERGENCES[canonical_divergence(divergence)]
    return (-g(p_template) + fstar_g(p_forget)).mean()


def padded_mean_prob(logits: torch.Tensor, labels: torch.Tensor, padded_length: int) -> torch.Tensor:
    """The reference code's P: answer-token probabilities averaged over a *fixed* padded length.

    UCSC-REAL/FLAT (``data_module.create_tofu_sample_pair`` / ``convert_raw_data_to_model_format``)
    pads every sequence to ``max_length`` (500 in ``unlearn.py`` and in TOFU's ``forget.py``), and the
    ``"cl"`` branch of ``dataloader.py`` stacks ``ProbLossStable`` (−p at answer positions, 0 at
    ignored ones) over the ``max_length − 1`` next-token positions of each row and takes ``.mean()``.
    So the batch scalar is

        P = (Σ_b Σ_t p_θ(y_bt | ·) over answer tokens) / (B · (padded_length − 1)),

    whatever the width of the batch. Right padding does not change a causal LM's logits at the real
    positions and padding positions contribute 0, so this equals padding every row to
    ``padded_length`` without computing the padded positions. Returns a scalar, shape ().

    ``logits`` (B, L, V), ``labels`` (B, L) with -100 on prompt and padding; ``L ≤ padded_length``.
    """
    width = labels.shape[1]
    if width > padded_length:
        raise ValueError(
            f"the batch is {width} tokens wide but the reference's fixed padded length (max_length) is "
            f"{padded_length}; raise max_length or truncate the rows to it"
        )
    logp, mask = answer_token_logprobs(logits, labels)
    return (logp.exp() * mask).sum() / (labels.shape[0] * (padded_length - 1))
