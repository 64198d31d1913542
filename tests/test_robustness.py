"""Regression tests for defects a new user hit in the trainers' base: refused calls that mutated the
caller's model, an untrue divergence message, tokenizer/model mismatches, a silently reused SalUn mask,
PEFT reference models, and positional config arguments."""

import dataclasses
import math

import pytest
import torch
from classif_utils import blobs, tiny_resnet
from peft import LoraConfig, get_peft_model
from transformers import TrainerCallback, TrainingArguments
from utils import demo_world

from hf_unlearn import GAConfig, GATrainer, NonFiniteLossError, NPOConfig, NPOTrainer
from hf_unlearn.data.qa import QACollator, tokenize_qa_dataset
from hf_unlearn.importance.saliency import save_mask
from hf_unlearn.registry import list_methods
from hf_unlearn.tiny import train_tokenizer
from hf_unlearn.trainers.salun import MASK_FILE, SalUnConfig, SalUnTrainer

COMMON = dict(
    report_to=[], use_cpu=True, disable_tqdm=True, per_device_train_batch_size=4, save_strategy="no"
)
LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def _snapshot(model):
    """Everything a wrap could change: module classes, parameter names, values and trainability."""
    return (
        [(n, type(m).__name__) for n, m in model.named_modules()],
        {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
    )


def _same(a, b) -> bool:
    return (
        a[0] == b[0]
        and a[1].keys() == b[1].keys()
        and all(torch.equal(a[1][n][0], b[1][n][0]) and a[1][n][1] == b[1][n][1] for n in a[1])
    )


# ------------------------------------------------------------------- a refused call changes nothing
def test_peft_config_does_not_touch_the_model_when_the_forget_set_is_empty(tmp_path):
    data, tok, model = demo_world()
    before = _snapshot(model)
    with pytest.raises(ValueError, match="empty"):
        GATrainer(
            model=model,
            args=GAConfig(output_dir=str(tmp_path), **COMMON),
            forget_dataset=data["forget"].select([]),
            processing_class=tok,
            peft_config=LoraConfig(**LORA),
        )
    assert _same(before, _snapshot(model))


def test_peft_config_is_taken_out_again_when_set_up_fails_after_wrapping(tmp_path):
    """SalUn reads its mask file after the model is wrapped: a refused mask must unwrap again."""
    data, tok, model = demo_world()
    before = _snapshot(model)
    save_mask({"nope": torch.ones(2, dtype=torch.bool)}, tmp_path / "m.safetensors")
    args = SalUnConfig(output_dir=str(tmp_path / "o"), mask_path=str(tmp_path / "m.safetensors"), **COMMON)
    with pytest.raises(ValueError, match="does not fit"):
        SalUnTrainer(
            model=model,
            args=args,
            forget_dataset=data["forget"],
            processing_class=tok,
            peft_config=LoraConfig(**LORA),
        )
    assert _same(before, _snapshot(model))


def test_salun_refuses_a_loss_of_the_wrong_kind_before_wrapping(tmp_path):
    data, tok, model = demo_world()
    before = _snapshot(model)
    args = SalUnConfig(output_dir=str(tmp_path), forget_loss="random_label", **COMMON)
    with pytest.raises(ValueError, match="does not fit a causal LM"):
        SalUnTrainer(
            model=model,
            args=args,
            forget_dataset=data["forget"],
            processing_class=tok,
            peft_config=LoraConfig(**LORA),
        )
    assert _same(before, _snapshot(model))


# ---------------------------------------------------------------------------- learning rate / NaN
@pytest.mark.parametrize("lr", [math.inf, -math.inf, math.nan, 0.0, -1e-3])
def test_non_finite_or_non_positive_learning_rate_is_refused(tmp_path, lr):
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        GAConfig(output_dir=str(tmp_path), learning_rate=lr)


class PoisonAfter(TrainerCallback):
    """Stands in for an optimizer step that diverged: the weights turn NaN after step ``step``."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def _diverge(tmp_path, lr, callbacks=(), save_steps=1):
    data, tok, model = demo_world()
    args = GAConfig(
        output_dir=str(tmp_path),
        learning_rate=lr,
        max_steps=6,
        **{**COMMON, "save_strategy": "steps"},
        save_steps=save_steps,
    )
    t = GATrainer(
        model=model, args=args, forget_dataset=data["forget"], processing_class=tok, callbacks=list(callbacks)
    )
    with pytest.raises(NonFiniteLossError) as err:
        t.train()
    return model, str(err.value)


def test_divergence_message_says_the_weights_are_nan_and_names_the_last_checkpoint(tmp_path):
    model, msg = _diverge(tmp_path, 1e-3, [PoisonAfter(3)], save_steps=2)
    assert not all(torch.isfinite(p).all() for p in model.parameters())
    assert "already NaN/inf" in msg and f"the last checkpoint, {tmp_path / 'checkpoint-2'}" in msg
    assert "still holds" not in msg and "hold the last finite state" not in msg


@pytest.mark.parametrize("lr", [1e36])
def test_divergence_message_matches_the_weights_in_memory(tmp_path, lr):
    model, msg = _diverge(tmp_path, lr)
    finite = all(torch.isfinite(p).all() for p in model.parameters())
    assert ("still holds finite weights" in msg) == finite
    assert ("already NaN/inf" in msg) == (not finite)


# ------------------------------------------------------------------------- tokenizer / vocabulary
def test_tokenizer_larger_than_the_embedding_matrix_is_refused(tmp_path):
    data, tok, model = demo_world()
    model.resize_token_embeddings(len(tok) - 10)
    with pytest.raises(ValueError, match=rf"tokenizer has {len(tok)} tokens but .* {len(tok) - 10} rows"):
        GATrainer(
            model=model,
            args=GAConfig(output_dir=str(tmp_path), **COMMON),
            forget_dataset=data["forget"],
            processing_class=tok,
        )


def test_tokenizer_much_smaller_than_the_embedding_matrix_warns(tmp_path):
    data, tok, model = demo_world()
    small = train_tokenizer([r["question"] + " " + r["answer"] for r in data["forget"]], vocab_size=120)
    assert len(small) < 0.9 * model.get_input_embeddings().num_embeddings
    with pytest.warns(UserWarning, match="this model's tokenizer"):
        GATrainer(
            model=model,
            args=GAConfig(output_dir=str(tmp_path), **COMMON),
            forget_dataset=data["forget"],
            processing_class=small,
        )


# ------------------------------------------------------------------------------ SalUn mask ratio
def _salun(out, **kw):
    ds = blobs(30)
    args = SalUnConfig(
        output_dir=str(out), **{**COMMON, "max_steps": 4, "optim": "sgd", "learning_rate": 0.05, **kw}
    )
    return SalUnTrainer(
        model=tiny_resnet(),
        args=args,
        forget_dataset=ds.filter(lambda r: r["labels"] == 0),
        retain_dataset=ds.filter(lambda r: r["labels"] != 0),
    )


def test_salun_refuses_a_saved_mask_of_another_ratio(tmp_path):
    t = _salun(tmp_path / "a", mask_ratio=0.5)
    t.train()
    t.save_model()
    with pytest.raises(ValueError, match=r"mask_ratio=0.5, but this run has mask_ratio=0.3"):
        _salun(tmp_path / "b", mask_ratio=0.3, mask_path=str(tmp_path / "a" / MASK_FILE))
    _salun(tmp_path / "c", mask_ratio=0.5, mask_path=str(tmp_path / "a" / MASK_FILE))  # same ratio: fine


def test_salun_resume_with_another_mask_ratio_is_refused(tmp_path):
    _salun(tmp_path, mask_ratio=0.5, save_strategy="steps", save_steps=2).train()
    resumed = _salun(tmp_path, mask_ratio=0.2, save_strategy="steps", save_steps=2)
    with pytest.raises(ValueError, match="mask_ratio=0.5, but this run has mask_ratio=0.2"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


# ------------------------------------------------------------------------------ PEFT references
def _batch(tok, ds):
    return QACollator(tok.pad_token_id)(list(tokenize_qa_dataset(ds, tok, 128)))


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_explicit_ref_model_is_used_with_a_peft_model(tmp_path):
    data, tok, model = demo_world()
    _, _, ref = demo_world()
    t = NPOTrainer(
        model=model,
        args=NPOConfig(output_dir=str(tmp_path), **COMMON),
        forget_dataset=data["forget"],
        processing_class=tok,
        peft_config=LoraConfig(**LORA),
        ref_model=ref,
    )
    assert t.ref_model is ref and not any(p.requires_grad for p in ref.parameters())


def test_a_trained_adapter_is_its_own_reference_not_the_base_model(tmp_path):
    data, tok, base = demo_world()
    peft_model = get_peft_model(base, LoraConfig(**LORA))
    with torch.no_grad():  # an adapter trained earlier: lora_B no longer zero
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    batch = _batch(tok, data["forget"])
    before_unlearning = _logits(peft_model, batch)
    with peft_model.disable_adapter():
        base_logits = _logits(peft_model, batch)
    assert not torch.allclose(before_unlearning, base_logits, atol=1e-3)
    args = NPOConfig(output_dir=str(tmp_path), max_steps=3, learning_rate=1e-2, **COMMON)
    t = NPOTrainer(model=peft_model, args=args, forget_dataset=data["forget"], processing_class=tok)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    t.train()
    assert {n for n, p in peft_model.named_parameters() if p.requires_grad} == trainable
    assert all(".default." in n for n in trainable)
    peft_model.eval()
    assert torch.allclose(t.ref_forward(peft_model, batch), before_unlearning, atol=1e-6)
    assert not torch.allclose(_logits(peft_model, batch), before_unlearning, atol=1e-3)  # it did unlearn


def test_a_fresh_adapter_uses_the_disabled_base_without_a_copy(tmp_path):
    data, tok, model = demo_world()
    t = NPOTrainer(
        model=model,
        args=NPOConfig(output_dir=str(tmp_path), **COMMON),
        forget_dataset=data["forget"],
        processing_class=tok,
        peft_config=LoraConfig(**LORA),
    )
    assert t.ref_model is None and t.ref_adapter is None


# ------------------------------------------------------------------------------ positional configs
@pytest.mark.parametrize(
    "config", sorted({e.config_cls for e in list_methods() if e.config_cls}, key=lambda c: c.__name__)
)
def test_output_dir_is_the_first_field_of_every_config(config, tmp_path):
    if not issubclass(config, TrainingArguments):
        pytest.skip(f"{config.__name__} is not a TrainingArguments")
    assert dataclasses.fields(config)[0].name == "output_dir"
    assert config(str(tmp_path / "out")).output_dir == str(tmp_path / "out")


@pytest.mark.parametrize("method", ["ssd", "iau"])
def test_one_shot_trainers_refuse_before_wrapping(tmp_path, method):
    """SSD refuses adapters; IAU refuses a missing retain set: neither may inject LoRA layers first."""
    from hf_unlearn.registry import get_method

    data, tok, model = demo_world()
    before = _snapshot(model)
    entry = get_method(method)
    with pytest.raises((TypeError, ValueError), match="merge the adapter first|needs a retain_dataset"):
        entry.cls(
            model=model,
            args=entry.config_cls(output_dir=str(tmp_path), **COMMON),
            forget_dataset=data["forget"],
            processing_class=tok,
            peft_config=LoraConfig(**LORA),
        )
    assert _same(before, _snapshot(model))
