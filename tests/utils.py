"""Tiny models and data built in memory for the tests (no downloads)."""

from __future__ import annotations

import copy
import functools
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets

from hf_unlearn.data.demo import make_demo_dataset
from hf_unlearn.tiny import finetune_qa, tiny_llama, train_tokenizer

SHARED_TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"


@functools.lru_cache(maxsize=1)
def _demo_world():
    data = make_demo_dataset(n_people=8, n_forget=2, n_holdout=1)
    texts = [r["question"] + " " + r["answer"] for split in data.values() for r in split]
    texts += ["I don't know the answer to that. I'm not sure about that. Sorry, I have no idea."]
    tok = train_tokenizer(texts, vocab_size=500)
    model = tiny_llama(tok, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    finetune_qa(
        model,
        tok,
        datasets.concatenate_datasets([data["forget"], data["retain"]]),
        "/tmp/hfu-tests-ft",
        epochs=40,
        batch_size=8,
    )
    return data, tok, model


def demo_world():
    """(DatasetDict forget/retain/holdout, tokenizer, fine-tuned tiny Llama) — a fresh model copy each call."""
    data, tok, model = _demo_world()
    return data, tok, copy.deepcopy(model)


def _free_port() -> str:
    """A free local port, so parallel runs of the suite do not collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _launch(cmd: list[str], timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:  # the first traceback names the failing rank's error; the tail, the launcher's
        err = proc.stderr
        first = err.find("Traceback")
        raise AssertionError(
            f"{' '.join(cmd)} failed:\n{err[first : first + 4000] if first >= 0 else ''}\n…\n{err[-2000:]}"
        )
    return proc


def run_torchrun(script, *args, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc script args`` (gloo on CPU) on a free port; asserts success."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    return _launch([*cmd, "--master_port", _free_port(), str(script), *map(str, args)], timeout)


def run_accelerate(
    config, script, *args, nproc: int = 2, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file config --num_processes nproc script args`` on a free port (the
    script chooses CPU/gloo itself), with ``env`` added to the environment; asserts success."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    cmd += ["--num_processes", str(nproc), "--main_process_port", _free_port()]
    return _launch([*cmd, str(script), *map(str, args)], timeout, env)


# ------------------------------------------------------------------ tiny diffusion components (SalUn)
def tiny_class_unet(seed: int = 0, num_class_embeds: int = 5):
    """A class-conditional diffusers ``UNet2DModel``: 3×8×8 samples, classes 0..3 + null class 4."""
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        layers_per_block=1,
        num_class_embeds=num_class_embeds,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


def tiny_text_unet(seed: int = 0):
    """A text-conditional diffusers ``UNet2DConditionModel``: 4×8×8 latents, cross_attention_dim 32."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        cross_attention_dim=32,
        layers_per_block=1,
        attention_head_dim=8,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )


TINY_PROMPT_WORDS = "a an photo image of cat dog car tree sandal person nude clothed".split()


def tiny_text_encoder(seed: int = 0, max_length: int = 8):
    """(CLIPTextModel with hidden size 32, a word-level fast tokenizer over ``TINY_PROMPT_WORDS``)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[BOS]", "[EOS]", *TINY_PROMPT_WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=max_length,
    )
    torch.manual_seed(seed)
    encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=4,
            vocab_size=len(vocab),
            max_position_embeddings=max_length,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
    ).eval()
    return encoder, tokenizer


def tiny_ddpm_scheduler(num_train_timesteps: int = 100):
    """A ``DDPMScheduler`` with few training timesteps (ε-prediction)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps)


def tiny_image_dataset(n: int, shape=(3, 8, 8), seed: int = 0, **columns) -> datasets.Dataset:
    """``n`` rows of random ``pixel_values`` of ``shape`` in [−1, 1], plus the given columns (lists)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand((n, *shape), generator=g) * 2 - 1).tolist()
    return datasets.Dataset.from_dict({"pixel_values": pixels, **{k: list(v) for k, v in columns.items()}})


def tiny_vae(seed: int = 0):
    """A diffusers ``AutoencoderKL``: 3×16×16 images ↔ 4×8×8 latents."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
    ).eval()


# ------------------------------------------------ tiny Stable Diffusion pipeline (RealEra, UCE, ESD)
D_TEXT, MAX_LEN = 32, 12
WORDS = "a photo of cat dog car tree painting by van gogh monet art animal".split()


def tiny_clip_tokenizer():
    """A CLIP BPE tokenizer over a few whole words (plus single letters), built in memory."""
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab: dict[str, int] = {}
    for t in ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]:
        vocab.setdefault(t, len(vocab))
    merges: list[tuple[str, str]] = []
    for w in WORDS:
        prefix = w[0]
        for i, ch in enumerate(w[1:]):
            right = ch + "</w>" if i == len(w) - 2 else ch
            if (prefix, right) not in merges:
                merges.append((prefix, right))
            prefix += right
            vocab.setdefault(prefix, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LEN)


def tiny_pipe():
    """A Stable-Diffusion-shaped ``RealEraPipeline`` from configs: CLIP text encoder (32-d) + in-memory CLIP
    tokenizer (12 tokens), AutoencoderKL, UNet2DConditionModel with cross-attention, DDIM; 16×16 images."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from hf_unlearn.pipelines import RealEraPipeline

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=D_TEXT,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=len(tokenizer),
            max_position_embeddings=MAX_LEN,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        cross_attention_dim=D_TEXT,
        layers_per_block=1,
        attention_head_dim=8,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
    )
    pipe = RealEraPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
