"""Bad input gets a clear error naming the problem, and never a destroyed model or checkpoint."""

import os

import datasets
import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification, TrainerCallback
from utils import demo_world

from hf_unlearn import FLATConfig, FLATTrainer, GradDiffConfig, GradDiffTrainer, NonFiniteLossError, NPOConfig
from hf_unlearn.trainers.base import UnlearnConfig

COMMON = dict(
    per_device_train_batch_size=4, report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no"
)


def make(tmp_path, forget=None, tok=None, model=None, **kw):
    data, t, m = demo_world()
    args = FLATConfig(output_dir=str(tmp_path / "out"), **{**COMMON, **kw})
    return FLATTrainer(
        model=model or m,
        args=args,
        forget_dataset=data["forget"] if forget is None else forget,
        processing_class=tok or t,
    )


def test_empty_forget_set(tmp_path):
    with pytest.raises(ValueError, match="forget_dataset is empty"):
        make(tmp_path, forget=datasets.Dataset.from_dict({"question": [], "answer": []}))


def test_missing_columns(tmp_path):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['answer'\]"):
        make(tmp_path, forget=datasets.Dataset.from_dict({"question": ["Who?"], "response": ["Me."]}))


def test_blank_answer_names_the_row(tmp_path):
    bad = datasets.Dataset.from_dict({"question": ["Who?", "Where?"], "answer": ["Me.", "  "]})
    with pytest.raises(ValueError, match="row 1: 'answer' must be a non-empty string"):
        make(tmp_path, forget=bad)


def test_answer_truncated_away_by_max_length(tmp_path):
    with pytest.raises(ValueError, match="row 0: the answer is truncated away entirely"):
        make(tmp_path, max_length=5)


def test_tokenizer_without_pad_token(tmp_path):
    _, tok, _ = demo_world()
    tok = tok.__class__(tokenizer_object=tok.backend_tokenizer, bos_token="<s>", eos_token="</s>")
    assert tok.pad_token_id is None
    with pytest.raises(ValueError, match="no pad token"):
        make(tmp_path, tok=tok)


def test_model_that_is_not_a_causal_lm(tmp_path):
    cfg = LlamaConfig(
        vocab_size=500,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
        pad_token_id=0,
    )
    with pytest.raises(TypeError, match="LlamaForSequenceClassification is not a causal language model"):
        make(tmp_path, model=LlamaForSequenceClassification(cfg))


def test_unknown_divergence_and_impossible_hyper_parameters(tmp_path):
    with pytest.raises(ValueError, match="unknown FLAT divergence 'hellinger'"):
        FLATConfig(output_dir=str(tmp_path), divergence="hellinger")
    with pytest.raises(ValueError, match="beta must be > 0"):
        NPOConfig(output_dir=str(tmp_path), beta=0)
    with pytest.raises(ValueError, match="retain_weight"):
        UnlearnConfig(output_dir=str(tmp_path), retain_weight=-1)
    with pytest.raises(ValueError, match="max_length"):
        UnlearnConfig(output_dir=str(tmp_path), max_length=1)


def test_retain_required(tmp_path):
    data, tok, model = demo_world()
    with pytest.raises(ValueError, match="needs a retain_dataset"):
        GradDiffTrainer(
            model=model,
            args=GradDiffConfig(output_dir=str(tmp_path), **COMMON),
            forget_dataset=data["forget"],
            processing_class=tok,
        )


def test_output_dir_cannot_overwrite_the_input_model(tmp_path):
    data, tok, model = demo_world()
    src = tmp_path / "model"
    model.save_pretrained(src)
    loaded = type(model).from_pretrained(src)
    with pytest.raises(ValueError, match="folder the input model was loaded from"):
        FLATTrainer(
            model=loaded,
            args=FLATConfig(output_dir=str(src), **COMMON),
            forget_dataset=data["forget"],
            processing_class=tok,
        )


class Corrupt(TrainerCallback):
    """Simulates divergence: after step 2 one weight becomes NaN."""

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step == 2:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")


def test_diverged_state_never_overwrites_the_last_good_checkpoint(tmp_path):
    trainer = make(tmp_path, max_steps=4, learning_rate=1e-4, save_strategy="steps", save_steps=1)
    trainer.add_callback(Corrupt())
    with pytest.raises(NonFiniteLossError, match="refusing saving checkpoint-2"):
        trainer.train()
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["checkpoint-1"]
    reloaded = type(trainer.model).from_pretrained(out / "checkpoint-1")
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())


def test_exploding_learning_rate_stops_before_the_optimizer_step(tmp_path):
    trainer = make(tmp_path, max_steps=5, learning_rate=1e38, optim="sgd", max_grad_norm=0.0)
    with pytest.raises(NonFiniteLossError, match="no optimizer step was taken"):
        trainer.train()
    assert trainer.state.global_step < 5
