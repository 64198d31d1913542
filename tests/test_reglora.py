"""RegLoRA (SEFE): key elements, the gathered penalty by hand, key-set files, and the trainer on a LoRA model."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import HfArgumentParser
from utils import demo_world

from hf_unlearn.data.qa import QACollator, tokenize_qa_dataset
from hf_unlearn.trainers.reglora import (
    KEY_SET_FILE,
    KeyPenalty,
    RegLoRAConfig,
    RegLoRATrainer,
    gathered_update,
    identify_key_elements,
    key_elements,
    load_key_set,
    lora_pairs,
    module_shapes,
    reg_penalty,
    save_key_set,
    update_key_set,
)


def test_key_elements_by_hand():
    delta = torch.tensor([[1.0, -5.0, 2.0], [0.5, 4.0, -3.0]])
    # top 50 % of 6 entries = 3: |−5| at (0, 1), 4 at (1, 1), |−3| at (1, 2)
    assert key_elements(delta, 50).tolist() == [[0, 1], [1, 1], [1, 2]]
    assert key_elements(delta, 10).shape == (0, 2)  # ⌊0.6⌋ = 0 entries
    assert key_elements(delta, 100).shape == (6, 2)
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError, match=r"\(0, 100\]"):
            key_elements(delta, bad)


def test_gather_identity_and_penalty_by_hand():
    g = torch.Generator().manual_seed(0)
    b, a = torch.randn(5, 2, generator=g), torch.randn(2, 4, generator=g)
    idx = torch.tensor([[0, 0], [4, 3], [2, 1], [2, 1]])
    assert torch.allclose(gathered_update(b, a, idx), (b @ a)[idx[:, 0], idx[:, 1]])
    # two modules: module 1's BA = [[1, 2], [3, 4]], module 2's BA = [[0, -6]]
    pairs = {
        "m1": (torch.eye(2), torch.tensor([[1.0, 2.0], [3.0, 4.0]])),
        "m2": (torch.tensor([[2.0]]), torch.tensor([[0.0, -3.0]])),
    }
    keys = {"m1": torch.tensor([[0, 1], [1, 0]]), "m2": torch.tensor([[0, 1]])}
    # m1: mean(|2|, |3|) = 2.5; m2: |−6| = 6; L_reg = (2.5 + 6) / 2 = 4.25
    assert reg_penalty(pairs, keys).item() == pytest.approx(4.25)
    assert reg_penalty(pairs, {"m1": keys["m1"], "m2": torch.empty(0, 2, dtype=torch.long)}).item() == 2.5


def test_batched_penalty_equals_the_per_module_penalty_with_its_gradients():
    g = torch.Generator().manual_seed(1)
    shapes = {
        "q": (6, 5, 2),
        "k": (6, 5, 2),
        "down": (5, 9, 2),
        "other_rank": (4, 3, 3),
        "no_keys": (3, 3, 2),
    }
    pairs = {
        n: (
            torch.randn(o, r, generator=g, requires_grad=True),
            torch.randn(r, i, generator=g, requires_grad=True),
        )
        for n, (o, i, r) in shapes.items()
    }
    keys = {
        n: torch.stack([torch.randint(0, o, (k,), generator=g), torch.randint(0, i, (k,), generator=g)], 1)
        for (n, (o, i, _)), k in zip(shapes.items(), (4, 7, 3, 5, 0), strict=True)
    }
    reference = reg_penalty(pairs, keys)
    grads = torch.autograd.grad(reference, [t for pair in pairs.values() for t in pair], allow_unused=True)
    fast = KeyPenalty(pairs, keys)(pairs)
    fast_grads = torch.autograd.grad(fast, [t for pair in pairs.values() for t in pair], allow_unused=True)
    assert torch.allclose(fast, reference, atol=1e-6)
    for x, y in zip(grads, fast_grads, strict=True):
        assert (x is None and y is None) or torch.allclose(
            x if x is not None else torch.zeros_like(y),
            y if y is not None else torch.zeros_like(x),
            atol=1e-6,
        )
    assert KeyPenalty(pairs, {"q": torch.empty(0, 2, dtype=torch.long)})(pairs).item() == 0


def test_update_key_set_true_set_or_concatenation():
    old = {"m": torch.tensor([[0, 1], [2, 2]])}
    new = {"m": torch.tensor([[2, 2], [1, 0]]), "n": torch.tensor([[0, 0]])}
    union = update_key_set(old, new)
    assert union["m"].tolist() == [[0, 1], [1, 0], [2, 2]] and union["n"].tolist() == [[0, 0]]
    assert update_key_set(old, new, unique=False)["m"].tolist() == [[0, 1], [2, 2], [2, 2], [1, 0]]


def lora_model(seed=0):
    data, tok, model = demo_world()
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for _, (b, _a) in lora_pairs(peft_model).items():
        torch.nn.init.normal_(b, std=0.02)  # a non-zero first ΔW, as after a task
    return data, tok, peft_model


def make_trainer(tmp_path, model, tok, data, key_set=None, **kw):
    args = RegLoRAConfig(
        output_dir=str(tmp_path),
        max_steps=kw.pop("max_steps", 3),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to=[],
        save_strategy=kw.pop("save_strategy", "no"),
        disable_tqdm=True,
        seed=0,
        **kw,
    )
    rows = tokenize_qa_dataset(data["retain"], tok, 64)
    return RegLoRATrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=QACollator(tok.pad_token_id),
        key_set=key_set,
    )


def test_identified_key_elements_follow_the_lora_update():
    _, _, model = lora_model()
    keys = identify_key_elements(model, ratio=2.0)
    pairs = lora_pairs(model)
    assert set(keys) == set(pairs) and len(keys) == 4  # 2 layers × (q, v)
    for name, (b, a) in pairs.items():
        delta = (b @ a).detach()
        k = int(0.02 * delta.numel())
        assert len(keys[name]) == k
        assert torch.equal(keys[name], key_elements(delta, 2.0))


def test_trainer_freezes_base_weights_logs_terms_and_saves_the_key_set(tmp_path):
    data, tok, model = lora_model()
    keys = identify_key_elements(model, 2.0)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    trainer = make_trainer(tmp_path, model, tok, data, key_set=keys, logging_steps=1)
    trainer.train()
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if "lora_" not in n)
    logged = [h for h in trainer.state.log_history if "reg" in h]
    assert logged and all(h["reg"] > 0 and "ce" in h for h in logged)
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = load_key_set(tmp_path / "saved" / KEY_SET_FILE, module_shapes(model))
    assert all(torch.equal(reloaded[n], keys[n]) for n in keys)
    assert reg_penalty(lora_pairs(model), reloaded).item() == reg_penalty(lora_pairs(model), keys).item()
    nxt = trainer.next_key_set()
    assert all(len(nxt[n]) >= len(keys[n]) for n in keys)


def test_penalty_lowers_the_update_at_key_elements(tmp_path):
    results = {}
    for weight in (0.0, 2.5e3):
        data, tok, model = lora_model()
        keys = identify_key_elements(model, 2.0)
        for _, (b, _a) in lora_pairs(model).items():
            torch.nn.init.normal_(b, std=0.02)  # a fresh, different update for the next task
        make_trainer(
            tmp_path / str(weight), model, tok, data, key_set=keys, reg_weight=weight, max_steps=4
        ).train()
        results[weight] = reg_penalty(lora_pairs(model), keys).item()
    assert results[2.5e3] < results[0.0]


def test_resume_equals_uninterrupted(tmp_path):
    finals = []
    for resume in (False, True):
        data, tok, model = lora_model()
        keys = identify_key_elements(model, 2.0)
        out = tmp_path / ("resumed" if resume else "straight")
        trainer = make_trainer(
            out, model, tok, data, key_set=keys, max_steps=4, save_strategy="steps", save_steps=2
        )
        if resume:
            trainer.train()
            data, tok, model = lora_model()
            trainer = make_trainer(
                out, model, tok, data, key_set=None, max_steps=4, save_strategy="steps", save_steps=2
            )
            trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
            assert all(torch.equal(trainer.key_set[n], keys[n]) for n in keys)  # reloaded from the checkpoint
        else:
            trainer.train()
        finals.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n})
    assert all(torch.allclose(finals[0][n], finals[1][n], atol=1e-6) for n in finals[0])


def test_bad_inputs(tmp_path):
    for kwargs, message in (
        ({"key_ratio": 0.0}, r"\(0, 100\]"),
        ({"key_ratio": 101}, r"\(0, 100\]"),
        ({"reg_weight": -1.0}, "reg_weight"),
    ):
        with pytest.raises(ValueError, match=message):
            RegLoRAConfig(output_dir=str(tmp_path), **kwargs)
    data, tok, plain = demo_world()
    with pytest.raises(ValueError, match="no LoRA layers"):
        make_trainer(tmp_path, plain, tok, data)
    _, _, model = lora_model()
    shapes = module_shapes(model)
    keys = identify_key_elements(model, 2.0)
    save_key_set(tmp_path / "k.safetensors", keys, shapes)
    other = {n: [s[0] + 1, s[1]] for n, s in shapes.items()}
    with pytest.raises(ValueError, match="another model or module list"):
        load_key_set(tmp_path / "k.safetensors", other)
    with pytest.raises(ValueError, match="another model or module list"):
        load_key_set(tmp_path / "k.safetensors", dict(list(shapes.items())[:2]))


def test_config_parses_with_hf_argument_parser(tmp_path):
    (config,) = HfArgumentParser(RegLoRAConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--key_ratio", "5", "--reg_weight", "100", "--unique_keys", "false"]
    )
    assert config.key_ratio == 5 and config.reg_weight == 100 and config.unique_keys is False


def test_task_sequence_trains_merges_and_scores_every_task(tmp_path):
    from hf_unlearn.trainers.reglora import run_task_sequence

    data, tok, model = demo_world()
    rows = tokenize_qa_dataset(data["retain"], tok, 64)
    tasks = [("first", rows.select(range(8))), ("second", rows.select(range(8, 16)))]
    calls = []

    def evaluate(m, name):
        calls.append(name)
        return 0.5

    def make_args(t, name):
        return RegLoRAConfig(
            output_dir=str(tmp_path / name), max_steps=2, per_device_train_batch_size=4, report_to=[],
            save_strategy="no", disable_tqdm=True, key_ratio=5.0,
        )  # fmt: skip

    out = run_task_sequence(
        model, tasks, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]), make_args, evaluate,
        data_collator=QACollator(tok.pad_token_id),
    )  # fmt: skip
    assert out["accuracy"] == [[0.5], [0.5, 0.5]] and calls == ["first", "first", "second"]
    assert out["metrics"] == {"MFN": 0.5, "MAA": 0.5, "BWT": 0.0}
    assert not any("lora_" in n for n, _ in out["model"].named_parameters())  # merged
    assert out["key_elements"][1] >= out["key_elements"][0] > 0
    card = (tmp_path / "second" / "README.md").read_text()
    assert (
        "Tasks trained before this one, in order: `first`" in card
        and "Key elements held from earlier" in card
    )
    assert "machine unlearning" not in card and "arxiv.org/abs/2505.02486" in card
    first = (tmp_path / "first" / "README.md").read_text()
    assert "none (this is the first task)" in first and "Key elements held from earlier tasks: 0" in first
    assert (tmp_path / "second" / KEY_SET_FILE).is_file()
