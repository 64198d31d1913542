import copy
import json
import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from classif_utils import blobs, tiny_resnet
from safetensors.torch import load_file
from transformers import HfArgumentParser, Trainer, TrainingArguments
from utils import demo_world, run_torchrun

from hf_unlearn.data.qa import QACollator, tokenize_qa_dataset
from hf_unlearn.trainers.base import NonFiniteLossError
from hf_unlearn.trainers.iau import (
    GradientRestrictionArgs,
    GradientRestrictionTrainer,
    IAUConfig,
    IAUTrainer,
    adam_first_step,
    adam_step,
    gradient_restricted_loss,
    iau_direction,
    sgd_step,
)

COMMON = dict(report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no")


def _split(n=30):
    ds = blobs(n)
    return ds.filter(lambda r: r["labels"] == 0), ds.filter(lambda r: r["labels"] != 0)


def _iau(tmp_path, model=None, retain=True, **kw):
    forget, retain_ds = _split()
    args = IAUConfig(output_dir=str(tmp_path), **{**COMMON, **kw})
    return IAUTrainer(
        model=model if model is not None else tiny_resnet(),
        args=args,
        forget_dataset=forget,
        retain_dataset=retain_ds if retain else None,
    )


def _full_batch_grads(model, ds):
    """∇ of the mean cross-entropy over the whole dataset in one batch (independent of the trainer)."""
    ds = ds.with_format("torch")[:]
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(pixel_values=ds["pixel_values"]).logits, ds["labels"]).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ------------------------------------------------------------------------------------------ maths
def test_step_rules_match_the_formulas_and_torch_adam():
    d = torch.tensor([0.5, -2e-3, 0.0, 3.0])
    assert torch.equal(iau_direction(torch.tensor([1.0]), torch.tensor([0.25]), 2.0), torch.tensor([0.5]))
    assert torch.equal(iau_direction(torch.tensor([1.0]), torch.tensor([0.25]), 0.0), torch.tensor([1.0]))
    assert torch.allclose(sgd_step(d, 0.1), 0.1 * d)
    first = adam_first_step(d, 1e-3, 1e-8)
    assert torch.allclose(first, 1e-3 * torch.tensor([1.0, -1.0, 0.0, 1.0]), atol=1e-8)
    m, v = torch.zeros(4), torch.zeros(4)
    assert torch.allclose(adam_step(d, m, v, 1, 1e-3), first, rtol=1e-5, atol=1e-12)
    # a fresh torch Adam minimising −(direction) takes the same steps, also with its state carried on
    m, v = torch.zeros(4), torch.zeros(4)
    theta = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.Adam([theta], lr=1e-3, betas=(0.8, 0.99), eps=1e-6)
    ours = torch.zeros(4)
    for step, dk in enumerate([d, d * -0.5 + 0.1, d**2], start=1):
        theta.grad = -dk
        opt.step()
        ours += adam_step(dk, m, v, step, 1e-3, (0.8, 0.99), 1e-6)
        assert torch.allclose(theta.detach(), ours, rtol=1e-5, atol=1e-10), step


# ------------------------------------------------------------------------------- the IAU update
@pytest.mark.parametrize("retain_weight", [1.0, 0.5, 0.0])
def test_sgd_update_equals_hand_computed_full_batch_gradients(tmp_path, retain_weight):
    model = tiny_resnet()
    ref = copy.deepcopy(model)
    forget, retain = _split()
    g_f, g_r = _full_batch_grads(ref, forget), _full_batch_grads(ref, retain)
    before = _weights(model)
    trainer = _iau(tmp_path, model, step_rule="sgd", learning_rate=0.5, retain_weight=retain_weight)
    out = trainer.train()
    for n, p in model.named_parameters():
        want = before[n] + 0.5 * (g_f[n] - retain_weight * g_r[n])
        assert torch.allclose(p, want, rtol=1e-4, atol=1e-6), n
    m = out.metrics
    norm_f = math.sqrt(sum(float(g.pow(2).sum()) for g in g_f.values()))
    assert m["forget_grad_norm"] == pytest.approx(norm_f, rel=1e-4)
    assert ("retain_grad_norm" in m) == (retain_weight > 0)
    assert m["retain_loss_before"] > 0 and m["forget_loss_after"] > m["forget_loss_before"]
    assert out.global_step == 1 and not model.training  # tiny_resnet() is in eval mode: kept


def test_adam_first_step_matches_formula_and_a_fresh_torch_adam(tmp_path):
    model = tiny_resnet()
    ref = copy.deepcopy(model)
    forget, retain = _split()
    g_f, g_r = _full_batch_grads(ref, forget), _full_batch_grads(ref, retain)
    before = _weights(model)
    model.train()
    _iau(tmp_path, model, learning_rate=1e-2).train()
    assert model.training  # the original mode is restored
    # reference behaviour: fresh Adam, (L_r − L_f) on the full sets, one step
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    f, r = forget.with_format("torch")[:], retain.with_format("torch")[:]
    loss = F.cross_entropy(ref(pixel_values=r["pixel_values"]).logits, r["labels"])
    loss = loss - F.cross_entropy(ref(pixel_values=f["pixel_values"]).logits, f["labels"])
    loss.backward()
    opt.step()
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        d = g_f[n] - g_r[n]
        assert torch.allclose(p, before[n] + 1e-2 * d / (d.abs() + 1e-8), rtol=1e-5, atol=1e-7), n
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-7), n


def test_two_adam_steps_recompute_gradients_and_carry_the_moments(tmp_path):
    model = tiny_resnet()
    ref = copy.deepcopy(model)
    forget, retain = _split()
    out = _iau(tmp_path, model, learning_rate=1e-2, num_steps=2).train()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    f, r = forget.with_format("torch")[:], retain.with_format("torch")[:]
    for _ in range(2):
        opt.zero_grad()
        loss = F.cross_entropy(ref(pixel_values=r["pixel_values"]).logits, r["labels"])
        (loss - F.cross_entropy(ref(pixel_values=f["pixel_values"]).logits, f["labels"])).backward()
        opt.step()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)
    assert out.global_step == 2 and out.metrics["num_steps"] == 2


def test_update_does_not_depend_on_the_gradient_batch_size(tmp_path):
    results = []
    for b in (1, 7, 30):
        model = tiny_resnet()
        _iau(tmp_path / str(b), model, step_rule="sgd", learning_rate=1.0, gradient_batch_size=b).train()
        results.append(_weights(model))
    for other in results[1:]:
        for n in results[0]:
            assert torch.allclose(results[0][n], other[n], rtol=1e-4, atol=1e-6), n


def test_iau_on_a_causal_lm_raises_the_forget_nll(tmp_path):
    data, tok, model = demo_world()
    args = IAUConfig(output_dir=str(tmp_path), gradient_batch_size=4, **COMMON)
    trainer = IAUTrainer(
        model=model,
        args=args,
        forget_dataset=data["forget"],
        retain_dataset=data["retain"],
        processing_class=tok,
    )
    before = trainer.mean_loss(trainer.train_dataset.views["forget"])
    m = trainer.train().metrics
    assert m["forget_loss_before"] == pytest.approx(before, rel=1e-4)
    assert m["forget_loss_after"] > before
    assert (
        m["update_norm"] > 0 and trainer.state.log_history[-1]["forget_loss_after"] == m["forget_loss_after"]
    )


def test_pure_ascent_needs_no_retain_set_and_card_notes(tmp_path):
    model = tiny_resnet()
    trainer = _iau(tmp_path, model, retain=False, retain_weight=0.0, num_steps=2)
    assert "has not been applied yet" in trainer.card_notes()
    m = trainer.train().metrics
    assert "retain_loss_before" not in m and m["forget_loss_after"] > m["forget_loss_before"]
    assert [h["step"] for h in trainer.state.log_history if "step_forget_loss" in h] == [1, 2]
    trainer.save_model()
    card = (tmp_path / "README.md").read_text()
    assert "### IAU update" in card and "pure gradient ascent" in card and "2 steps" in card
    assert "forget mean loss:" in card and "2507.23257" in card


def test_card_renders_iau_notes(tmp_path):
    trainer = _iau(tmp_path, step_rule="sgd", learning_rate=0.25, gradient_batch_size=4)
    trainer.train()
    trainer.save_model()
    card = (tmp_path / "README.md").read_text()
    for text in ("### IAU update", "d = ∇L_forget − ∇L_retain", "plain gradient step", "η = 0.25; 1 step\n"):
        assert text in card, text
    assert "‖∇L_retain‖" in card and "4 rows at a time" in card and "retain mean loss:" in card


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(learning_rate=float("inf")), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(num_steps=0), "num_steps"),
        (dict(gradient_batch_size=0), "gradient_batch_size"),
        (dict(step_rule="newton"), "step_rule"),
        (dict(weight_decay=0.1), "weight_decay"),
        (dict(retain_weight=-1.0), "retain_weight"),
    ],
)
def test_iau_config_rejects_impossible_values(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        IAUConfig(output_dir=str(tmp_path), **COMMON, **kw)


def test_iau_config_parses_from_the_command_line(tmp_path):
    (cfg,) = HfArgumentParser(IAUConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--step_rule", "sgd", "--num_steps", "3", "--learning_rate", "0.1"]
    )
    assert (cfg.step_rule, cfg.num_steps, cfg.learning_rate, cfg.gradient_batch_size) == ("sgd", 3, 0.1, 64)
    assert IAUConfig(output_dir=str(tmp_path), **COMMON).learning_rate == 1e-3


def test_iau_bad_data(tmp_path):
    forget, retain = _split()
    args = IAUConfig(output_dir=str(tmp_path), **COMMON)
    with pytest.raises(ValueError, match="needs a retain_dataset"):
        IAUTrainer(model=tiny_resnet(), args=args, forget_dataset=forget)
    with pytest.raises(ValueError, match="labels \\[5\\] that the model does not have"):
        IAUTrainer(
            model=tiny_resnet(),
            args=args,
            forget_dataset=forget.map(lambda r: {"labels": 5}),
            retain_dataset=retain,
        )
    with pytest.raises(ValueError, match="forget_dataset is empty"):
        IAUTrainer(model=tiny_resnet(), args=args, forget_dataset=forget.select([]), retain_dataset=retain)


@pytest.mark.parametrize("where", ["forget", "retain"])
def test_non_finite_data_is_refused_without_touching_the_model(tmp_path, where):
    forget, retain = _split()

    def poison(ds):
        return ds.map(
            lambda r, i: {"pixel_values": [[[math.nan] * 8] * 8] if i == 1 else r["pixel_values"]},
            with_indices=True,
        )

    forget, retain = (poison(forget), retain) if where == "forget" else (forget, poison(retain))
    model = tiny_resnet()
    before = _weights(model)
    args = IAUConfig(output_dir=str(tmp_path), **COMMON)
    trainer = IAUTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain)
    with pytest.raises(NonFiniteLossError, match=f"{where} loss is nan"):
        trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_overflowing_update_is_refused_without_touching_the_model(tmp_path):
    model = tiny_resnet()
    before = _weights(model)
    trainer = _iau(tmp_path, model, step_rule="sgd", learning_rate=1e39)  # η·d overflows float32
    with pytest.raises(NonFiniteLossError, match="update would make"):
        trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not model.training


@pytest.mark.parametrize("failure", ["nan gradient in step 2", "error after the update"])
def test_a_failure_after_the_first_step_leaves_the_model_bit_identical(tmp_path, failure, monkeypatch):
    model = tiny_resnet()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    trainer = _iau(tmp_path / "out", model, learning_rate=1e-2, num_steps=2)
    calls = []
    real_gradient, real_loss = trainer.mean_gradient, trainer.mean_loss

    def gradient(dataset, params):  # calls: step 1 forget, step 1 retain, step 2 forget (poisoned)
        calls.append(dataset)
        grads, loss = real_gradient(dataset, params)
        if failure.startswith("nan") and len(calls) == 3:
            grads["classifier.1.weight"][0, 0] = math.nan
        return grads, loss

    def loss_after(dataset):
        if failure.startswith("error"):
            raise RuntimeError("out of memory")
        return real_loss(dataset)

    monkeypatch.setattr(trainer, "mean_gradient", gradient)
    monkeypatch.setattr(trainer, "mean_loss", loss_after)
    match = (
        "step 2: non-finite ∇L_forget.*model is unchanged" if failure.startswith("nan") else "out of memory"
    )
    with pytest.raises((NonFiniteLossError, RuntimeError), match=match):
        trainer.train()
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


# -------------------------------------------------------------------------- gradient restriction
def test_gradient_restricted_loss_by_hand():
    # loss = (w·x − y)², ∂loss/∂w = 2(wx − y)x; w = 2, x = 3, y = 1 → r = 5, loss = 25, g = 30
    w = torch.tensor(2.0, requires_grad=True)
    x, y, alpha = 3.0, 1.0, 0.1
    out = gradient_restricted_loss((w * x - y) ** 2, [w], alpha)
    assert out.item() == pytest.approx(25 + 0.1 * 30)
    # d/dw [r² + α·|2rx|] = 2rx + α·2x²·sign(r) = 30 + 0.1·18 (double backprop)
    (grad,) = torch.autograd.grad(out, w)
    assert grad.item() == pytest.approx(30 + 1.8)
    # two tensors: the penalty is the SUM of per-tensor norms |g1| + |g2|, not the global norm
    w1, w2 = torch.tensor(1.0, requires_grad=True), torch.tensor(-1.0, requires_grad=True)
    loss = (w1 * 3.0 + w2 * 4.0 - 2.0) ** 2  # r = −3 → g1 = 2r·3 = −18, g2 = 2r·4 = −24
    assert gradient_restricted_loss(loss, [w1, w2], 1.0).item() == pytest.approx(9 + 18 + 24)
    wv = torch.tensor([1.0, -1.0], requires_grad=True)  # one tensor: its L2 norm √(18² + 24²) = 30
    loss = ((wv * torch.tensor([3.0, 4.0])).sum() - 2.0) ** 2
    assert gradient_restricted_loss(loss, [wv], 1.0).item() == pytest.approx(9 + 30)
    assert gradient_restricted_loss(loss, [wv], 0.0) is loss
    frozen = torch.tensor(1.0)  # requires_grad=False: skipped
    assert gradient_restricted_loss(loss, [wv, frozen], 1.0).item() == pytest.approx(39)


def _gr_args(tmp_path, **kw):
    base = dict(per_device_train_batch_size=8, seed=3, logging_steps=1, **COMMON)
    return GradientRestrictionArgs(output_dir=str(tmp_path), **{**base, **kw})


def test_gradient_restriction_alpha_zero_is_a_plain_trainer(tmp_path):
    ds = blobs(24)
    a, b = tiny_resnet(), tiny_resnet()
    # GradientRestrictionArgs' recipe defaults (constant lr, no clipping), given to the plain Trainer too
    kw = dict(max_steps=3, learning_rate=1e-2, lr_scheduler_type="constant", max_grad_norm=0.0)
    GradientRestrictionTrainer(
        model=a, args=_gr_args(tmp_path / "a", gradient_restriction_alpha=0.0, **kw), train_dataset=ds
    ).train()
    plain = TrainingArguments(
        output_dir=str(tmp_path / "b"), per_device_train_batch_size=8, seed=3, logging_steps=1, **COMMON, **kw
    )
    Trainer(model=b, args=plain, train_dataset=ds).train()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_gradient_restriction_step_equals_the_double_backprop_step(tmp_path):
    ds = blobs(12)
    model = tiny_resnet()
    ref = copy.deepcopy(model).train()
    args = _gr_args(
        tmp_path,
        per_device_train_batch_size=12,
        max_steps=1,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
    )
    trainer = GradientRestrictionTrainer(
        model=model, args=args, train_dataset=ds, gradient_restriction_alpha=0.5
    )
    assert trainer.gradient_restriction_alpha == 0.5  # the keyword wins over args (0.005)
    trainer.train()
    t = ds.with_format("torch")[:]
    loss = ref(pixel_values=t["pixel_values"], labels=t["labels"]).loss
    params = list(ref.parameters())
    grads = torch.autograd.grad(loss, params, create_graph=True)
    penalty = sum(g.norm() for g in grads)
    total_grads = torch.autograd.grad(loss + 0.5 * penalty, params)
    for p, q, g in zip(model.parameters(), params, total_grads, strict=True):
        assert torch.allclose(p, q - 0.1 * g, rtol=1e-4, atol=1e-6)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and logged[0]["gradient_norm_penalty"] == pytest.approx(penalty.item(), rel=1e-4)


def test_gradient_restriction_trains_and_logs(tmp_path):
    args = _gr_args(tmp_path, max_steps=12, learning_rate=1e-2)
    trainer = GradientRestrictionTrainer(model=tiny_resnet(), args=args, train_dataset=blobs(24))
    assert trainer.gradient_restriction_alpha == 0.005
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 12 and all(h["gradient_norm_penalty"] > 0 for h in logs)
    assert logs[-1]["loss"] < logs[0]["loss"]
    (parsed,) = HfArgumentParser(GradientRestrictionArgs).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--gradient_restriction_alpha", "0.01"]
    )
    assert parsed.gradient_restriction_alpha == 0.01
    with pytest.raises(ValueError, match="gradient_restriction_alpha"):
        GradientRestrictionArgs(output_dir=str(tmp_path), gradient_restriction_alpha=-1.0, **COMMON)
    with pytest.raises(ValueError, match="gradient_restriction_alpha"):
        GradientRestrictionTrainer(
            model=tiny_resnet(), args=args, train_dataset=blobs(6), gradient_restriction_alpha=math.inf
        )


def test_gradient_restriction_on_a_causal_lm_uses_eager_attention(tmp_path):
    data, tok, model = demo_world()
    model.set_attn_implementation("sdpa")  # the CPU SDPA kernel has no double backward
    ds = tokenize_qa_dataset(data["retain"].select(range(8)), tok, 64)
    args = _gr_args(tmp_path, max_steps=2, per_device_train_batch_size=4, remove_unused_columns=False)
    trainer = GradientRestrictionTrainer(
        model=model, args=args, train_dataset=ds, data_collator=QACollator(tok.pad_token_id)
    )
    assert model.config._attn_implementation == "eager"
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) and h["gradient_norm_penalty"] > 0 for h in logs)
    model.set_attn_implementation("sdpa")  # switched back behind the trainer's back: a clear error
    with pytest.raises(RuntimeError, match="needs double backward"):
        trainer.train()


# ------------------------------------------------------------------------------------------ torchrun
DIST_SCRIPT = '''"""IAU (sgd) and gradient-restricted training under torchrun; writes per-rank digests."""

import hashlib
import json
import sys

import datasets
import torch
from transformers import AutoModelForImageClassification

from hf_unlearn.trainers.iau import GradientRestrictionArgs, GradientRestrictionTrainer, IAUConfig, IAUTrainer

src, out = sys.argv[1], sys.argv[2]
common = dict(report_to=[], use_cpu=True, ddp_backend="gloo", disable_tqdm=True, save_strategy="no")
data = datasets.load_from_disk(f"{src}/data")
model = AutoModelForImageClassification.from_pretrained(src)
args = IAUConfig(output_dir=out, step_rule="sgd", learning_rate=0.5, gradient_batch_size=3, **common)
trainer = IAUTrainer(
    model=model,
    args=args,
    forget_dataset=data.filter(lambda r: r["labels"] == 0),
    retain_dataset=data.filter(lambda r: r["labels"] != 0),
)
trainer.train()
trainer.save_model()
gr_model = AutoModelForImageClassification.from_pretrained(src)
gr_args = GradientRestrictionArgs(
    output_dir=f"{out}/gr", max_steps=3, per_device_train_batch_size=4, logging_steps=1, **common
)
gr = GradientRestrictionTrainer(model=gr_model, args=gr_args, train_dataset=data)
gr.train()


def digest(m):
    return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()


report = {"iau": digest(model), "gr": digest(gr_model), "gr_log": gr.state.log_history}
with open(f"{out}/rank{args.process_index}.json", "w") as f:
    json.dump(report, f)
# leave together: a rank exiting while gloo still tears down the other aborts it ("terminate called")
torch.distributed.barrier()
torch.distributed.destroy_process_group()
'''


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.environ.get("VIRTUAL_ENV"), reason="no torchrun"
)
def test_two_processes_apply_the_single_process_update(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    tiny_resnet().save_pretrained(src)
    data = blobs(30)
    data.save_to_disk(str(src / "data"))
    (tmp_path / "dist_iau.py").write_text(DIST_SCRIPT)
    run_torchrun(tmp_path / "dist_iau.py", src, out)
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["iau"] == r1["iau"] and r0["gr"] == r1["gr"]  # every rank applied the same update
    assert all(h["gradient_norm_penalty"] > 0 for h in r0["gr_log"] if "loss" in h)
    # the same IAU step in this (single) process: batches 0, 2, ... and 1, 3, ... summed = all batches
    model = tiny_resnet()
    _iau(tmp_path / "single", model, step_rule="sgd", learning_rate=0.5, gradient_batch_size=3).train()
    two = load_file(str(out / "model.safetensors"))
    for n, p in model.named_parameters():
        assert torch.allclose(p, two[n], rtol=1e-5, atol=1e-6), n
