"""Every registered method, one contract: unlearn (a few steps or the one-shot edit; GUARD: build from the
forget set; RealEra: erase a concept from a tiny Stable Diffusion), save, reload, get the same outputs,
and a model card naming the method's paper.

Parametrised over :func:`hf_unlearn.registry.list_methods`, so a new method is covered as soon as it
registers (and a new kind of method fails here until it gets a round trip).
"""

from __future__ import annotations

import copy

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM
from utils import demo_world

from hf_unlearn.data.qa import encode_prompt
from hf_unlearn.registry import list_methods

COMMON = dict(
    per_device_train_batch_size=4,
    max_steps=2,
    learning_rate=1e-3,
    seed=0,
    report_to=[],
    save_strategy="no",
    use_cpu=True,
    disable_tqdm=True,
)
# per-method settings so that the tiny model really changes (SSD's default α selects nothing here)
OVERRIDES = {
    "ssd": dict(selection_weighting=5.0, importance_batch_size=4),
    "iau": dict(gradient_batch_size=4),
}


def prompts(tok, questions):
    """Left-padded prompt ids and attention mask, (B, T)."""
    ids = [encode_prompt(tok, q) for q in questions]
    width = max(map(len, ids))
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])
    return input_ids, mask


def check_card(text: str, entry) -> None:
    assert f"arxiv.org/abs/{entry.paper.arxiv_id}" in text
    assert entry.paper.bibtex.strip() in text  # the BibTeX verbatim, in the Citation section


def round_trip_trainer(entry, tmp_path, data, tok, model):
    args = entry.config_cls(output_dir=str(tmp_path / "run"), **{**COMMON, **OVERRIDES.get(entry.id, {})})
    trainer = entry.cls(
        model=model,
        args=args,
        forget_dataset=data["forget"],
        retain_dataset=data["retain"] if entry.cls.uses_retain else None,
        processing_class=tok,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters()), "no weight changed"
    out = tmp_path / "saved"
    trainer.save_model(str(out))

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ids, mask = prompts(tok, data["forget"]["question"][:2] + data["retain"]["question"][:2])
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        got = reloaded(input_ids=ids.to(reloaded.device), attention_mask=mask.to(reloaded.device)).logits
    torch.testing.assert_close(got.cpu(), expected.cpu(), rtol=0, atol=1e-6)

    card = ModelCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert (
        meta["unlearning"]["method"] == entry.id
        and meta["unlearning"]["paper"] == f"arxiv:{entry.paper.arxiv_id}"
    )
    check_card(card.content, entry)


def round_trip_logits_processor(entry, tmp_path, data, tok, model):
    pytest.importorskip("sentence_transformers")
    guard = entry.cls.from_forget_set(model, tok, data["forget"], negatives=[data["retain"], data["holdout"]])
    guard.save_pretrained(tmp_path)
    reloaded = entry.cls.from_pretrained(tmp_path, model, tok, sentence_model=guard.embedder.model)
    ids, mask = prompts(tok, data["forget"]["question"][:2] + data["retain"]["question"][:2])
    torch.testing.assert_close(reloaded.target_probability(ids, mask), guard.target_probability(ids, mask))
    expected = guard.generate(ids, mask, max_new_tokens=8, do_sample=False)
    assert torch.equal(reloaded.generate(ids, mask, max_new_tokens=8, do_sample=False), expected)
    check_card((tmp_path / "README.md").read_text(encoding="utf-8"), entry)


def round_trip_pipeline(entry, tmp_path):
    from test_realera import generate
    from utils import tiny_pipe

    pipe = tiny_pipe()
    assert isinstance(pipe, entry.cls)
    original = generate(pipe)
    pipe.erase("cat", anchors="dog", preserve="tree", config=entry.config_cls(num_neighbours=2, num_beyond=2))
    erased = generate(pipe)
    assert abs(erased - original).max() > 0, "the erase changed nothing"
    pipe.save_pretrained(tmp_path)
    reloaded = entry.cls.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert (generate(reloaded) == erased).all()
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "text-to-image"
    assert card.data.to_dict()["unlearning"]["method"] == entry.id
    check_card(card.content, entry)


def round_trip_diffusion_trainer(entry, tmp_path):
    from diffusers import UNet2DModel
    from utils import tiny_class_unet, tiny_ddpm_scheduler, tiny_image_dataset

    unet = tiny_class_unet()
    args = entry.config_cls(output_dir=str(tmp_path / "run"), **{**COMMON, "per_device_train_batch_size": 2})
    trainer = entry.cls(
        model=unet,
        args=args,
        noise_scheduler=tiny_ddpm_scheduler(),
        forget_dataset=tiny_image_dataset(4, seed=1, class_labels=[0] * 4),
        retain_dataset=tiny_image_dataset(4, seed=2, class_labels=[1, 2, 3, 1]),
    )
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in unet.named_parameters()), "no weight changed"
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    reloaded = UNet2DModel.from_pretrained(out).eval()
    x, t, c = torch.randn(2, 3, 8, 8), torch.tensor([3, 50]), torch.tensor([0, 1])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x, t, c).sample, unet.eval()(x, t, c).sample, rtol=0, atol=1e-6)
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "diffusers"
    assert card.data.to_dict()["unlearning"]["method"] == entry.id
    check_card(card.content, entry)


def round_trip_continual_trainer(entry, tmp_path, data, tok, model):
    from peft import LoraConfig, PeftModel, get_peft_model

    from hf_unlearn.data.qa import QACollator, tokenize_qa_dataset

    base = copy.deepcopy(model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    args = entry.config_cls(output_dir=str(tmp_path / "run"), **COMMON)
    trainer = entry.cls(
        model=peft_model,
        args=args,
        train_dataset=tokenize_qa_dataset(data["retain"], tok, 64),
        data_collator=QACollator(tok.pad_token_id),
    )
    trainer.train()
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    reloaded = PeftModel.from_pretrained(base, out).eval()
    ids, mask = prompts(tok, data["retain"]["question"][:4])
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(input_ids=ids, attention_mask=mask).logits
        got = reloaded(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    card = ModelCard.load(out / "README.md")
    assert card.data.to_dict()["continual"]["method"] == entry.id
    check_card(card.content, entry)


ROUND_TRIPS = {
    "trainer": round_trip_trainer,
    "logits_processor": round_trip_logits_processor,
    "pipeline": round_trip_pipeline,
    "diffusion_trainer": round_trip_diffusion_trainer,
    "continual_trainer": round_trip_continual_trainer,
}


@pytest.mark.parametrize("entry", list_methods(), ids=lambda e: e.id)
def test_unlearn_save_reload_and_card(entry, tmp_path):
    if entry.kind not in ROUND_TRIPS:
        pytest.fail(f"no save/reload round trip for methods of kind {entry.kind!r} ({entry.id})")
    if entry.kind in ("pipeline", "diffusion_trainer"):
        return ROUND_TRIPS[entry.kind](entry, tmp_path)
    data, tok, model = demo_world()
    ROUND_TRIPS[entry.kind](entry, tmp_path, data, tok, model)
