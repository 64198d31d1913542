"""Relearning and quantization attacks (hf_unlearn.evaluation.robustness): the attacked copy, the curve, the
rounding by hand, and bad input."""

from __future__ import annotations

import pytest
import torch
from utils import demo_world

from hf_unlearn.evaluation import evaluate_tofu, quantization_attack, quantize_weights_, relearning_attack
from hf_unlearn.trainers import GAConfig, GATrainer

EVAL = dict(max_new_tokens=8, batch_size=8, n_perturbed=2)


def _unlearned(tmp_path):
    data, tok, model = demo_world()
    args = GAConfig(
        output_dir=str(tmp_path), max_steps=6, learning_rate=3e-3, per_device_train_batch_size=4,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    GATrainer(model=model, args=args, forget_dataset=data["forget"], processing_class=tok).train()
    return data, tok, model


def _state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_relearning_curve_recovers_forget_probability_and_leaves_the_model(tmp_path):
    data, tok, model = _unlearned(tmp_path)
    forget = data["forget"]
    before = _state(model)
    curve = relearning_attack(
        model, tok, forget, forget, steps=[0, 3, 8], learning_rate=3e-3, batch_size=4, eval_kwargs=EVAL
    )
    assert (
        curve["steps"] == [0, 3, 8]
        and len(curve["forget_probability"]) == 3
        and len(curve["train_loss"]) == 2
    )
    p = curve["forget_probability"]
    assert p[2] > p[0] + 0.05  # fine-tuning on the forget rows brings their answers back
    assert all(torch.equal(q, before[n]) for n, q in model.named_parameters())  # the caller's model as it was
    # step 0 is the model as given: the same numbers as a direct evaluation
    direct = evaluate_tofu(model, tok, {"forget": forget}, max_length=256, seed=0, disable_tqdm=True, **EVAL)
    assert p[0] == pytest.approx(direct["splits"]["forget"]["probability"])
    assert curve["forget_rouge_l"][0] == pytest.approx(direct["splits"]["forget"]["rouge_l_recall"])


def test_relearning_with_retain_truth_ratios_reports_forget_quality(tmp_path):
    from hf_unlearn.evaluation import model_truth_ratios

    data, tok, model = _unlearned(tmp_path)
    _, _, gold = demo_world()
    ratios = model_truth_ratios(gold, tok, data["forget"], n_perturbed=2, seed=0, disable_tqdm=True)
    curve = relearning_attack(
        model, tok, data["retain"], data["forget"], steps=[2], retain_truth_ratios=ratios, eval_kwargs=EVAL
    )
    assert curve["steps"] == [2] and 0 <= curve["forget_quality"][0] <= 1
    with pytest.raises(ValueError, match="retain_truth_ratios has"):
        relearning_attack(
            model, tok, data["retain"], data["forget"], steps=[1], retain_truth_ratios=ratios[:-1]
        )


def test_relearning_bad_input(tmp_path):
    data, tok, model = demo_world()
    for kw, msg in [
        (dict(steps=[]), "steps"),
        (dict(steps=[-1, 2]), "steps"),
        (dict(steps=[1.5]), "steps"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(batch_size=0), "batch_size"),
    ]:
        with pytest.raises(ValueError, match=msg):
            relearning_attack(model, tok, data["forget"], data["forget"], **kw)
    with pytest.raises(ValueError, match="empty"):
        relearning_attack(model, tok, data["forget"].select([]), data["forget"])
    with pytest.raises(ValueError, match="missing column"):
        relearning_attack(model, tok, data["forget"].remove_columns("answer"), data["forget"])
    frozen = model.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        relearning_attack(frozen, tok, data["forget"], data["forget"], steps=[1])


def test_quantize_weights_by_hand():
    lin = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1, -0.55, 0.25, 1.0]]))
    model = torch.nn.Sequential(lin)
    assert quantize_weights_(model, bits=4, group_size=4) == 1
    # scale = 1.0 / 7; w / scale = 0.7, −3.85, 1.75, 7 → round 1, −4, 2, 7
    expected = torch.tensor([[1.0, -4.0, 2.0, 7.0]]) / 7
    torch.testing.assert_close(lin.weight, expected)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1, -0.55, 0.25, 1.0]]))
    quantize_weights_(
        model, bits=4, group_size=2
    )  # groups [0.1, −0.55] (scale 0.55/7: 1.27 → 1, −7) and [0.25, 1.0] (scale 1/7)
    torch.testing.assert_close(lin.weight, torch.tensor([[0.55 / 7, -0.55, 2.0 / 7, 1.0]]))
    with pytest.raises(ValueError, match="bits"):
        quantize_weights_(model, bits=1)


def test_quantization_attack_skips_tied_head_and_leaves_the_model():
    data, tok, model = demo_world()
    before = _state(model)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    res = quantization_attack(model, tok, data["forget"], eval_kwargs=EVAL)
    assert list(res) == ["original", "bfloat16", "int8", "int4"]
    assert all(torch.equal(q, before[n]) for n, q in model.named_parameters())
    assert abs(res["int8"]["forget_probability"] - res["original"]["forget_probability"]) < 0.02
    assert res["int4"]["forget_probability"] != res["original"]["forget_probability"]
    if tied:  # the shared embedding matrix keeps its float weights
        import copy

        q = copy.deepcopy(model)
        quantize_weights_(q, 4)
        assert torch.equal(q.get_input_embeddings().weight, model.get_input_embeddings().weight)
    with pytest.raises(ValueError, match="precisions"):
        quantization_attack(model, tok, data["forget"], precisions=["fp8"])
