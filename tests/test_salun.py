import pytest
import torch
import torch.nn.functional as F
from classif_utils import blobs, tiny_resnet
from safetensors.torch import load_file, save_file
from test_trainers import mean_prob
from utils import demo_world

from hf_unlearn.importance.saliency import (
    SaliencyMask,
    accumulate_gradients,
    load_mask,
    saliency_mask,
    save_mask,
)
from hf_unlearn.trainers.salun import MASK_FILE, SalUnConfig, SalUnTrainer, random_labels

COMMON = dict(report_to=[], use_cpu=True, disable_tqdm=True, per_device_train_batch_size=4, logging_steps=1)
SGD = dict(optim="sgd", optim_args="momentum=0.9", weight_decay=5e-3, learning_rate=0.05)


def _data():
    ds = blobs(30)
    return ds.filter(lambda r: r["labels"] == 0), ds.filter(lambda r: r["labels"] != 0)


def _trainer(out, model=None, **kw):
    forget, retain = _data()
    args = SalUnConfig(output_dir=str(out), **{**COMMON, **SGD, "save_strategy": "no", "max_steps": 4, **kw})
    return SalUnTrainer(model=model or tiny_resnet(), args=args, forget_dataset=forget, retain_dataset=retain)


def test_mask_is_a_global_top_r_over_all_tensors():
    grads = {"a": torch.tensor([5.0, -1.0]), "b": torch.tensor([[-3.0, 4.0], [0.5, 0.0]])}
    mask = saliency_mask(grads, 0.5)  # k = int(6 * 0.5) = 3: |5|, |4|, |-3|
    assert mask["a"].tolist() == [True, False]
    assert mask["b"].tolist() == [[True, True], [False, False]]
    assert sum(int(m.sum()) for m in saliency_mask(grads, 1.0).values()) == 6
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="mask ratio"):
            saliency_mask(grads, bad)


def test_gradients_are_summed_with_sign_before_the_absolute_value():
    w = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(w.weight, 1.0)
    # loss = mean(w·x): batch gradients +2 and −2 cancel; a per-batch |g| would give 4
    batches = [torch.tensor([[2.0]]), torch.tensor([[-2.0]])]
    sums, n = accumulate_gradients(w, batches, lambda model, x: model(x).mean())
    assert n == 2 and sums["weight"].item() == 0.0


def test_random_labels_differ_from_the_true_label():
    y = torch.arange(10) % 3
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        r = random_labels(y, 3, g)
        assert (r != y).all() and r.min() >= 0 and r.max() < 3
    draws = torch.cat(
        [random_labels(y, 3, torch.Generator().manual_seed(s), exclude_true=False) for s in range(20)]
    )
    assert (draws == y.repeat(20)).any()  # the reference's uniform draw may hit the true label


@pytest.mark.parametrize("optim", [SGD, dict(optim="adamw_torch", weight_decay=0.1, learning_rate=0.01)])
def test_non_salient_weights_bit_identical_with_weight_decay_and_momentum(tmp_path, optim):
    model = tiny_resnet()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _trainer(tmp_path, model, **optim)
    trainer.train()
    salient = total = 0
    for n, p in model.named_parameters():
        m = trainer.mask[n]
        assert torch.equal(p[~m], before[n][~m]), n
        salient, total = salient + int(m.sum()), total + m.numel()
        state = trainer.optimizer.state[p]
        for v in state.values():
            if torch.is_tensor(v) and v.shape == p.shape:
                assert (v[~m] == 0).all(), n  # no momentum/moments left on frozen weights
    assert salient == int(total * 0.5)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_gradient_masking_alone_lets_weight_decay_move_frozen_weights(tmp_path):
    """The reference code's pre-2026 behaviour (restore_unmasked=False) — shown, not recommended."""
    model = tiny_resnet()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _trainer(tmp_path, model, restore_unmasked=False)
    trainer.train()
    moved = sum(
        int((p[~trainer.mask[n]] != before[n][~trainer.mask[n]]).sum()) for n, p in model.named_parameters()
    )
    assert moved > 0


def test_mask_saved_with_checkpoints_and_resume_reproduces_the_run(tmp_path):
    straight = tiny_resnet()
    _trainer(tmp_path / "a", straight).train()
    t = _trainer(tmp_path / "b", save_strategy="steps", save_steps=2)
    t.train()
    ckpt = tmp_path / "b" / "checkpoint-2"
    saved = load_file(str(ckpt / MASK_FILE))
    assert all(torch.equal(saved[n].bool(), t.mask[n]) for n in t.mask)
    resumed = _trainer(tmp_path / "b", tiny_resnet(seed=5), save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert all(torch.equal(resumed.mask[n], t.mask[n]) for n in t.mask)
    for (n, a), b in zip(straight.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), n
    t.save_model()
    card = (tmp_path / "b" / "README.md").read_text()
    assert "mask ratio r = 0.5" in card and "salient weights" in card
    reloaded = load_mask(tmp_path / "b" / MASK_FILE, tiny_resnet())
    assert all(torch.equal(reloaded[n], t.mask[n]) for n in t.mask)


def test_given_mask_is_used(tmp_path):
    model = tiny_resnet()
    only_head = {
        n: torch.full_like(p, n.startswith("classifier"), dtype=torch.bool)
        for n, p in model.named_parameters()
    }
    save_mask(only_head, tmp_path / "m.safetensors", model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _trainer(tmp_path / "o", model, mask_path=str(tmp_path / "m.safetensors")).train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("classifier") for n in changed)


def test_salun_npo_on_a_causal_lm(tmp_path):
    data, tok, model = demo_world()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = SalUnConfig(
        output_dir=str(tmp_path), max_steps=8, learning_rate=2e-3, save_strategy="no", **COMMON
    )
    trainer = SalUnTrainer(
        model=model,
        args=args,
        forget_dataset=data["forget"],
        retain_dataset=data["retain"],
        processing_class=tok,
    )
    assert trainer.forget_loss == "npo"
    f0 = mean_prob(model, tok, data["forget"])
    trainer.train()
    assert mean_prob(model, tok, data["forget"]) < f0 - 0.05
    for n, p in model.named_parameters():
        assert torch.equal(p[~trainer.mask[n]], before[n][~trainer.mask[n]]), n


def test_salun_bad_input(tmp_path):
    for ratio in (0.0, 1.01):
        with pytest.raises(ValueError, match="mask_ratio"):
            SalUnConfig(output_dir=str(tmp_path), mask_ratio=ratio, **COMMON)
    with pytest.raises(ValueError, match="forget_loss"):
        SalUnConfig(output_dir=str(tmp_path), forget_loss="kl", **COMMON)
    with pytest.raises(ValueError, match="does not fit a classifier"):
        _trainer(tmp_path, forget_loss="ga")
    data, tok, model = demo_world()
    args = SalUnConfig(output_dir=str(tmp_path), forget_loss="random_label", **COMMON)
    with pytest.raises(ValueError, match="does not fit a causal LM"):
        SalUnTrainer(model=model, args=args, forget_dataset=data["forget"], processing_class=tok)
    other = tiny_resnet(num_labels=4)
    save_mask(
        {n: torch.ones_like(p, dtype=torch.bool) for n, p in other.named_parameters()},
        tmp_path / "x.safetensors",
    )
    with pytest.raises(ValueError, match="different architecture"):
        _trainer(tmp_path, mask_path=str(tmp_path / "x.safetensors"))
    forget, retain = _data()
    args = SalUnConfig(output_dir=str(tmp_path), **COMMON)
    with pytest.raises(ValueError, match="labels \\[7\\]"):
        SalUnTrainer(model=tiny_resnet(), args=args, forget_dataset=forget.map(lambda r: {"labels": 7}))


def test_salun_with_a_lora_adapter_masks_only_adapter_weights(tmp_path):
    from peft import LoraConfig

    data, tok, model = demo_world()
    args = SalUnConfig(
        output_dir=str(tmp_path),
        max_steps=4,
        learning_rate=1e-2,
        weight_decay=0.1,
        save_strategy="no",
        **COMMON,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = SalUnTrainer(
        model=model,
        args=args,
        forget_dataset=data["forget"],
        retain_dataset=data["retain"],
        processing_class=tok,
        peft_config=lora,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert set(trainer.mask) == {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in trainer.mask)
    for n, p in trainer.model.named_parameters():
        if n in trainer.mask:
            assert torch.equal(p[~trainer.mask[n]], before[n][~trainer.mask[n]]), n
        else:
            assert torch.equal(p, before[n]), n  # frozen base weights
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


# ------------------------------------------------------------------------- SaliencyMask without a Trainer
@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
        lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
    ],
    ids=["sgd-momentum-wd", "adamw"],
)
def test_saliency_mask_on_a_plain_module_and_optimizer(make_optimizer):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    grads = {n: torch.randn_like(p) for n, p in net.named_parameters()}
    mask = SaliencyMask.from_gradients(grads, 0.5)
    assert mask.num_salient == mask.num_entries // 2
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = make_optimizer(net.parameters())
    mask.attach(net, optimizer)
    for _ in range(3):  # no explicit masking call: the optimizer's pre-step hook masks the gradients
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    for n, p in net.named_parameters():
        assert torch.equal(p[~mask[n]], before[n][~mask[n]]), n  # bit-identical despite decay and momentum
        assert not torch.equal(p[mask[n]], before[n][mask[n]]), n
        for v in optimizer.state[p].values():
            if torch.is_tensor(v) and v.shape == p.shape:
                assert (v[~mask[n]] == 0).all(), n
    mask.detach()  # hooks removed: weight decay moves every weight again
    optimizer.zero_grad()
    F.cross_entropy(net(x), y).backward()
    optimizer.step()
    first = next(iter(mask))
    assert not torch.equal(net.get_parameter(first)[~mask[first]], before[first][~mask[first]])


def test_saliency_mask_files(tmp_path):
    net = torch.nn.Linear(3, 2)
    mask = SaliencyMask({"weight": torch.rand(2, 3) > 0.5, "bias": torch.tensor([True, False])})
    mask.save(tmp_path / "m.safetensors", net, mask_ratio=0.5, source="test")
    loaded = SaliencyMask.load(tmp_path / "m.safetensors", net, mask_ratio=0.5)
    assert all(torch.equal(loaded[n], mask[n]) for n in mask) and loaded["bias"].dtype == torch.bool
    with pytest.raises(ValueError, match="mask_ratio=0.5, but this run has mask_ratio=0.2"):
        SaliencyMask.load(tmp_path / "m.safetensors", net, mask_ratio=0.2)
    with pytest.raises(ValueError, match="different architecture.*'weight' has shape"):
        SaliencyMask.load(tmp_path / "m.safetensors", torch.nn.Linear(4, 2))
    save_file({"weight": torch.full((2, 3), 0.3), "bias": torch.ones(2)}, str(tmp_path / "soft.safetensors"))
    with pytest.raises(ValueError, match="other than 0/1"):
        SaliencyMask.load(tmp_path / "soft.safetensors", net)
    save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, str(tmp_path / "float.safetensors"))
    assert (
        SaliencyMask.load(tmp_path / "float.safetensors", net).num_salient == 6
    )  # 0/1 floats (reference .pt)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="saliency mask .*bad.safetensors is not a valid safetensors file"):
        SaliencyMask.load(tmp_path / "bad.safetensors", net)
    with pytest.raises(FileNotFoundError, match="no saliency mask"):
        SaliencyMask.load(tmp_path / "missing.safetensors", net)
    with pytest.raises(ValueError, match="does not fit Linear"):
        SaliencyMask({"weight": torch.ones(2, 3, dtype=torch.bool)}).attach(net)
