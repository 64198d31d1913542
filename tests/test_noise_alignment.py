"""RealEra's LoRA stage (stage 4) and the ESD-x baseline: the losses by hand, training, rollback on failure,
and an unmerged adapter through save_pretrained → from_pretrained."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from test_realera import assert_bit_identical, generate, state
from utils import tiny_pipe

from hf_unlearn.pipelines import RealEraConfig, RealEraPipeline, noise_alignment
from hf_unlearn.pipelines.noise_alignment import alignment_loss, esd_parameters, esd_target, partial_denoise

FAST = {"sample_steps": 3, "lora_images": 2, "num_neighbours": 2, "num_beyond": 2}


def test_esd_target_by_hand():
    eps_c, eps_u = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.0, 1.0, 1.0])
    # ε(c) − η (ε(c) − ε(∅)) with η = 2: [1 − 2, 2 − 2, −1 + 4]
    assert torch.equal(esd_target(eps_c, eps_u, 2.0), torch.tensor([-1.0, 0.0, 3.0]))
    assert torch.equal(esd_target(eps_c, eps_u, 0.0), eps_c)


def test_alignment_loss_by_hand():
    pred_e, target_a = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])
    pred_b, target_b = torch.tensor([[2.0, 2.0]]), torch.tensor([[2.0, 0.0]])
    loss, logs = alignment_loss(pred_e, target_a, pred_b, target_b, beyond_weight=0.5)
    # erase: (1 + 4) / 2 = 2.5; beyond: (0 + 4) / 2 = 2; total 2.5 + 0.5 · 2
    assert loss.item() == pytest.approx(3.5) and logs == {"erase": 2.5, "beyond": 2.0}
    assert alignment_loss(pred_e, target_a)[0].item() == pytest.approx(2.5)


def test_partial_denoise_is_seeded_and_stops_where_asked():
    pipe = tiny_pipe()
    c = pipe._encode(*pipe._tokenize("cat", "c", False)[:2])[None]
    u = pipe._encode(*pipe._tokenize("", "u", True)[:2])[None]
    run = lambda k: partial_denoise(  # noqa: E731
        pipe.unet, pipe.scheduler, c, u, (2, 4, 8, 8), 4, k, generator=torch.Generator().manual_seed(1)
    )
    (x1, t1), (x2, _), (x0, t0) = run(2), run(2), run(0)
    assert torch.equal(x1, x2) and x1.shape == (2, 4, 8, 8)
    pipe.scheduler.set_timesteps(4)
    assert t1 == pipe.scheduler.timesteps[2] and t0 == pipe.scheduler.timesteps[0]
    assert not torch.equal(x0, x1)


def test_lora_stage_lowers_its_loss_and_is_merged():
    pipe = tiny_pipe()
    config = RealEraConfig(lora_steps=40, lora_lr=3e-3, **FAST)
    summary = pipe.erase("cat", anchors="dog", preserve=["tree"], config=config)
    assert summary["lora_loss_last_10"] < 0.9 * summary["lora_loss_first_10"]
    assert summary["lora_adapter"] is None and not getattr(pipe.unet, "peft_config", None)
    assert {"encode", "mining", "closed_form", "lora_samples", "lora"} <= set(summary["seconds"])
    assert not any("lora" in n for n in pipe.unet.state_dict())  # merged: plain Linear layers again


def test_lora_stage_changes_what_the_closed_form_left():
    closed, lora = tiny_pipe(), tiny_pipe()
    closed.erase("cat", anchors="dog", config=RealEraConfig(**FAST))
    lora.erase("cat", anchors="dog", config=RealEraConfig(lora_steps=5, lora_lr=1e-3, **FAST))
    assert abs(generate(closed) - generate(lora)).max() > 0


def test_unmerged_adapter_round_trips(tmp_path):
    pipe = tiny_pipe()
    summary = pipe.erase("cat", config=RealEraConfig(lora_steps=5, lora_lr=1e-2, lora_merge=False, **FAST))
    assert summary["lora_adapter"] == "realera" and "realera" in pipe.unet.peft_config
    erased = generate(pipe)
    pipe.unet.disable_adapters()
    without = generate(pipe)
    pipe.unet.enable_adapters()
    assert abs(erased - without).max() > 0
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet_lora" / "realera").is_dir()
    (weights,) = (tmp_path / "unet").glob("*.safetensors")
    assert not any("lora" in k for k in load_file(weights))  # the base UNet, the adapter saved apart
    reloaded = RealEraPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert "realera" in reloaded.unet.peft_config
    assert (generate(reloaded) == erased).all()
    with pytest.raises(ValueError, match="LoRA adapters .* not merged"):
        reloaded.erase("dog")


def test_non_finite_lora_loss_restores_every_weight(monkeypatch):
    pipe = tiny_pipe()
    before = state(pipe.unet)

    def nan_loss(*args, **kwargs):
        return torch.tensor(float("nan"), requires_grad=True), {}

    monkeypatch.setattr(noise_alignment, "alignment_loss", nan_loss)
    with pytest.raises(FloatingPointError, match="LoRA stage: the loss is nan at step 0"):
        pipe.erase("cat", config=RealEraConfig(lora_steps=3, **FAST))
    assert not getattr(pipe.unet, "peft_config", None)
    assert_bit_identical(pipe.unet, before)
    assert pipe.config.realera is None


@pytest.mark.parametrize(
    "method,trained", [("esd-x", ("to_q", "to_k", "to_v", "to_out")), ("esd-x-strict", ("to_k", "to_v"))]
)
def test_esd_trains_only_its_cross_attention_parameters(method, trained):
    pipe = tiny_pipe()
    before = state(pipe.unet)
    summary = pipe.erase("cat", method=method, config=RealEraConfig(esd_steps=3, esd_lr=1e-2, sample_steps=3))
    after = pipe.unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".attn2." in k and any(f".{m}" in k for m in trained) for k in changed)
    assert summary["trained_parameters"] == sum(p.numel() for p in esd_parameters(pipe.unet, method).values())
    assert summary["method"] == method and "esd" in summary["seconds"]


def test_esd_lowers_the_concepts_cross_attention_response():
    """ESD pushes ε(x_t, c) away from the concept: after training, its loss on fresh draws is lower."""
    pipe = tiny_pipe()
    summary = pipe.erase(
        "cat", method="esd-x", config=RealEraConfig(esd_steps=30, esd_lr=3e-3, sample_steps=3)
    )
    assert summary["esd_loss_last"] < summary["esd_loss_first"]


def test_esd_refuses_a_unet_without_cross_attention():
    pipe = tiny_pipe()
    with pytest.raises(ValueError, match="no cross-attention"):
        esd_parameters(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="ESD mode"):
        esd_parameters(pipe.unet, "esd-u")


def test_cards_describe_the_lora_stage_esd_and_recorded_metrics(tmp_path):
    from huggingface_hub import ModelCard

    from hf_unlearn.papers import ESD_PAPER

    pipe = tiny_pipe()
    pipe.erase("cat", config=RealEraConfig(lora_steps=3, **FAST))
    pipe.record_evaluation(
        {"erasure": {"before": 0.81, "after": 0.0}, "specificity": {"before": 0.7, "after": 0.65}}
    )
    pipe.save_pretrained(tmp_path / "realera")
    card = ModelCard.load(tmp_path / "realera" / "README.md").content
    assert "LoRA noise alignment: 3 steps" in card and "merged into the UNet" in card
    assert "| erasure | 0.81 | 0 |" in card and "| specificity | 0.7 | 0.65 |" in card
    assert "in closed form, with no training steps" not in card
    reloaded = RealEraPipeline.from_pretrained(tmp_path / "realera")
    assert reloaded.config.realera["evaluation"]["erasure"] == {"before": 0.81, "after": 0.0}

    esd = tiny_pipe()
    esd.erase("cat", method="esd-x", config=RealEraConfig(esd_steps=2, sample_steps=2))
    card = esd.model_card()
    assert (
        f"arxiv:{ESD_PAPER.arxiv_id}" in str(card.data.to_dict()) and ESD_PAPER.bibtex.strip() in card.content
    )
    assert "ESD fine-tuning of" in card.content and "Mined neighbour concepts" not in card.content
    with pytest.raises(ValueError, match="must be a number"):
        esd.record_evaluation({"erasure": {"before": float("nan")}})
