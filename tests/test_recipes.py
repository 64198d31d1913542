"""The default recipes reproduce the reference code's arithmetic.

- SalUn (``Classification/unlearn/impl.py`` + ``RL.py``): ``torch.optim.SGD(model.parameters(), lr,
  momentum, weight_decay)`` on every parameter, constant lr, no clipping, and per epoch a forget pass
  (random labels) then a pass over the whole retain set; causal LMs keep the TOFU/NPO Trainer recipe.
- IAU's gradient restriction (``train_model.py``): ``optim.Adam(model.parameters(), lr=1e-3)``, batch 64,
  constant lr, no clipping.
- SSD and IAU's one-shot edit take no optimizer step: no Trainer optimisation setting changes them.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from classif_utils import blobs, tiny_resnet
from test_resume import Crash, CrashAfter
from utils import demo_world

from hf_unlearn.trainers.iau import (
    GradientRestrictionArgs,
    GradientRestrictionTrainer,
    IAUConfig,
    IAUTrainer,
    gradient_restricted_loss,
)
from hf_unlearn.trainers.salun import FullPassSteps, SalUnConfig, SalUnTrainer
from hf_unlearn.trainers.ssd import SSDConfig, SSDTrainer

QUIET = dict(report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", logging_steps=1)
REFERENCE_SGD = dict(optim="sgd", optim_args="momentum=0.9", weight_decay=5e-2)  # wd large enough to show


def _two_class_split():
    """Forget: 4 images of class 0, retain: 6 of class 1. With 2 classes the random label y' ≠ y is 1 − y."""
    ds = blobs(20, num_labels=2)
    return ds.filter(lambda r: r["labels"] == 0).select(range(4)), ds.filter(
        lambda r: r["labels"] == 1
    ).select(range(6))


# ------------------------------------------------------------------------------------------ SalUn
def test_salun_default_recipe_equals_the_reference_sgd_loop(tmp_path):
    """4 steps (2 epochs × forget pass + retain pass, one batch each) with SalUnConfig's defaults equal
    the reference loop written with torch: SGD with momentum and weight decay on *all* parameters (biases
    too), constant lr, no clipping, gradient masking, restoring the non-salient weights and zeroing their
    momentum after each step."""
    forget, retain = _two_class_split()
    model = tiny_resnet(num_labels=2)
    ref = copy.deepcopy(model).train()
    lr = 0.5
    args = SalUnConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_train_epochs=2,
        learning_rate=lr,
        **QUIET,
        **REFERENCE_SGD,
    )
    trainer = SalUnTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain)
    assert (trainer.args.max_grad_norm, trainer.args.decay_all_parameters) == (0.0, True)
    assert trainer.args.retain_schedule == "full_pass" and trainer.args.lr_scheduler_type == "constant"
    trainer.train()
    assert trainer.state.global_step == 4
    mask = trainer.mask

    pixels = {"forget": torch.tensor(forget["pixel_values"]), "retain": torch.tensor(retain["pixel_values"])}
    labels = {"forget": torch.ones(len(forget), dtype=torch.long), "retain": torch.tensor(retain["labels"])}
    order = FullPassSteps({"forget": forget, "retain": retain}, batch_size=8, seed=args.seed)
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=0.9, weight_decay=REFERENCE_SGD["weight_decay"])
    theta0 = {n: p.detach().clone() for n, p in ref.named_parameters()}
    grad_norms = []
    for epoch in range(2):
        order.set_epoch(epoch)  # the rows of each step, in the trainer's shuffled order
        assert [name for name, _ in order.items] == ["forget", "retain"]  # forget pass, then retain pass
        for name, rows in order.items:
            x, y = pixels[name][rows], labels[name][rows]
            loss = F.cross_entropy(ref(pixel_values=x).logits, y)
            opt.zero_grad()
            loss.backward()
            grad_norms.append(
                torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ref.parameters()]))
            )
            with torch.no_grad():
                for n, p in ref.named_parameters():
                    p.grad *= mask[n]
            opt.step()
            with torch.no_grad():  # RL.py::_restore_masked_params
                for n, p in ref.named_parameters():
                    p.copy_(torch.where(mask[n], p, theta0[n]))
                    opt.state[p]["momentum_buffer"].mul_(mask[n])
    assert max(grad_norms) > 1.0  # Trainer's default clipping at 1.0 would have changed these steps
    for (n, a), b in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), n
    for (n, a), b in zip(model.named_buffers(), ref.buffers(), strict=True):  # BatchNorm running statistics
        assert torch.allclose(a.double(), b.double(), atol=1e-6), n


def test_decay_all_parameters_puts_biases_in_the_decay_group(tmp_path):
    forget, retain = _two_class_split()

    def decay_of(**kw):
        args = SalUnConfig(output_dir=str(tmp_path), max_steps=1, **QUIET, **REFERENCE_SGD, **kw)
        trainer = SalUnTrainer(
            model=tiny_resnet(num_labels=2), args=args, forget_dataset=forget, retain_dataset=retain
        )
        trainer.train()
        group_of = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
        return {n: group_of[id(p)] for n, p in trainer.model.named_parameters()}

    wd = REFERENCE_SGD["weight_decay"]
    default = decay_of()  # classifier: every parameter decayed, as torch SGD on model.parameters()
    assert set(default.values()) == {wd} and any(n.endswith("bias") for n in default)
    trainer_style = decay_of(decay_all_parameters=False)  # Trainer's convention: no biases
    assert all(v == (0.0 if n.endswith("bias") else wd) for n, v in trainer_style.items())


def test_task_defaults_and_explicit_values(tmp_path):
    forget, retain = _two_class_split()
    given = SalUnConfig(output_dir=str(tmp_path), **QUIET)
    classifier = SalUnTrainer(model=tiny_resnet(num_labels=2), args=given, forget_dataset=forget)
    assert (classifier.args.max_grad_norm, classifier.args.decay_all_parameters) == (0.0, True)
    assert classifier.args.retain_schedule == "full_pass"
    # the defaults are filled in on the trainer's copy: the caller's config still means "by task"
    assert (given.max_grad_norm, given.decay_all_parameters, given.retain_schedule) == (None, None, "auto")
    data, tok, model = demo_world()
    lm = SalUnTrainer(
        model=model,
        args=given,
        forget_dataset=data["forget"],
        retain_dataset=data["retain"],
        processing_class=tok,
    )  # no SalUn LLM reference: the TOFU/NPO Trainer recipe
    assert (lm.args.max_grad_norm, lm.args.decay_all_parameters, lm.args.retain_schedule) == (
        1.0,
        False,
        "paired",
    )
    assert lm.args.lr_scheduler_type == "constant"
    explicit = SalUnConfig(
        output_dir=str(tmp_path),
        max_grad_norm=2.0,
        decay_all_parameters=False,
        retain_schedule="paired",
        lr_scheduler_type="linear",
        **QUIET,
    )
    t = SalUnTrainer(model=tiny_resnet(num_labels=2), args=explicit, forget_dataset=forget)
    assert (t.args.max_grad_norm, t.args.decay_all_parameters, t.args.retain_schedule) == (
        2.0,
        False,
        "paired",
    )
    assert t.args.lr_scheduler_type == "linear"
    for bad, match in (
        (dict(retain_schedule="mixed"), "retain_schedule"),
        (dict(max_grad_norm=-1.0), "max_grad_norm"),
    ):
        with pytest.raises(ValueError, match=match):
            SalUnConfig(output_dir=str(tmp_path), **bad, **QUIET)


def test_salun_config_parses_from_the_command_line(tmp_path):
    from transformers import HfArgumentParser

    (a,) = HfArgumentParser(SalUnConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--retain_schedule", "paired", "--decay_all_parameters", "false"]
    )
    assert (a.retain_schedule, a.decay_all_parameters, a.max_grad_norm) == ("paired", False, None)
    (a,) = HfArgumentParser(SalUnConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--max_grad_norm", "1.0"]
    )
    assert a.max_grad_norm == 1.0 and a.lr_scheduler_type == "constant"


def test_full_pass_steps_are_homogeneous_and_cover_each_set_once_per_epoch():
    forget, retain = _two_class_split()  # 4 and 6 rows
    steps = FullPassSteps({"forget": forget, "retain": retain}, batch_size=4)
    assert len(steps) == 1 + 2  # ⌈4/4⌉ forget steps, then ⌈6/4⌉ retain steps
    kinds = [next(iter(steps[i])) for i in range(len(steps))]
    assert kinds == ["forget", "retain", "retain"]
    first = [steps.items[i][1].tolist() for i in range(len(steps))]
    assert sorted(sum(first[1:], [])) == list(range(6)) and sorted(first[0]) == list(range(4))
    steps.set_epoch(1)
    assert [steps.items[i][1].tolist() for i in range(len(steps))] != first  # reshuffled each epoch
    steps.set_epoch(0)
    assert [steps.items[i][1].tolist() for i in range(len(steps))] == first  # reproducible
    # 2 processes × 2 accumulation steps: each step of ≤ 16 rows is split into 4 items of one kind;
    # a last step with fewer rows than items is topped up from the start of its pass
    split = FullPassSteps({"forget": forget.select(range(3)), "retain": retain}, batch_size=4, parts=4)
    assert len(split) == 8 and len(split) % 4 == 0
    forget_parts = [split.items[i][1] for i in range(4)]
    assert all(split.items[i][0] == "forget" for i in range(4)) and all(len(p) == 1 for p in forget_parts)
    assert set(torch.tensor([int(p[0]) for p in forget_parts]).tolist()) == {0, 1, 2}
    assert sorted(sum((split.items[i][1].tolist() for i in range(4, 8)), [])) == list(range(6))


def test_full_pass_trainer_batches(tmp_path):
    forget, retain = _two_class_split()
    args = SalUnConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_train_epochs=1, **QUIET)
    trainer = SalUnTrainer(
        model=tiny_resnet(num_labels=2), args=args, forget_dataset=forget, retain_dataset=retain
    )
    batches = list(trainer.get_train_dataloader())
    assert [list(b) for b in batches] == [["forget"]] * 2 + [["retain"]] * 3
    assert all(b["retain"]["labels"].eq(1).all() for b in batches[2:])
    trainer.train()
    assert trainer.state.global_step == 5  # an epoch is a forget pass and a full retain pass
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert ["forget_ce_random" in h for h in logged] == [True, True, False, False, False]
    assert ["retain_loss" in h for h in logged] == [False, False, True, True, True]


def _full_pass_run(out, callbacks=(), resume=None):
    ds = blobs(40)
    forget = ds.filter(lambda r: r["labels"] == 0).select(range(6))
    retain = ds.filter(lambda r: r["labels"] != 0).select(range(10))
    model = tiny_resnet()
    args = SalUnConfig(
        output_dir=str(out),
        retain_schedule="full_pass",
        per_device_train_batch_size=2,
        max_steps=20,
        save_steps=5,
        save_strategy="steps",
        learning_rate=0.05,
        seed=3,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        **REFERENCE_SGD,
    )
    trainer = SalUnTrainer(
        model=model, args=args, forget_dataset=forget, retain_dataset=retain, callbacks=list(callbacks)
    )
    try:
        trainer.train(resume_from_checkpoint=resume)
    except Crash:
        pass
    return model


def test_full_pass_resume_in_a_later_epoch_equals_the_uninterrupted_run(tmp_path):
    """3 forget + 5 retain steps an epoch; crash after step 13, resume from checkpoint-10 (epoch 2, in its
    forget pass): the reshuffled order of epoch 2 and the random labels must be those of the straight run."""
    full = _full_pass_run(tmp_path / "full")
    _full_pass_run(tmp_path / "crashed", [CrashAfter(13)])
    assert (tmp_path / "crashed" / "checkpoint-10").is_dir()
    assert not (tmp_path / "crashed" / "checkpoint-15").exists()
    resumed = _full_pass_run(tmp_path / "crashed", resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())
    assert worst == 0.0, f"resumed run differs from the uninterrupted one by {worst}"


# ------------------------------------------------------------------------------ IAU / SSD recipes
def test_gradient_restriction_defaults_equal_the_reference_adam_loop(tmp_path):
    """3 epochs of one batch with GradientRestrictionArgs' defaults = torch Adam(lr=1e-3) on
    loss + α·Σ‖∇loss‖, constant lr, no clipping (the reference ``train_model.py``)."""
    ds = blobs(12)
    model = tiny_resnet()
    ref = copy.deepcopy(model).train()
    args = GradientRestrictionArgs(output_dir=str(tmp_path), num_train_epochs=3, seed=3, **QUIET)
    assert (args.learning_rate, args.per_device_train_batch_size, args.max_grad_norm) == (1e-3, 64, 0.0)
    trainer = GradientRestrictionTrainer(model=model, args=args, train_dataset=ds)
    trainer.train()
    assert trainer.state.global_step == 3
    t = ds.with_format("torch")[:]
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    norms = []
    for _ in range(3):
        loss = ref(pixel_values=t["pixel_values"], labels=t["labels"]).loss
        opt.zero_grad()
        gradient_restricted_loss(loss, ref.parameters(), 0.005).backward()
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ref.parameters()])).item())
        opt.step()
    assert max(norms) > 1.0  # clipping at 1.0 would have rescaled these gradients
    for (n, a), b in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), n


OPTIMISATION_SETTINGS = [
    {},
    dict(
        optim="sgd",
        learning_rate=1e-1,
        weight_decay=0.5,
        max_grad_norm=1e-3,
        lr_scheduler_type="linear",
        warmup_steps=3,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=4,
    ),
]


@pytest.mark.parametrize("settings", OPTIMISATION_SETTINGS, ids=["defaults", "other-optimisation-settings"])
def test_ssd_edit_ignores_the_trainer_optimisation_settings(tmp_path, settings):
    """SSD takes no optimizer step: optimizer, lr, schedule, clipping, weight decay and the training batch
    size do not enter its edit (its batch size is ``importance_batch_size``)."""
    ds = blobs(30)
    forget, retain = ds.filter(lambda r: r["labels"] == 0), ds.filter(lambda r: r["labels"] != 0)
    models = []
    for kw in (settings, {}):
        model = tiny_resnet()
        args = SSDConfig(
            output_dir=str(tmp_path / str(len(models))), save_full_importance=False, **QUIET, **kw
        )
        SSDTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain).train()
        models.append(model)
    changed = [
        n
        for n, p in models[0].named_parameters()
        if not torch.equal(p, dict(tiny_resnet().named_parameters())[n])
    ]
    assert changed
    assert all(torch.equal(p, q) for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True))


def test_iau_edit_ignores_the_trainer_loop_settings(tmp_path):
    """IAU's edit is num_steps full-gradient steps: the loop's schedule, clipping and training batch size do
    not enter it (its η is learning_rate, its Adam the adam_* fields)."""
    ds = blobs(30)
    forget, retain = ds.filter(lambda r: r["labels"] == 0), ds.filter(lambda r: r["labels"] != 0)
    loop = dict(max_grad_norm=1e-3, lr_scheduler_type="linear", warmup_steps=5, per_device_train_batch_size=1)
    models = []
    for kw in (loop, {}):
        model = tiny_resnet()
        args = IAUConfig(output_dir=str(tmp_path / str(len(models))), num_steps=2, **QUIET, **kw)
        IAUTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain).train()
        models.append(model)
    assert all(torch.equal(p, q) for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True))
