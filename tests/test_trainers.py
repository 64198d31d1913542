import pytest
import torch
from peft import LoraConfig
from utils import SHARED_TOFU, demo_world

from hf_unlearn import (
    FLATConfig,
    FLATTrainer,
    GAConfig,
    GATrainer,
    GradDiffConfig,
    GradDiffTrainer,
    IDKConfig,
    IDKTrainer,
    NPOConfig,
    NPOTrainer,
)
from hf_unlearn.data.qa import QACollator, tokenize_qa_dataset
from hf_unlearn.data.templates import sample_templates
from hf_unlearn.losses import sequence_mean_prob
from hf_unlearn.registry import list_methods

COMMON = dict(
    per_device_train_batch_size=4,
    logging_steps=2,
    report_to=[],
    save_strategy="no",
    use_cpu=True,
    disable_tqdm=True,
)


def mean_prob(model, tok, ds, answers=None):
    rows = tokenize_qa_dataset(ds, tok, 128, answers=answers)
    batch = QACollator(tok.pad_token_id)(list(rows))
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_mean_prob(logits, batch["labels"]).mean().item()


@pytest.mark.parametrize("div", ["kl", "js", "pearson", "tv"])
def test_flat_lowers_forget_and_raises_template_probability(tmp_path, div):
    data, tok, model = demo_world()
    args = FLATConfig(
        output_dir=str(tmp_path), divergence=div, max_steps=12, learning_rate=1e-3, seed=3, **COMMON
    )
    trainer = FLATTrainer(model=model, args=args, forget_dataset=data["forget"], processing_class=tok)
    templates = sample_templates(len(data["forget"]), seed=3)
    f0, e0 = mean_prob(model, tok, data["forget"]), mean_prob(model, tok, data["forget"], templates)
    trainer.train()
    f1, e1 = mean_prob(model, tok, data["forget"]), mean_prob(model, tok, data["forget"], templates)
    assert f1 < f0 - 0.05, (f0, f1)
    assert e1 > e0, (e0, e1)
    logged = [h for h in trainer.state.log_history if "forget_prob" in h]
    assert logged and {"template_prob", "loss"} <= set(logged[0])


def test_flat_template_sampling_is_reproducible_and_column_is_used(tmp_path):
    data, tok, model = demo_world()
    a = FLATTrainer(
        model=model,
        args=FLATConfig(output_dir=str(tmp_path), seed=7, **COMMON),
        forget_dataset=data["forget"],
        processing_class=tok,
    )
    b = FLATTrainer(
        model=model,
        args=FLATConfig(output_dir=str(tmp_path), seed=7, **COMMON),
        forget_dataset=data["forget"],
        processing_class=tok,
    )
    c = FLATTrainer(
        model=model,
        args=FLATConfig(output_dir=str(tmp_path), seed=8, **COMMON),
        forget_dataset=data["forget"],
        processing_class=tok,
    )
    ids = lambda t: [r["input_ids"] for r in t.train_dataset.views["template"]]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    forget = data["forget"].add_column("refusal", ["No comment."] * len(data["forget"]))
    d = FLATTrainer(
        model=model,
        args=FLATConfig(output_dir=str(tmp_path), template_column="refusal", **COMMON),
        forget_dataset=forget,
        processing_class=tok,
    )
    first = d.train_dataset.views["template"][0]
    answer = [t for t, lab in zip(first["input_ids"], first["labels"], strict=True) if lab != -100]
    assert tok.decode(answer, skip_special_tokens=True).strip() == "No comment."


def test_flat_official_padding_mean_switch_changes_the_loss(tmp_path):
    data, tok, model = demo_world()
    losses = {}
    for flag in (False, True):
        args = FLATConfig(output_dir=str(tmp_path), official_padding_mean=flag, **COMMON)
        t = FLATTrainer(model=model, args=args, forget_dataset=data["forget"], processing_class=tok)
        batch = t.data_collator([t.train_dataset[i] for i in range(4)])
        losses[flag] = t.unlearning_loss(model, batch)
    # the padded mean dilutes P (|y| / padded length < 1)
    assert losses[True][1]["forget_prob"] < losses[False][1]["forget_prob"]


@pytest.mark.parametrize(
    "trainer_cls, config_cls, needs_retain, term",
    [
        (GATrainer, GAConfig, False, "forget_nll"),
        (GradDiffTrainer, GradDiffConfig, True, "retain_nll"),
        (NPOTrainer, NPOConfig, True, "npo_loss"),
        (IDKTrainer, IDKConfig, True, "idk_nll"),
    ],
)
def test_baselines_train_and_log_their_terms(tmp_path, trainer_cls, config_cls, needs_retain, term):
    data, tok, model = demo_world()
    args = config_cls(output_dir=str(tmp_path), max_steps=6, learning_rate=2e-3, **COMMON)
    retain = data["retain"] if needs_retain else None
    f0 = mean_prob(model, tok, data["forget"])
    t = trainer_cls(
        model=model, args=args, forget_dataset=data["forget"], retain_dataset=retain, processing_class=tok
    )
    t.train()
    assert any(term in h for h in t.state.log_history)
    if trainer_cls is not IDKTrainer:
        assert mean_prob(model, tok, data["forget"]) < f0


def test_npo_reference_is_a_frozen_copy_and_starts_at_log2(tmp_path):
    data, tok, model = demo_world()
    t = NPOTrainer(
        model=model,
        args=NPOConfig(output_dir=str(tmp_path), beta=0.5, **COMMON),
        forget_dataset=data["forget"],
        processing_class=tok,
    )
    assert t.ref_model is not None and t.ref_model is not model
    assert not any(p.requires_grad for p in t.ref_model.parameters())
    batch = t.data_collator([t.train_dataset[i] for i in range(4)])
    loss, _ = t.unlearning_loss(model, batch)
    assert loss.item() == pytest.approx((2 / 0.5) * torch.log(torch.tensor(2.0)).item(), abs=1e-5)


def test_peft_model_trains_only_adapters_and_uses_disabled_adapter_as_reference(tmp_path):
    data, tok, model = demo_world()
    base_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    args = NPOConfig(output_dir=str(tmp_path), max_steps=4, learning_rate=5e-3, **COMMON)
    t = NPOTrainer(
        model=model, args=args, forget_dataset=data["forget"], processing_class=tok, peft_config=lora
    )
    assert t.ref_model is None  # no weight copy: the base model is the adapter-disabled PEFT model
    t.train()
    peft_model = t.model
    for n, p in peft_model.get_base_model().named_parameters():
        if "lora_" not in n:
            key = n.replace(".base_layer", "")
            assert torch.equal(p, base_weights[key]), n
    assert any("lora_" in n and p.abs().sum() > 0 for n, p in peft_model.named_parameters())


def test_registry_lists_the_llm_methods():
    ids = {m.id for m in list_methods()}
    assert {"flat", "ga", "graddiff", "npo", "idk"} <= ids
    for m in list_methods():
        assert m.paper.bibtex.startswith("@") and m.paper.link


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(tmp_path):
    data, tok, _ = demo_world()
    kw = dict(max_steps=4, learning_rate=1e-3, seed=5, **{**COMMON, "save_strategy": "steps"}, save_steps=2)
    _, _, m1 = demo_world()
    full = FLATTrainer(
        model=m1,
        args=FLATConfig(output_dir=str(tmp_path / "a"), **kw),
        forget_dataset=data["forget"],
        processing_class=tok,
    )
    full.train()
    _, _, m2 = demo_world()
    resumed = FLATTrainer(
        model=m2,
        args=FLATConfig(output_dir=str(tmp_path / "a"), **kw),
        forget_dataset=data["forget"],
        processing_class=tok,
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    w1, w2 = _weights(m1), _weights(m2)
    assert all(torch.allclose(w1[n], w2[n], atol=1e-6) for n in w1)


def test_save_reload_gives_same_outputs_and_a_card(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data, tok, model = demo_world()
    t = FLATTrainer(
        model=model,
        args=FLATConfig(output_dir=str(tmp_path), max_steps=2, **COMMON),
        forget_dataset=data["forget"],
        processing_class=tok,
    )
    t.train()
    t.record_metrics("after", {"forget_probability": 0.12})
    t.save_model()
    assert (tmp_path / "model.safetensors").exists()
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    ids = torch.tensor([tok2("Question: Where was anyone born?")["input_ids"]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, back(ids).logits)
    card = (tmp_path / "README.md").read_text()
    assert "hf_unlearn" in card and "2410.11143" in card and "@inproceedings{wang2025flat" in card
    assert "0.12" in card


@pytest.mark.skipif(not SHARED_TOFU.is_dir(), reason="../shared/data/tofu is absent")
def test_flat_runs_on_real_tofu_rows(tmp_path):
    from hf_unlearn.data.tofu import load_tofu
    from hf_unlearn.tiny import tiny_llama, train_tokenizer

    forget = load_tofu("forget01", SHARED_TOFU).select(range(8))
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in forget], vocab_size=400)
    model = tiny_llama(tok, hidden_size=32)
    args = FLATConfig(output_dir=str(tmp_path), max_steps=2, max_length=128, **COMMON)
    trainer = FLATTrainer(model=model, args=args, forget_dataset=forget, processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 2
    assert any("forget_prob" in h for h in trainer.state.log_history)
