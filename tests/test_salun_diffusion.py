"""SalUnDiffusionTrainer: the generation objective's maths, the saliency mask (Eq. 6), mask enforcement
for both UNet kinds, forgetting, saving/reloading, checkpoint resume, bad input, CFG sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel, UNet2DModel
from utils import (
    tiny_class_unet,
    tiny_ddpm_scheduler,
    tiny_image_dataset,
    tiny_text_encoder,
    tiny_text_unet,
    tiny_vae,
)

from hf_unlearn.importance.saliency import SaliencyMask
from hf_unlearn.trainers.salun import MASK_FILE
from hf_unlearn.trainers.salun_diffusion import (
    SalUnDiffusionConfig,
    SalUnDiffusionTrainer,
    cfg_prediction,
    clipped_surrogate,
    draw_timesteps,
    forget_loss,
    mask_loss,
    pseudo_labels,
    sample_class_conditional,
)


def config(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    return SalUnDiffusionConfig(**{**base, **kw})


def class_data(n_forget=4, n_retain=8):
    forget = tiny_image_dataset(n_forget, seed=1, class_labels=[0] * n_forget)
    retain = tiny_image_dataset(n_retain, seed=2, class_labels=[1 + i % 3 for i in range(n_retain)])
    return forget, retain


def class_trainer(tmp_path, unet=None, n_forget=4, mask=None, **kw):
    forget, retain = class_data(n_forget)
    return SalUnDiffusionTrainer(
        model=unet if unet is not None else tiny_class_unet(),
        args=config(tmp_path, **kw),
        noise_scheduler=tiny_ddpm_scheduler(),
        forget_dataset=forget,
        retain_dataset=retain,
        mask=mask,
    )


def text_trainer(tmp_path, unet=None, forget=None, vae=None, **kw):
    encoder, tokenizer = tiny_text_encoder()
    shape = (4, 8, 8) if vae is None else (3, 16, 16)
    forget = forget if forget is not None else tiny_image_dataset(4, shape, 1, prompt=["a photo of cat"] * 4)
    retain = tiny_image_dataset(4, shape, 2, prompt=["a photo of dog", "a photo of car"] * 2)
    return SalUnDiffusionTrainer(
        model=unet if unet is not None else tiny_text_unet(),
        args=config(tmp_path, **kw),
        noise_scheduler=tiny_ddpm_scheduler(),
        forget_dataset=forget,
        retain_dataset=retain,
        text_encoder=encoder,
        tokenizer=tokenizer,
        vae=vae,
    )


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ----------------------------------------------------------------------------------- (1) the maths
def test_forget_loss_and_pieces_by_hand():
    pred = torch.zeros(1, 1, 2, 2, requires_grad=True)
    pseudo = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2).requires_grad_()
    loss = forget_loss(pred, pseudo)
    assert loss.item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    loss.backward()
    assert pseudo.grad is None  # stop-gradient on the pseudo branch
    assert torch.allclose(pred.grad, -2 * pseudo.detach() / 4)
    # mask loss: Σ_pixels, mean over batch (DDPM) vs mean (SD)
    target = torch.ones(2, 1, 2, 2)
    p = torch.zeros(2, 1, 2, 2)
    p[1] = 3.0
    assert mask_loss(p, target, "sum_pixels").item() == pytest.approx((4 * 1 + 4 * 4) / 2)
    assert mask_loss(p, target, "mean").item() == pytest.approx((4 * 1 + 4 * 4) / 8)
    assert torch.equal(cfg_prediction(torch.tensor(2.0), torch.tensor(1.0), 3.0), torch.tensor(4.0))
    assert pseudo_labels(torch.tensor([0, 1, 3]), [0, 1, 2, 3], "next").tolist() == [1, 2, 0]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    labels = torch.tensor([0, 1, 2, 3] * 25)
    r = pseudo_labels(labels, [0, 1, 2, 3], "random", g())
    assert (r != labels).all() and torch.equal(r, pseudo_labels(labels, [0, 1, 2, 3], "random", g()))
    t = draw_timesteps(6, 100, g(), antithetic=True)
    assert t.shape == (6,) and torch.equal(t[4:6], 99 - t[:2])  # t ∪ (T−1−t), first n


def test_trainer_forget_term_equals_manual(tmp_path):
    trainer = class_trainer(tmp_path)
    unet, sched = trainer.model, trainer.noise_scheduler
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.state.global_step = 0
    _, logs = trainer.unlearning_loss(unet, batch)
    gen = torch.Generator().manual_seed(hash((0, 0, 0, 0)) % 2**63)
    x0, c = batch["forget"]["pixel_values"], batch["forget"]["class_labels"]
    t = torch.randint(0, 100, (4,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    x_t = sched.add_noise(x0, eps, t)
    c_next = (c + 1) % 4  # classes 0..3, null class 4
    with torch.no_grad():
        want = F.mse_loss(unet(x_t, t, class_labels=c).sample, unet(x_t, t, class_labels=c_next).sample)
    assert logs["forget_loss"].item() == pytest.approx(want.item(), rel=1e-5)
    assert trainer.args.retain_cond_drop_prob == 0.1  # DDPM reference's CFG dropout on the retain loss
    trainer.args.retain_cond_drop_prob = 1.0
    assert (trainer.retain_condition(batch["retain"], gen) == 4).all()  # all replaced by the null class


def test_clipped_surrogate_matches_clip_grad_norm():
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    x = torch.randn(4, 5) * 10
    (lin(x) ** 2).sum().backward()
    torch.nn.utils.clip_grad_norm_(lin.parameters(), 1.0)
    want = [p.grad.clone() for p in lin.parameters()]
    lin.zero_grad()
    clipped_surrogate((lin(x) ** 2).sum(), list(lin.parameters()), 1.0).backward()
    for w, p in zip(want, lin.parameters(), strict=True):
        assert torch.allclose(w, p.grad, atol=1e-6)


# ----------------------------------------------------------------------------------- (2) the mask
def test_mask_is_global_top_ratio_of_gradient(tmp_path):
    trainer = class_trainer(tmp_path, mask_ratio=0.3)
    assert trainer.args.mask_clip_norm == 1.0 and trainer.args.mask_antithetic  # DDPM reference
    grads = trainer.forget_gradients()
    mask = trainer.compute_mask()
    flat_g = torch.cat([grads[n].abs().flatten() for n in grads])
    flat_m = torch.cat([mask[n].flatten() for n in grads])
    assert int(flat_m.sum()) == int(flat_g.numel() * 0.3)
    assert flat_g[flat_m].min() >= flat_g[~flat_m].max()
    assert torch.equal(mask[next(iter(mask))], trainer.compute_mask()[next(iter(mask))])  # deterministic


# ------------------------------------------------- (3)+(4) enforcement and forgetting, class-conditional
def forget_gap(trainer, unet):
    """Mean ‖ε(x_t|c_f) − ε(x_t|c')‖² on the forget set at fixed x_t, t."""
    ds = trainer.train_dataset.views["forget"]
    x0 = torch.stack([ds[i]["pixel_values"] for i in range(len(ds))])
    c = torch.tensor([int(ds[i]["class_labels"]) for i in range(len(ds))])
    g = torch.Generator().manual_seed(123)
    t = torch.randint(0, 100, (len(ds),), generator=g)
    x_t = trainer.noise_scheduler.add_noise(x0, torch.randn(x0.shape, generator=g), t)
    with torch.no_grad():
        return F.mse_loss(
            unet(x_t, t, class_labels=c).sample, unet(x_t, t, class_labels=(c + 1) % 4).sample
        ).item()


def test_class_conditional_train_keeps_unmasked_and_forgets(tmp_path):
    trainer = class_trainer(tmp_path, max_steps=6)
    before, gap0 = snapshot(trainer.model), forget_gap(trainer, trainer.model)
    trainer.train()
    mask = trainer.mask
    changed = 0
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], before[n][~mask[n]]), n
        changed += int((p.detach()[mask[n]] != before[n][mask[n]]).sum())
    assert changed > 0
    assert forget_gap(trainer, trainer.model) < gap0
    logged = [h for h in trainer.state.log_history if "forget_loss" in h]
    assert logged and "retain_loss" in logged[0]


# -------------------------------------------------- (3)+(4) text-conditional, prompt encoding
def test_text_conditional_train_keeps_unmasked_and_moves_to_target(tmp_path):
    trainer = text_trainer(tmp_path, max_steps=5, forget_target_prompt="a photo of sandal")
    assert trainer.args.mask_guidance_scale == 8.5 and trainer.args.mask_clip_norm == 0.0  # SD reference
    enc, tok = trainer.text_encoder, trainer.tokenizer
    ids = tok(["a photo of cat"], padding="max_length", max_length=8, truncation=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(trainer.encode_prompts(["a photo of cat"]), enc(ids.input_ids)[0])
    unet = trainer.model
    x0 = torch.stack([trainer.train_dataset.views["forget"][i]["pixel_values"] for i in range(4)])
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 100, (4,), generator=g)
    x_t = trainer.noise_scheduler.add_noise(x0, torch.randn(x0.shape, generator=g), t)
    c, c_t = trainer.encode_prompts(["a photo of cat"] * 4), trainer.encode_prompts(["a photo of sandal"] * 4)

    def gap():
        with torch.no_grad():
            return F.mse_loss(
                unet(x_t, t, encoder_hidden_states=c).sample, unet(x_t, t, encoder_hidden_states=c_t).sample
            )

    before, gap0 = snapshot(unet), gap()
    trainer.train()
    changed = 0
    for n, p in unet.named_parameters():
        m = trainer.mask[n]
        assert torch.equal(p.detach()[~m], before[n][~m]), n
        changed += int((p.detach()[m] != before[n][m]).sum())
    assert changed > 0 and gap() < gap0
    assert not any(p.requires_grad for p in enc.parameters())


def test_pseudo_prompt_column_wins(tmp_path):
    forget = tiny_image_dataset(
        2, (4, 8, 8), 1, prompt=["nude person"] * 2, pseudo_prompt=["clothed person"] * 2
    )
    trainer = text_trainer(tmp_path, forget=forget, forget_target_prompt="a photo of sandal")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])["forget"]
    _, pseudo = trainer.conditions(batch, None)
    assert torch.equal(pseudo, trainer.encode_prompts(["clothed person"] * 2))


# ------------------------------------------------------------- (5)+(7) saving, reload, resume
def test_checkpoints_save_reload_and_resume(tmp_path):
    a = class_trainer(tmp_path / "a", max_steps=4, save_strategy="steps", save_steps=2, n_forget=12)
    a.train()
    for step in (2, 4):
        assert (tmp_path / "a/out" / f"checkpoint-{step}" / MASK_FILE).is_file()
    a.save_model()
    out = tmp_path / "a/out"
    assert (out / MASK_FILE).is_file() and (out / "diffusion_pytorch_model.safetensors").is_file()
    assert "diffusers" in (out / "README.md").read_text()
    reloaded = UNet2DModel.from_pretrained(out)
    x, t, c = torch.randn(2, 3, 8, 8), torch.tensor([3, 50]), torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(reloaded(x, t, class_labels=c).sample, a.model(x, t, class_labels=c).sample)
    loaded = SaliencyMask.load(out / MASK_FILE, reloaded, mask_ratio=0.5)
    assert all(torch.equal(loaded[n], a.mask[n]) for n in loaded)
    with pytest.raises(ValueError, match="mask_ratio"):
        SaliencyMask.load(out / MASK_FILE, reloaded, mask_ratio=0.3)

    with pytest.raises(ValueError, match="folder the input model was loaded from"):
        class_trainer(tmp_path / "c", unet=reloaded, output_dir=str(out)).save_model()

    # resume mid-epoch (12 forget rows / batch 4 = 3 steps per epoch) equals the uninterrupted run
    b = class_trainer(tmp_path / "b", max_steps=4, save_strategy="steps", save_steps=2, n_forget=12)
    b.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert b.state.global_step == 4
    for (n, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q), n
    wrong = class_trainer(tmp_path / "d", max_steps=4, n_forget=12, mask_ratio=0.3)
    with pytest.raises(ValueError, match="mask_ratio=0.5"):
        wrong.train(resume_from_checkpoint=str(out / "checkpoint-2"))


# ----------------------------------------------------------------------------------- (6) bad input
def bad_cases():
    """(message fragment, constructor arguments replaced, error type)."""
    forget, _ = class_data()
    yield "empty", dict(forget_dataset=forget.select([])), ValueError
    yield "column", dict(forget_dataset=forget.remove_columns("class_labels")), ValueError
    yield "null class", dict(forget_dataset=forget.map(lambda r: {"class_labels": 4})), ValueError
    yield "shape", dict(forget_dataset=tiny_image_dataset(2, (3, 4, 4), class_labels=[0, 0])), ValueError
    yield "noise_scheduler", dict(noise_scheduler=None), ValueError
    yield "UNet2DModel", dict(model=torch.nn.Linear(2, 2)), TypeError
    yield "class embeddings", dict(model=tiny_class_unet(num_class_embeds=None)), ValueError
    yield "text_encoder", dict(model=tiny_text_unet()), ValueError
    yield "does not fit", dict(mask={"weight": torch.ones(2, 2, dtype=torch.bool)}), ValueError
    yield "datasets.Dataset", dict(retain_dataset=[{"pixel_values": 0}]), TypeError


def test_bad_inputs_raise_and_leave_model_untouched(tmp_path):
    forget, retain = class_data()
    for match, override, err in bad_cases():
        unet = tiny_class_unet()
        before = snapshot(unet)
        kwargs = dict(
            model=unet,
            args=config(tmp_path),
            noise_scheduler=tiny_ddpm_scheduler(),
            forget_dataset=forget,
            retain_dataset=retain,
        )
        kwargs.update(override)
        with pytest.raises(err, match=match):
            SalUnDiffusionTrainer(**kwargs)
        assert all(torch.equal(p, before[n]) for n, p in unet.named_parameters())
    with pytest.raises(ValueError, match="pseudo_label"):
        config(tmp_path, pseudo_label="nearest")


# ----------------------------------------------------------------------------------- (8) sampling
def test_sample_class_conditional_shape_and_determinism():
    unet = tiny_class_unet().eval()
    sched = DDIMScheduler(num_train_timesteps=100)
    run = lambda: sample_class_conditional(  # noqa: E731
        unet,
        sched,
        [0, 1, 3],
        guidance_scale=3.0,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
    )
    a, b = run(), run()
    assert a.shape == (3, 3, 8, 8) and torch.equal(a, b) and torch.isfinite(a).all()
    assert sched.num_inference_steps is None  # the caller's scheduler is not changed
    other = sample_class_conditional(unet, sched, [0, 1, 3], 3.0, 3, torch.Generator().manual_seed(1))
    assert not torch.equal(a, other)


def test_text_unet_kind_is_detected(tmp_path):
    assert isinstance(text_trainer(tmp_path).model, UNet2DConditionModel)


def test_given_mask_is_used_as_is(tmp_path):
    unet = tiny_class_unet()
    none = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in unet.named_parameters()}
    trainer = class_trainer(tmp_path, unet=unet, mask=none, max_steps=2)
    before = snapshot(unet)
    trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in unet.named_parameters())  # nothing is salient


def test_vae_latents_and_attention_mask(tmp_path):
    trainer = text_trainer(tmp_path, vae=tiny_vae(), max_steps=1)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])["forget"]
    z = trainer.latents(batch["pixel_values"], torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 8, 8)
    assert torch.equal(z, trainer.latents(batch["pixel_values"], torch.Generator().manual_seed(0)))
    dist = trainer.vae.encode(batch["pixel_values"]).latent_dist
    want = dist.sample(torch.Generator().manual_seed(0)) * trainer.vae.config.scaling_factor
    assert torch.allclose(z, want)
    trainer.train()
    enc, tok = trainer.text_encoder, trainer.tokenizer
    enc.config.use_attention_mask = True
    trainer._prompt_cache.clear()
    ids = tok(["a photo of tree"], padding="max_length", max_length=8, truncation=True, return_tensors="pt")
    with torch.no_grad():
        want = enc(ids.input_ids, attention_mask=ids.attention_mask)[0]
    assert torch.equal(trainer.encode_prompts(["a photo of tree"]), want)
    with pytest.raises(ValueError, match="shape"):
        text_trainer(tmp_path, vae=tiny_vae(), forget=tiny_image_dataset(2, (4, 8, 8), prompt=["a", "a"]))


def test_config_parses_with_hf_argument_parser():
    from transformers import HfArgumentParser

    parser = HfArgumentParser(SalUnDiffusionConfig)
    argv = ["--output_dir", "/tmp/x", "--pseudo_label", "random", "--mask_antithetic", "false"]
    (cfg,) = parser.parse_args_into_dataclasses(argv)
    assert cfg.pseudo_label == "random" and cfg.mask_antithetic is False and cfg.retain_weight == 0.5
    assert "forget_target_prompt" in parser.format_help()
