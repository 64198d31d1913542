import math

import pytest
import torch

from hf_unlearn.losses import flat_loss, npo_loss, sequence_logprob, sequence_mean_prob, sequence_nll
from hf_unlearn.losses.flat import DIVERGENCES, canonical_divergence

P_E, P_F = 0.3, 0.8  # hand-made mean probabilities of the template and forget answers


@pytest.mark.parametrize(
    "div, expected",
    [
        # closed forms of flat.md, evaluated by hand
        ("kl", -P_E + math.exp(P_F - 1)),
        ("pearson", -P_E + P_F**2 / 4 + P_F),
        (
            "js",
            (math.log(1 + math.exp(-P_E)) - math.log(2)) + (P_F + math.log(1 + math.exp(-P_F)) - math.log(2)),
        ),
        ("tv", -math.tanh(P_E) / 2 + math.tanh(P_F) / 2),
    ],
)
def test_flat_loss_matches_closed_forms(div, expected):
    got = flat_loss(torch.tensor([P_E]), torch.tensor([P_F]), div)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_kl_numbers_by_hand():
    # −0.3 + e^(−0.2) = −0.3 + 0.8187307531 = 0.5187307531
    assert flat_loss(torch.tensor(0.3), torch.tensor(0.8), "kl").item() == pytest.approx(
        0.5187307531, abs=1e-7
    )


@pytest.mark.parametrize("div", sorted(DIVERGENCES))
def test_flat_gradient_signs(div):
    """Minimising must raise the template probability and lower the forget probability."""
    p_e = torch.tensor([0.2, 0.5, 0.9], requires_grad=True)
    p_f = torch.tensor([0.1, 0.5, 0.95], requires_grad=True)
    flat_loss(p_e, p_f, div).backward()
    assert (p_e.grad < 0).all() and (p_f.grad > 0).all()


def test_flat_loss_is_batch_mean_of_per_sample_losses():
    pe, pf = torch.tensor([0.1, 0.7]), torch.tensor([0.9, 0.2])
    per = [flat_loss(pe[i : i + 1], pf[i : i + 1], "js").item() for i in range(2)]
    assert flat_loss(pe, pf, "js").item() == pytest.approx(sum(per) / 2, abs=1e-7)


def test_divergence_names():
    assert canonical_divergence("Jenson-Shannon") == "js"
    assert canonical_divergence("Total-Variation") == "tv"
    with pytest.raises(ValueError, match="reverse-KL"):
        canonical_divergence("reverse-kl")


def _toy_logits():
    # B=2, L=4, V=3. labels: prompt (-100) then answer tokens.
    logits = torch.log(
        torch.tensor(
            [
                [[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]],
                [[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3]],
            ]
        )
    )
    labels = torch.tensor([[-100, -100, 1, 2], [-100, 0, 2, -100]])
    return logits, labels


def test_sequence_scores_by_hand():
    logits, labels = _toy_logits()
    # sample 0: tokens 1 (p=0.8 at pos 1) and 2 (p=0.6 at pos 2); sample 1: 0 (p=0.7), 2 (p=0.4)
    assert sequence_mean_prob(logits, labels).tolist() == pytest.approx([0.7, 0.55], abs=1e-6)
    assert sequence_logprob(logits, labels).tolist() == pytest.approx(
        [math.log(0.8) + math.log(0.6), math.log(0.7) + math.log(0.4)], abs=1e-6
    )
    assert sequence_nll(logits, labels).tolist() == pytest.approx(
        [-(math.log(0.8) + math.log(0.6)) / 2, -(math.log(0.7) + math.log(0.4)) / 2], abs=1e-6
    )
    # reference code: all B·(L−1) = 6 positions, ignored ones count 0 → (0.8+0.6+0.7+0.4)/6
    assert sequence_mean_prob(logits, labels, padding_mean=True).item() == pytest.approx(2.5 / 6, abs=1e-6)


def test_npo_loss_by_hand():
    logp, ref = torch.tensor([-2.0, -5.0]), torch.tensor([-1.0, -5.0])
    beta = 0.5
    expected = sum((2 / beta) * math.log(1 + math.exp(beta * (a - b))) for a, b in [(-2, -1), (-5, -5)]) / 2
    assert npo_loss(logp, ref, beta).item() == pytest.approx(expected, abs=1e-6)
    # at θ = θ_ref the loss is (2/β)·log 2
    assert npo_loss(ref, ref, beta).item() == pytest.approx(4 * math.log(2), abs=1e-6)
