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


def test_npo_loss_by_hand():
    logp, ref = torch.tensor([-2.0, -5.0]), torch.tensor([-1.0, -5.0])
    beta = 0.5
    expected = sum((2 / beta) * math.log(1 + math.exp(beta * (a - b))) for a, b in [(-2, -1), (-5, -5)]) / 2
    assert npo_loss(logp, ref, beta).item() == pytest.approx(expected, abs=1e-6)
    # at θ = θ_ref the loss is (2/β)·log 2
    assert npo_loss(ref, ref, beta).item() == pytest.approx(4 * math.log(2), abs=1e-6)


# --- FLAT's official_padding_mean: the reference pads every sequence to a fixed length -------------


def test_flat_padded_mean_prob_divides_by_fixed_length_not_batch_width():
    from hf_unlearn.losses.flat import padded_mean_prob

    logits, labels = _toy_logits()  # B=2, batch width L=4; answer-token probs 0.8, 0.6 | 0.7, 0.4
    # reference (UCSC-REAL/FLAT dataloader.py, "cl"): every row padded to max_length, so the mean runs
    # over B·(max_length − 1) next-token positions, ignored ones counting 0
    assert padded_mean_prob(logits, labels, 10).item() == pytest.approx(2.5 / (2 * 9), abs=1e-6)
    assert padded_mean_prob(logits, labels, 500).item() == pytest.approx(2.5 / (2 * 499), abs=1e-6)
    # exactly the batch width: the old batch-width mean (2.5 / 6)
    assert padded_mean_prob(logits, labels, 4).item() == pytest.approx(2.5 / 6, abs=1e-6)
    with pytest.raises(ValueError, match="max_length"):
        padded_mean_prob(logits, labels, 3)  # a batch wider than the padded length


def test_flat_trainer_official_padding_mean_divides_by_max_length(tmp_path):
    from utils import demo_world

    from hf_unlearn import FLATConfig, FLATTrainer
    from hf_unlearn.losses.common import answer_token_logprobs

    data, tok, model = demo_world()
    model.eval()
    common = dict(per_device_train_batch_size=4, report_to=[], save_strategy="no", use_cpu=True)
    probs = {}
    for flag in (False, True):
        args = FLATConfig(output_dir=str(tmp_path), official_padding_mean=flag, max_length=64, **common)
        t = FLATTrainer(model=model, args=args, forget_dataset=data["forget"], processing_class=tok)
        batch = t.data_collator([t.train_dataset[i] for i in range(4)])
        with torch.no_grad():
            probs[flag] = t.unlearning_loss(model, batch)[1]
    by_hand = {}
    for view in ("forget", "template"):
        b = batch[view]
        assert b["labels"].shape[1] < 64  # the batch is narrower than max_length
        with torch.no_grad():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        logp, mask = answer_token_logprobs(logits, b["labels"])
        answer_prob_sum = (logp.exp() * mask).sum().item()
        by_hand[view] = (
            answer_prob_sum / (4 * (64 - 1)),  # official: Σ answer-token p / (B · (max_length − 1))
            ((logp.exp() * mask).sum(-1) / mask.sum(-1)).mean().item(),  # default: per-sample mean
        )
    assert probs[True]["forget_prob"].item() == pytest.approx(by_hand["forget"][0], rel=1e-5)
    assert probs[True]["template_prob"].item() == pytest.approx(by_hand["template"][0], rel=1e-5)
    assert probs[False]["forget_prob"].item() == pytest.approx(by_hand["forget"][1], rel=1e-5)
    assert probs[False]["template_prob"].item() == pytest.approx(by_hand["template"][1], rel=1e-5)
