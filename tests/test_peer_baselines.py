"""The baselines of the peer libraries: SimNPO, NPO+KL and RMU — losses by hand, trainer losses recomputed from
the model's own outputs, and RMU's trained set."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from utils import demo_world

from hf_unlearn.losses import activation_mse, simnpo_loss, steering_vector
from hf_unlearn.trainers import (
    NPOKLConfig,
    NPOKLTrainer,
    RMUConfig,
    RMUTrainer,
    SimNPOConfig,
    SimNPOTrainer,
)

COMMON = dict(
    per_device_train_batch_size=4, seed=0, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True
)


# --- pure losses ---------------------------------------------------------------------------------------


def test_simnpo_loss_by_hand():
    nll = torch.tensor([0.5, 2.0])
    beta, gamma = 2.0, 1.0
    # −(2/β)·log σ(β·NLL̄ − γ) per sample, then the mean
    expected = sum(-(2 / beta) * math.log(1 / (1 + math.exp(-(beta * x - gamma)))) for x in (0.5, 2.0)) / 2
    assert simnpo_loss(nll, beta, gamma).item() == pytest.approx(expected, abs=1e-6)
    # open-unlearning's form with δ = γ/β is the same number
    delta = gamma / beta
    assert simnpo_loss(nll, beta, gamma).item() == pytest.approx(
        (-F.logsigmoid(beta * (nll - delta)).mean() * 2 / beta).item(), abs=1e-6
    )


def test_activation_mse_by_hand():
    h = torch.tensor([[[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]]])  # (B=1, L=3, d=2)
    t = torch.tensor([1.0, 1.0])
    mask = torch.tensor([[True, False, True]])
    # positions 0 and 2: mean over d of (h − t)² = (0 + 4)/2 = 2 and (1 + 1)/2 = 1; their mean 1.5
    assert activation_mse(h, t, mask).item() == pytest.approx(1.5)
    # reference: the mean over all 6 elements: (0 + 4 + 1 + 1 + 1 + 1) / 6
    assert activation_mse(h, t, None).item() == pytest.approx(8 / 6)


def test_steering_vector_is_seeded_with_norm_c():
    u = steering_vector(16, 6.5, seed=3)
    assert u.norm().item() == pytest.approx(6.5, rel=1e-6) and (u >= 0).all()
    assert torch.equal(u, steering_vector(16, 6.5, seed=3))
    assert not torch.equal(u, steering_vector(16, 6.5, seed=4))


# --- trainer losses from the model's own outputs --------------------------------------------------------


def _batch(trainer, n=4):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def _nll(logits, labels):
    """Mean answer-token NLL per sample, written out (position t predicts token t + 1)."""
    out = []
    for b in range(labels.shape[0]):
        terms = [
            -torch.log_softmax(logits[b, t - 1].float(), -1)[labels[b, t]]
            for t in range(1, labels.shape[1])
            if labels[b, t] != -100
        ]
        out.append(torch.stack(terms).mean())
    return torch.stack(out)


def test_simnpo_trainer_loss_by_hand(tmp_path):
    data, tok, model = demo_world()
    args = SimNPOConfig(output_dir=str(tmp_path), beta=2.0, gamma=0.5, retain_weight=0.3, **COMMON)
    t = SimNPOTrainer(
        model=model,
        args=args,
        forget_dataset=data["forget"],
        retain_dataset=data["retain"],
        processing_class=tok,
    )
    assert t.ref_model is None  # reference-free
    batch = _batch(t)
    loss, logs = t.unlearning_loss(model, batch)
    f, r = batch["forget"], batch["retain"]
    with torch.no_grad():
        nll_f = _nll(model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"])
        nll_r = _nll(model(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits, r["labels"])
    sig = 1 / (1 + torch.exp(-(2.0 * nll_f - 0.5)))
    expected = (-(2 / 2.0) * torch.log(sig)).mean() + 0.3 * nll_r.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert {"simnpo_loss", "forget_nll", "retain_nll"} <= set(logs)


def test_npo_kl_loss_by_hand(tmp_path):
    data, tok, model = demo_world()
    args = NPOKLConfig(output_dir=str(tmp_path), beta=0.5, retain_weight=2.0, **COMMON)
    t = NPOKLTrainer(
        model=model,
        args=args,
        forget_dataset=data["forget"],
        retain_dataset=data["retain"],
        processing_class=tok,
    )
    batch = _batch(t)
    loss0, logs0 = t.unlearning_loss(model, batch)
    # at θ = θ_ref: NPO = (2/β)·log 2 and KL = 0
    assert loss0.item() == pytest.approx(4 * math.log(2), abs=1e-5) and logs0[
        "retain_kl"
    ].item() == pytest.approx(0, abs=1e-6)
    with torch.no_grad():  # move the model away from the reference
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    loss, _ = t.unlearning_loss(model, batch)
    f, r = batch["forget"], batch["retain"]
    with torch.no_grad():
        lf = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits
        lf_ref = t.ref_model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits
        n_tok = (f["labels"][:, 1:] != -100).sum(-1)
        logratio = -(_nll(lf, f["labels"]) - _nll(lf_ref, f["labels"])) * n_tok  # log π_θ − log π_ref
        npo = ((2 / 0.5) * torch.log1p(torch.exp(0.5 * logratio))).mean()
        lr_ = model(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits
        lr_ref = t.ref_model(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits
        kls = []
        for b in range(r["labels"].shape[0]):
            for pos in range(1, r["labels"].shape[1]):
                if r["labels"][b, pos] != -100:
                    p_ref = torch.softmax(lr_ref[b, pos - 1], -1)
                    p = torch.softmax(lr_[b, pos - 1], -1)
                    kls.append((p_ref * (p_ref.log() - p.log())).sum())
        kl = torch.stack(kls).mean()
    assert loss.item() == pytest.approx((npo + 2.0 * kl).item(), rel=1e-4)


def test_npo_kl_needs_retain_and_checks_its_reduction(tmp_path):
    data, tok, model = demo_world()
    with pytest.raises(ValueError, match="retain_dataset"):
        NPOKLTrainer(
            model=model,
            args=NPOKLConfig(str(tmp_path), **COMMON),
            forget_dataset=data["forget"],
            processing_class=tok,
        )
    with pytest.raises(ValueError, match="kl_reduction"):
        NPOKLConfig(str(tmp_path), kl_reduction="sum")
    with pytest.raises(ValueError, match="beta"):
        SimNPOConfig(str(tmp_path), beta=0.0)


def _rmu(tmp_path, model, data, tok, **kw):
    args = RMUConfig(output_dir=str(tmp_path), **{**COMMON, **kw})
    return RMUTrainer(
        model=model,
        args=args,
        forget_dataset=data["forget"],
        retain_dataset=data["retain"],
        processing_class=tok,
    )


def test_rmu_loss_by_hand_from_hidden_states(tmp_path):
    data, tok, model = demo_world()
    t = _rmu(tmp_path, model, data, tok, steering_layer=0, steering_coeff=3.0, retain_weight=7.0)
    batch = _batch(t)
    with torch.no_grad():
        for p in model.model.layers[0].mlp.down_proj.parameters():  # the frozen copy keeps the old weights
            p.add_(0.05 * torch.randn_like(p))
    loss, logs = t.unlearning_loss(model, batch)
    f, r = batch["forget"], batch["retain"]
    u = torch.rand(64, generator=torch.Generator().manual_seed(0))
    cu = 3.0 * u / u.norm()

    def hidden(m, b):  # hidden_states[1] is layer 0's output
        return m(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True
        ).hidden_states[1]

    def masked_mean(sq, labels):  # sq: (B, L) mean over d; answer positions of each row, then batch mean
        m = (labels != -100).float()
        return ((sq * m).sum(-1) / m.sum(-1)).mean()

    with torch.no_grad():
        forget = masked_mean((hidden(model, f) - cu).pow(2).mean(-1), f["labels"])
        retain = masked_mean((hidden(model, r) - hidden(t.ref_model, r)).pow(2).mean(-1), r["labels"])
    assert logs["rmu_forget"].item() == pytest.approx(forget.item(), rel=1e-5)
    assert logs["rmu_retain"].item() == pytest.approx(retain.item(), rel=1e-5) and retain > 0
    assert loss.item() == pytest.approx((forget + 7.0 * retain).item(), rel=1e-5)


def test_rmu_trains_only_the_selected_modules_and_restores_flags(tmp_path):
    data, tok, model = demo_world()
    model.model.embed_tokens.requires_grad_(False)  # the caller's own choice, kept after training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    t = _rmu(tmp_path, model, data, tok, steering_layer=1, update_layers=[1], max_steps=3, learning_rate=1e-2)
    assert t.update_layers == [1]
    batch = _batch(t)
    forget0 = t.unlearning_loss(model, batch)[1]["rmu_forget"]
    t.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"model.layers.1.mlp.down_proj.weight"}
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert t.unlearning_loss(model, batch)[1]["rmu_forget"] < forget0  # forget activations moved to c·u
    assert "steered decoder layer 1" in t.card_notes()


def test_rmu_defaults_and_bad_settings(tmp_path):
    data, tok, model = demo_world()  # 2 decoder layers
    t = _rmu(tmp_path, model, data, tok)
    assert t.steering_layer == 1 and t.update_layers == [0, 1]  # the middle layer, and ℓ−2..ℓ clipped at 0
    for kw, msg in [
        (dict(steering_layer=5), "does not exist"),
        (dict(steering_layer=0, update_layers=[1]), "above steering_layer"),
        (dict(update_layers=[0, 9]), "lacks"),
        (dict(update_modules=["mlp.nope"]), "not found"),
    ]:
        _, _, m = demo_world()
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        with pytest.raises(ValueError, match=msg):
            _rmu(tmp_path / "x", m, data, tok, **kw)
        assert all(torch.equal(p, before[n]) for n, p in m.named_parameters())
    for kw, msg in [
        (dict(steering_coeff=0.0), "steering_coeff"),
        (dict(activation_positions="all"), "activation_positions"),
        (dict(update_modules=[]), "update_modules"),
        (dict(steering_layer=-1), "steering_layer"),
    ]:
        with pytest.raises(ValueError, match=msg):
            RMUConfig(str(tmp_path), **kw)


def test_rmu_with_lora_trains_lora_on_the_selected_modules_only(tmp_path):
    from peft import LoraConfig

    data, tok, model = demo_world()
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["down_proj", "q_proj"], task_type="CAUSAL_LM")
    args = RMUConfig(output_dir=str(tmp_path), max_steps=2, learning_rate=1e-2, **COMMON)
    t = RMUTrainer(
        model=model,
        args=args,
        forget_dataset=data["forget"],
        retain_dataset=data["retain"],
        processing_class=tok,
        peft_config=lora,
    )
    assert t.ref_model is None  # the adapter-disabled base is the frozen model
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.train()
    changed = {n for n, p in t.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n and "down_proj" in n for n in changed), changed
