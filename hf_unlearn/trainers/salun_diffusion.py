"""SalUn for diffusion models (Fan, Liu, Zhang, Wong, Wei & Liu, ICLR 2024, arXiv 2310.12508), as a
``transformers.Trainer`` over a ``diffusers`` UNet.

Only the *salient* weights of the UNet may change. The mask is the paper's Eq. 6,

    m_S = 1( |∇_θ ℓ_f(θ; D_f)|_{θ=θ_o} ≥ γ ),   γ: the global top-r threshold over all UNet weights,

with ℓ_f the diffusion loss of the forget concept (:func:`mask_loss`), and the unlearned weights are
θ_u = m_S ⊙ (θ_o + Δθ) + (1 − m_S) ⊙ θ_o (Eq. 7), enforced by a
:class:`~hf_unlearn.importance.saliency.SaliencyMask` on the optimizer. The objective for generation
(the paper's random-label unlearning for diffusion models, the generation counterpart of Eq. 8) is

    L(θ_u) = E_{(x,c)∼D_f, t, ε, c'≠c} ‖ε_θu(x_t | c') − ε_θu(x_t | c)‖² + β · ℓ_MSE(θ_u; D_r),

where the pseudo branch ε_θu(x_t | c') is a stop-gradient target, evaluated on the *same* x_t, t and ε
as the forget branch (:func:`forget_loss`), and ℓ_MSE is the standard conditional denoising loss on the
retain set (:func:`denoising_loss`). β is ``retain_weight``.

Two kinds of UNet:

- class-conditional ``diffusers.UNet2DModel`` (``num_class_embeds`` classes, one of them the null class of
  classifier-free guidance, by default the last): the paper's CIFAR-10/STL-10 DDPM setting
  (reference ``DDPM/runners/diffusion.py``). c' is the next class (c + 1) mod K as in the reference code
  (``pseudo_label="next"``) or a random other class, as in the paper (``"random"``);
- text-conditional ``diffusers.UNet2DConditionModel`` with a frozen text encoder: Stable Diffusion
  (reference ``SD/train-scripts/random_label.py``, ``nsfw_removal.py``). c' is ``forget_target_prompt``
  (an anchor such as "a photo of a sandal"; default "", the unconditional prompt) or the row's
  ``pseudo_prompt`` when the forget set has that column (the NSFW recipe: the clothed prompt).

Defaults (:class:`SalUnDiffusionConfig`): fields left ``None`` follow the reference of the UNet's kind
(:meth:`SalUnDiffusionConfig.kind_defaults`), so ``trainer.args`` shows the values used. The lr schedule is
constant (every SalUn reference), lr 1e-5 (SD reference; the DDPM reference uses 1e-4), Adam(W) without
weight decay, gradient clipping at 1.0 (DDPM reference). ``retain_weight`` defaults to 0.5, the SD
reference's α; both loss terms here are *mean* squared errors, as in the SD reference. The DDPM reference's
α = 1e-3 multiplies a retain loss summed over pixels (``(ε − ε_θ)².sum((1, 2, 3)).mean()``) while its
forget loss is a mean; with the mean reduction used here that is α = 1e-3·C·H·W (≈ 3.07 on CIFAR-10).
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import SchedulerType, get_last_checkpoint

from ..data.paired import PairedCollator, PairedViews, PairingEpochCallback
from ..importance.saliency import SaliencyMask, accumulate_gradients, saliency_mask
from ..papers import SALUN_PAPER
from ..registry import register_method
from .base import MethodTrainer, UnlearnConfig
from .salun import MASK_FILE

PSEUDO_LABELS = ("next", "random")
MASK_REDUCTIONS = ("auto", "sum_pixels", "mean")
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"  # what ModelMixin.save_pretrained writes


@dataclass
class SalUnDiffusionConfig(UnlearnConfig):
    """SalUn's hyper-parameters for diffusion UNets. ``retain_weight`` is the paper's β (α in the code).

    ``mask_guidance_scale``, ``mask_clip_norm``, ``mask_antithetic`` and ``mask_reduction="auto"`` mean
    "the reference of the UNet's kind" (:meth:`kind_defaults`): the DDPM reference for a class-conditional
    ``UNet2DModel``, the SD reference for a ``UNet2DConditionModel``. The trainer fills them in on its own
    copy of the config; the caller's config is unchanged.
    """

    mask_ratio: float = field(
        default=0.5, metadata={"help": "r: fraction of all UNet weights that are salient (Eq. 6), in (0, 1]."}
    )
    mask_path: str | None = field(
        default=None, metadata={"help": "A saved mask (safetensors) to use instead of computing one."}
    )
    mask_guidance_scale: float | None = field(
        default=None,
        metadata={
            "help": "s of the CFG prediction ε_∅ + s(ε_c − ε_∅) whose loss gives the mask gradient (diffusers' "
            "guidance_scale; the references' (1+w)ε_c − wε_∅ is s = w + 1). Default: 3.0 for class-conditional "
            "UNets (DDPM reference, w = 2), 8.5 for text-conditional (SD reference, w = 7.5)."
        },
    )
    mask_clip_norm: float | None = field(
        default=None,
        metadata={
            "help": "Clip each forget batch's gradient to this norm before accumulating it (0 = no clipping). "
            "Default: 1.0 for class-conditional (DDPM reference), 0 for text-conditional (SD reference)."
        },
    )
    mask_antithetic: bool | None = field(
        default=None,
        metadata={
            "help": "Antithetic timesteps t ∪ (T−1−t) for the mask gradient. Default: true for "
            "class-conditional (DDPM reference), false for text-conditional (SD reference)."
        },
    )
    mask_reduction: str = field(
        default="auto",
        metadata={
            "help": "Reduction of the mask loss: 'sum_pixels' (Σ over pixels, mean over the batch; DDPM "
            "reference) or 'mean' (MSE; SD reference); 'auto' = by UNet kind. The sign of the loss does "
            "not matter (|∇| is ranked).",
            "choices": list(MASK_REDUCTIONS),
        },
    )
    pseudo_label: str = field(
        default="next",
        metadata={
            "help": "Class-conditional: the pseudo class c' of a forget row of class c: 'next' = (c + 1) mod K "
            "(reference code) or 'random' = uniform over the K−1 other classes (paper), seeded.",
            "choices": list(PSEUDO_LABELS),
        },
    )
    null_class: int | None = field(
        default=None,
        metadata={
            "help": "Class-conditional: the null (unconditional) class id. Default: num_class_embeds − 1."
        },
    )
    forget_target_prompt: str = field(
        default="",
        metadata={
            "help": "Text-conditional: the pseudo prompt c' of every forget row (e.g. 'a photo of a sandal'); "
            "a forget-set column `pseudo_prompt` wins per row. Default: '' (the unconditional prompt)."
        },
    )
    pixel_column: str = field(
        default="pixel_values", metadata={"help": "Column of C×H×W float images (or latents with vae=None)."}
    )
    class_column: str = field(
        default="class_labels", metadata={"help": "Class-conditional: the label column."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Text-conditional: the prompt column."})
    pseudo_prompt_column: str = field(
        default="pseudo_prompt", metadata={"help": "Text-conditional: optional per-row pseudo prompt column."}
    )
    retain_cond_drop_prob: float | None = field(
        default=None,
        metadata={
            "help": "Probability of replacing a retain row's condition by the null class / '' prompt in the "
            "retain loss (classifier-free-guidance training). Default: 0.1 for class-conditional (DDPM "
            "reference, noise_estimation_loss_conditional), 0 for text-conditional (SD reference)."
        },
    )
    antithetic_timesteps: bool = field(
        default=False,
        metadata={
            "help": "Antithetic timesteps t ∪ (T−1−t) in the training losses too (DDPM reference's retain loss)."
        },
    )
    restore_unmasked: bool = field(
        default=True,
        metadata={
            "help": "After each step restore non-salient weights and zero their optimizer state (True), or "
            "only mask gradients as the reference code did before its 2026 fix (False)."
        },
    )
    retain_weight: float = field(
        default=0.5,
        metadata={
            "help": "β (α in the code): weight of the retain ε-MSE. SD reference 0.5 (mean MSE, as here); the "
            "DDPM reference's 1e-3 is on a pixel-summed loss, i.e. 1e-3·C·H·W here."
        },
    )
    lr_scheduler_type: SchedulerType | str = field(
        default="constant", metadata={"help": "Learning-rate schedule (every SalUn reference: constant)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if self.pseudo_label not in PSEUDO_LABELS:
            raise ValueError(f"pseudo_label must be one of {PSEUDO_LABELS}, got {self.pseudo_label!r}")
        if self.mask_reduction not in MASK_REDUCTIONS:
            raise ValueError(f"mask_reduction must be one of {MASK_REDUCTIONS}, got {self.mask_reduction!r}")
        if self.mask_clip_norm is not None and not (
            self.mask_clip_norm >= 0 and math.isfinite(self.mask_clip_norm)
        ):
            raise ValueError(
                f"mask_clip_norm must be a finite number >= 0 (0 = none), got {self.mask_clip_norm}"
            )
        if self.retain_cond_drop_prob is not None and not 0 <= self.retain_cond_drop_prob <= 1:
            raise ValueError(f"retain_cond_drop_prob must be in [0, 1], got {self.retain_cond_drop_prob}")
        if self.mask_guidance_scale is not None and not math.isfinite(self.mask_guidance_scale):
            raise ValueError(f"mask_guidance_scale must be finite, got {self.mask_guidance_scale}")
        if not isinstance(self.forget_target_prompt, str):
            raise TypeError(
                f"forget_target_prompt must be a string, got {type(self.forget_target_prompt).__name__}"
            )

    def kind_defaults(self, kind: str) -> dict:
        """The values that unset mask fields take for a UNet of ``kind`` ("class" or "text"): the DDPM
        reference (``DDPM/runners/diffusion.py::generate_mask``) or the SD reference
        (``SD/train-scripts/generate_mask.py``)."""
        ddpm = kind == "class"
        wanted = {
            "mask_guidance_scale": 3.0 if ddpm else 8.5,
            "mask_clip_norm": 1.0 if ddpm else 0.0,
            "mask_antithetic": ddpm,
            "mask_reduction": "sum_pixels" if ddpm else "mean",
            "retain_cond_drop_prob": 0.1 if ddpm else 0.0,
        }
        unset = {
            "mask_guidance_scale": None,
            "mask_clip_norm": None,
            "mask_antithetic": None,
            "mask_reduction": "auto",
            "retain_cond_drop_prob": None,
        }
        return {k: v for k, v in wanted.items() if getattr(self, k) == unset[k]}


# ------------------------------------------------------------------------------------ the maths
def forget_loss(pred: torch.Tensor, pseudo_pred: torch.Tensor) -> torch.Tensor:
    """Forget term of the generation objective: mean ‖ε_θ(x_t|c') − ε_θ(x_t|c)‖² with the pseudo branch
    ε_θ(x_t|c') a stop-gradient target (reference: ``F.mse_loss(pseudo, out)``). (B, C, H, W) ×2 → ()."""
    return F.mse_loss(pred.float(), pseudo_pred.detach().float())


def denoising_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ℓ_MSE: the standard conditional denoising loss, mean over every entry. (B, C, H, W) ×2 → ()."""
    return F.mse_loss(pred.float(), target.float())


def cfg_prediction(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance ε_∅ + s(ε_c − ε_∅) (diffusers' form; the references' (1+w)ε_c − wε_∅ is
    s = w + 1)."""
    return uncond + guidance_scale * (cond - uncond)


def mask_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """ℓ_f of Eq. 6 on one forget batch: 'sum_pixels' = Σ_pixels (target − pred)², mean over the batch
    (DDPM reference); 'mean' = MSE (SD reference, which takes −MSE: the sign does not change |∇|)."""
    sq = (target.float() - pred.float()).square()
    if reduction == "sum_pixels":
        return sq.flatten(1).sum(1).mean()
    return sq.mean()


def diffusion_target(
    scheduler, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet predicts for x_t = add_noise(sample, noise, t): ε, v (``get_velocity``) or x_0, by
    ``scheduler.config.prediction_type``."""
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(sample, noise, timesteps)
    return sample


def draw_timesteps(
    n: int, num_train_timesteps: int, generator: torch.Generator, antithetic: bool
) -> torch.Tensor:
    """n timesteps ~ U{0, …, T−1}; ``antithetic``: t ∪ (T−1−t) as the DDPM reference (first n). → (n,) long."""
    if not antithetic:
        return torch.randint(0, num_train_timesteps, (n,), generator=generator)
    t = torch.randint(0, num_train_timesteps, (n // 2 + 1,), generator=generator)
    return torch.cat([t, num_train_timesteps - 1 - t])[:n]


def pseudo_labels(
    labels: torch.Tensor, classes: list[int], mode: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """c' ≠ c for each forget label, among the K real ``classes`` (the null class excluded): 'next' =
    the next class in ``classes`` (cyclic; ``(c + 1) mod K`` for classes 0..K−1), 'random' = uniform over
    the K−1 others, drawn with ``generator``. (B,) → (B,)."""
    index = {c: i for i, c in enumerate(classes)}
    pos = torch.tensor([index[int(c)] for c in labels.tolist()], dtype=torch.long)
    k = len(classes)
    shift = torch.ones_like(pos) if mode == "next" else torch.randint(1, k, pos.shape, generator=generator)
    return torch.tensor(classes, dtype=torch.long)[(pos + shift) % k].to(labels.device)


def clipped_surrogate(loss: torch.Tensor, params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """A scalar whose gradient is ∇loss clipped to total norm ``max_norm`` exactly as
    ``torch.nn.utils.clip_grad_norm_`` clips it (coefficient min(1, max_norm / (‖g‖ + 1e-6))): the DDPM
    reference clips each forget batch's gradient before accumulating it."""
    params = [p for p in params if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    pairs = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for _, g in pairs]))
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return sum(((g * coef).detach() * p).sum() for p, g in pairs)


@torch.no_grad()
def sample_class_conditional(
    unet,
    scheduler,
    class_labels,
    guidance_scale: float = 3.0,
    num_inference_steps: int = 50,
    generator: torch.Generator | None = None,
    null_class: int | None = None,
) -> torch.Tensor:
    """Classifier-free-guidance sampling from a class-conditional ``diffusers.UNet2DModel`` (diffusers has
    no pipeline for it): ε̂ = ε_θ(x_t|∅) + s(ε_θ(x_t|c) − ε_θ(x_t|∅)) at each of ``num_inference_steps``
    steps of ``scheduler`` (a copy: the caller's scheduler is not changed). ``class_labels``: B ints;
    ``null_class`` defaults to ``num_class_embeds − 1``; ``guidance_scale`` 1 = no guidance (one forward
    per step), default 3.0 = the DDPM reference's w = 2 ((1+w)ε_c − wε_∅). ``generator`` draws the initial
    noise and the scheduler's noise, so a seeded generator gives the same samples. Returns the final
    samples (B, C, H, W) in the UNet's space (pixels in [−1, 1] for a pixel DDPM; decode latents yourself).
    """
    from diffusers.utils.torch_utils import randn_tensor

    if getattr(unet.config, "num_class_embeds", None) is None:
        raise ValueError(
            "sample_class_conditional needs a UNet2DModel with num_class_embeds (class embeddings)"
        )
    param = next(unet.parameters())
    labels = torch.as_tensor(class_labels, dtype=torch.long, device=param.device).reshape(-1)  # (B,)
    null = unet.config.num_class_embeds - 1 if null_class is None else null_class
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    shape = (labels.numel(), unet.config.in_channels, h, w)
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(num_inference_steps, device=param.device)
    latents = randn_tensor(shape, generator=generator, device=param.device, dtype=param.dtype)
    latents = latents * scheduler.init_noise_sigma
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    guided = guidance_scale != 1.0
    both = torch.cat([torch.full_like(labels, null), labels]) if guided else labels  # (2B,) or (B,)
    for t in scheduler.timesteps:
        x = torch.cat([latents, latents]) if guided else latents
        eps = unet(scheduler.scale_model_input(x, t), t, class_labels=both).sample
        if guided:
            uncond, cond = eps.chunk(2)
            eps = cfg_prediction(cond, uncond, guidance_scale)
        extra = {"generator": generator} if takes_generator else {}
        latents = scheduler.step(eps, t, latents, **extra).prev_sample
    return latents


# ------------------------------------------------------------------------------------ the data
class DiffusionCollator:
    """Stacks one view's rows: ``pixel_values`` (B, C, H, W) float, ``class_labels`` (B,) long, and the
    text columns present (``{output key: column}``, e.g. ``prompt`` / ``pseudo_prompt``: lists of B strings)."""

    def __init__(self, pixel_column: str, text_columns: dict[str, str], class_column: str | None):
        self.pixel_column, self.text_columns, self.class_column = pixel_column, text_columns, class_column

    def __call__(self, rows: list[dict]) -> dict:
        pixels = [torch.as_tensor(r[self.pixel_column], dtype=torch.float32) for r in rows]
        out = {"pixel_values": torch.stack(pixels)}  # (B, C, H, W)
        if self.class_column is not None:
            out["class_labels"] = torch.tensor([int(r[self.class_column]) for r in rows], dtype=torch.long)
        for key, col in self.text_columns.items():
            if col in rows[0]:
                out[key] = [str(r[col]) for r in rows]
        return out


# ------------------------------------------------------------------------------------ the trainer
@register_method("diffusion_trainer", SalUnDiffusionConfig)
class SalUnDiffusionTrainer(MethodTrainer):
    """SalUn on a diffusion UNet: the generation objective (module docstring) on the salient weights only.

    ``model`` is the UNet (``UNet2DModel`` with class embeddings, or ``UNet2DConditionModel`` with
    ``text_encoder`` + ``tokenizer``); ``noise_scheduler`` a diffusers training scheduler (``DDPMScheduler``);
    ``vae=None`` when ``pixel_values`` already are the diffusion space. ``mask`` (``{name: bool tensor}``)
    skips computing the mask. Every input is checked before anything is changed. ``train()`` computes the
    mask (unless given, loaded from ``mask_path`` or from the checkpoint resumed from), then runs
    ``Trainer``'s loop; ``save_model`` writes the UNet in diffusers format (``from_pretrained`` reloads it),
    the mask (``salun_mask.safetensors``) and the card; every checkpoint holds the mask too.
    """

    _name = "salun_diffusion"
    _paper = SALUN_PAPER
    _tag_names = ["salun", "weight-saliency", "diffusion", "concept-erasure"]
    config_class = SalUnDiffusionConfig

    def __init__(
        self,
        model=None,
        args: SalUnDiffusionConfig | None = None,
        noise_scheduler=None,
        forget_dataset=None,
        retain_dataset=None,
        text_encoder=None,
        tokenizer=None,
        vae=None,
        mask: dict[str, torch.Tensor] | None = None,
        callbacks=None,
        optimizers=(None, None),
        **kwargs,
    ):
        args = self.checked_args(args)
        copied = object.__new__(type(args))  # kind defaults are filled in on a copy
        copied.__dict__.update(args.__dict__)
        args = copied
        self.kind = unet_kind(model)
        for key, value in args.kind_defaults(self.kind).items():
            setattr(args, key, value)
        check_scheduler(noise_scheduler)
        if self.kind == "text":
            check_text_encoder(model, text_encoder, tokenizer)
        self.classes = None
        if self.kind == "class":
            n = model.config.num_class_embeds
            null = n - 1 if args.null_class is None else args.null_class
            if not 0 <= null < n:
                raise ValueError(f"null_class={null} is not a class of the UNet (num_class_embeds={n})")
            self.null_class = null
            self.classes = [c for c in range(n) if c != null]
        shape = expected_shape(model, vae)
        for name, ds in (("forget_dataset", forget_dataset), ("retain_dataset", retain_dataset)):
            self._check_dataset(ds, name, args, shape)
        if mask is not None:
            SaliencyMask(mask).attach(model).detach()  # ValueError unless it fits the UNet (nothing changes)
        self.mask = None if mask is None else SaliencyMask(mask)
        if self.mask is None and args.mask_path:
            self.mask = SaliencyMask.load(args.mask_path, model, args.mask_ratio)

        self.noise_scheduler, self.vae = noise_scheduler, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.forget_raw, self.retain_raw = forget_dataset, retain_dataset
        text_cols = (
            {"prompt": args.prompt_column, "pseudo_prompt": args.pseudo_prompt_column}
            if self.kind == "text"
            else {}
        )
        collator = DiffusionCollator(
            args.pixel_column, text_cols, args.class_column if self.kind == "class" else None
        )
        views = {"forget": forget_dataset.with_format("torch"), "retain": retain_dataset.with_format("torch")}
        train = PairedViews(views, primary="forget", seed=args.data_seed or args.seed)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=PairedCollator(None, collator=collator),
            callbacks=[*(callbacks or []), PairingEpochCallback(train)],
            optimizers=optimizers,
            **kwargs,
        )
        for frozen in (text_encoder, vae):
            if frozen is not None:
                frozen.requires_grad_(False).eval().to(self.args.device)
        self._prompt_cache: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------------------------- checks
    def _check_dataset(self, ds, name: str, args, shape: tuple[int, int, int]) -> None:
        from datasets import Dataset

        if ds is None:
            raise ValueError(f"{type(self).__name__} needs a {name}")
        if not isinstance(ds, Dataset):
            raise TypeError(f"{name} must be a datasets.Dataset, got {type(ds).__name__}")
        if len(ds) == 0:
            raise ValueError(f"{name} is empty")
        cond = args.class_column if self.kind == "class" else args.prompt_column
        for col in (args.pixel_column, cond):
            if col not in ds.column_names:
                raise ValueError(f"{name} has no column {col!r} (columns: {ds.column_names})")
        first = torch.as_tensor(ds.with_format("torch")[0][args.pixel_column])
        if tuple(first.shape) != shape:
            raise ValueError(
                f"{name}[{args.pixel_column!r}] rows have shape {tuple(first.shape)}, but the "
                f"model expects C×H×W = {shape} (unet.config in_channels/sample_size, through the VAE if given)"
            )
        if self.kind == "class":
            labels = [int(c) for c in ds[args.class_column]]
            known = set(self.classes)
            bad = sorted({c for c in labels if c not in known})
            if bad:
                raise ValueError(
                    f"{name}[{args.class_column!r}] holds {bad[:5]}, not among the UNet's classes "
                    f"{self.classes[0]}..{self.classes[-1]} (null class {self.null_class} excluded)"
                )
        else:
            cols = [args.prompt_column]
            if name == "forget_dataset" and args.pseudo_prompt_column in ds.column_names:
                cols.append(args.pseudo_prompt_column)
            for col in cols:
                if not all(isinstance(p, str) for p in ds[col]):
                    raise ValueError(f"{name}[{col!r}] must hold strings")

    # ----------------------------------------------------------------------------------- pieces
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings (B, L, D) as ``StableDiffusionPipeline.encode_prompt``: padding to
        ``tokenizer.model_max_length``, truncation, the attention mask when
        ``text_encoder.config.use_attention_mask``, output [0]. Each distinct prompt is encoded once, on
        its own (so its embedding does not depend on the batch it came in), and cached."""
        for p in dict.fromkeys(prompts):
            if p not in self._prompt_cache:
                tok = self.tokenizer(
                    [p],
                    padding="max_length",
                    max_length=self.tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                )
                device = self.args.device
                use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
                attn = tok.attention_mask.to(device) if use_mask else None
                with torch.no_grad():
                    self._prompt_cache[p] = self.text_encoder(tok.input_ids.to(device), attention_mask=attn)[
                        0
                    ][0]
        return torch.stack([self._prompt_cache[p] for p in prompts])

    @torch.no_grad()
    def latents(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_0: ``pixel_values`` itself without a VAE, else vae.encode(x).latent_dist.sample()·scaling_factor,
        the posterior sample drawn with ``generator`` (so a resumed run draws the same latents)."""
        if self.vae is None:
            return pixel_values
        x = pixel_values.to(self.vae.dtype)
        return self.vae.encode(x).latent_dist.sample(generator=generator) * self.vae.config.scaling_factor

    def predict(self, model, x_t: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        """ε_θ(x_t | c): ``cond`` are class ids (B,) or text embeddings (B, L, D)."""
        if self.kind == "class":
            return model(x_t, t, class_labels=cond).sample
        return model(x_t, t, encoder_hidden_states=cond).sample

    def conditions(self, batch: dict, generator: torch.Generator | None) -> tuple:
        """(c, c') of a forget batch: labels and pseudo labels, or prompt embeddings and pseudo-prompt
        embeddings (the row's ``pseudo_prompt``, else ``forget_target_prompt``)."""
        if self.kind == "class":
            c = batch["class_labels"]
            return c, pseudo_labels(c, self.classes, self.args.pseudo_label, generator)
        prompts = batch["prompt"]
        pseudo = batch.get("pseudo_prompt") or [self.args.forget_target_prompt] * len(prompts)
        return self.encode_prompts(prompts), self.encode_prompts(pseudo)

    def retain_condition(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """The retain rows' conditions, each replaced by ∅ with probability ``retain_cond_drop_prob``."""
        p, n = self.args.retain_cond_drop_prob, len(batch["pixel_values"])
        drop = (torch.rand(n, generator=generator) < p).tolist() if p > 0 else [False] * n
        if self.kind == "class":
            c = batch["class_labels"]
            return torch.where(torch.tensor(drop, device=c.device), torch.full_like(c, self.null_class), c)
        return self.encode_prompts(
            ["" if d else prompt for d, prompt in zip(drop, batch["prompt"], strict=True)]
        )

    def null_condition(self, n: int, device) -> torch.Tensor:
        """The unconditional condition ∅ for n rows: the null class, or the embedding of ''."""
        if self.kind == "class":
            return torch.full((n,), self.null_class, dtype=torch.long, device=device)
        return self.encode_prompts([""] * n)

    def noised(self, z0: torch.Tensor, generator: torch.Generator, antithetic: bool) -> tuple:
        """(x_t, t, ε) with t and ε drawn from ``generator`` (CPU) and x_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε."""
        T = self.noise_scheduler.config.num_train_timesteps
        t = draw_timesteps(z0.shape[0], T, generator, antithetic).to(z0.device)
        noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(z0.device, z0.dtype)
        return self.noise_scheduler.add_noise(z0, noise, t), t, noise

    def _generator(self) -> torch.Generator:
        """Seeded by (seed, global step, process, micro-batch): a resumed run draws what the uninterrupted
        run drew at the same step."""
        step = self.state.global_step
        self._draws = self._draws + 1 if getattr(self, "_draw_step", None) == step else 0
        self._draw_step = step
        return torch.Generator().manual_seed(
            hash((self.args.seed, step, self.args.process_index, self._draws)) % 2**63
        )

    # ----------------------------------------------------------------------------------- loss
    def unlearning_loss(self, model, inputs: dict) -> tuple[torch.Tensor, dict]:
        """forget_loss(ε_θ(x_t|c), sg ε_θ(x_t|c')) + β·ℓ_MSE on a retain batch (module docstring)."""
        gen, anti = self._generator(), self.args.antithetic_timesteps
        forget, retain = inputs["forget"], inputs["retain"]
        z_f = self.latents(forget["pixel_values"], gen)
        x_t, t, _ = self.noised(z_f, gen, anti)
        c, c_pseudo = self.conditions(forget, gen)
        with torch.no_grad():
            target = self.predict(model, x_t, t, c_pseudo)
        lf = forget_loss(self.predict(model, x_t, t, c), target)
        z_r = self.latents(retain["pixel_values"], gen)
        x_r, t_r, eps_r = self.noised(z_r, gen, anti)
        c_r = self.retain_condition(retain, gen)
        lr = denoising_loss(
            self.predict(model, x_r, t_r, c_r), diffusion_target(self.noise_scheduler, z_r, eps_r, t_r)
        )
        loss = lf + self.args.retain_weight * lr
        return loss, {"forget_loss": lf.detach(), "retain_loss": lr.detach()}

    # ----------------------------------------------------------------------------------- mask
    def mask_batch_loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """ℓ_f of Eq. 6 on one forget batch: the CFG prediction (``mask_guidance_scale``) for the forget
        condition against the diffusion target (``mask_reduction``), on x_t with t (antithetic with
        ``mask_antithetic``) and ε from ``generator``."""
        a = self.args
        z0 = self.latents(batch["pixel_values"], generator)
        x_t, t, eps = self.noised(z0, generator, a.mask_antithetic)
        c = batch["class_labels"] if self.kind == "class" else self.encode_prompts(batch["prompt"])
        cond = self.predict(model, x_t, t, c)
        if a.mask_guidance_scale != 1.0:
            cond = cfg_prediction(
                cond,
                self.predict(model, x_t, t, self.null_condition(len(x_t), x_t.device)),
                a.mask_guidance_scale,
            )
        return mask_loss(cond, diffusion_target(self.noise_scheduler, z0, eps, t), a.mask_reduction)

    def forget_gradients(self) -> dict[str, torch.Tensor]:
        """Σ over forget batches (in order, ``per_device_train_batch_size`` rows) of ∇ℓ_f at θ_o, each batch's
        gradient clipped to ``mask_clip_norm`` first when it is > 0 (DDPM reference). Signed sums."""
        a, views = self.args, self.train_dataset.views
        forget, bs = views["forget"], a.per_device_train_batch_size
        collate = self.data_collator.view_collator()
        device = a.device
        params = [p for p in self.model.parameters() if p.requires_grad]

        def batches():
            for i, start in enumerate(range(0, len(forget), bs)):
                rows = [forget[j] for j in range(start, min(start + bs, len(forget)))]
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in collate(rows).items()}
                yield batch, torch.Generator().manual_seed(hash((a.seed, -1, i)) % 2**63)

        def loss_fn(model, item):
            batch, gen = item
            loss = self.mask_batch_loss(model, batch, gen)
            return clipped_surrogate(loss, params, a.mask_clip_norm) if a.mask_clip_norm else loss

        sums, _ = accumulate_gradients(self.model, batches(), loss_fn)
        return sums

    def compute_mask(self) -> dict[str, torch.Tensor]:
        """m_S (Eq. 6): the global top-``mask_ratio`` of |Σ_b ∇ℓ_f|."""
        return saliency_mask(self.forget_gradients(), self.args.mask_ratio)

    # ----------------------------------------------------------------------------------- loop
    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Compute (or load) the mask, then ``Trainer.train()`` with the mask enforced."""
        if self.is_deepspeed_enabled:
            raise ValueError(
                "SalUnDiffusionTrainer does not support DeepSpeed: ZeRO keeps weights, gradients and optimizer "
                "state in partitioned buffers the saliency mask cannot reach; use DDP"
            )
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir})")
        if resume_from_checkpoint and (Path(resume_from_checkpoint) / MASK_FILE).is_file():
            self.mask = SaliencyMask.load(
                Path(resume_from_checkpoint) / MASK_FILE, self.model, self.args.mask_ratio
            )
        elif self.mask is None:
            self.mask = SaliencyMask(self.compute_mask())
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def create_optimizer(self, model=None):
        """Trainer's optimizer with the mask attached: non-salient gradients zeroed before each step and,
        with ``restore_unmasked``, non-salient weights restored (their optimizer state zeroed) after it."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        self.mask.attach(self.model, optimizer, restore=self.args.restore_unmasked)
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.mask.mask_gradients()  # before clipping: frozen entries take no share of the clipping norm
        return loss

    # ----------------------------------------------------------------------------------- saving
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """The UNet in diffusers format (``config.json`` + ``diffusion_pytorch_model.safetensors``) and the
        training arguments; ``UNet2D(Condition)Model.from_pretrained(output_dir)`` reloads it."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, safe_serialization=True)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Load the UNet weights of a checkpoint written by :meth:`_save`."""
        path = Path(resume_from_checkpoint) / UNET_WEIGHTS
        if not path.is_file():
            raise ValueError(f"checkpoint {resume_from_checkpoint} has no {UNET_WEIGHTS}")
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        target.load_state_dict(load_file(str(path), device="cpu"), strict=True)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """UNet (diffusers format) + mask + card into ``output_dir`` (also for every checkpoint)."""
        super().save_model(output_dir, _internal_call)
        if self.mask is not None and self.args.should_save:
            out = Path(output_dir or self.args.output_dir)
            self.mask.save(
                out / MASK_FILE, self.accelerator.unwrap_model(self.model), mask_ratio=self.args.mask_ratio
            )

    def card_task(self, model) -> tuple[str, str]:
        kind = "text-to-image" if self.kind == "text" else "unconditional-image-generation"
        return kind, type(self.accelerator.unwrap_model(model)).__name__

    def create_model_card(self, model_name=None, tags=None, output_dir: str | None = None, **kwargs):
        """MethodTrainer's card, with diffusers as the library and a diffusers loading snippet."""
        super().create_model_card(model_name, tags, output_dir=output_dir, **kwargs)
        path = Path(output_dir or self.args.output_dir) / "README.md"
        if not self.is_world_process_zero() or not path.is_file():
            return
        from huggingface_hub import ModelCard

        card = ModelCard.load(path)
        card.data.library_name = "diffusers"
        cls = type(self.accelerator.unwrap_model(self.model)).__name__
        start = card.text.find(f"from transformers import {cls}, AutoTokenizer")
        end = card.text.find("```", start)
        if start >= 0 and end >= 0:
            repo = self.args.hub_model_id or "path/to/this/folder"
            snippet = f'from diffusers import {cls}\n\nunet = {cls}.from_pretrained("{repo}")\n'
            card.text = card.text[:start] + snippet + card.text[end:]
        card.save(path)

    def card_notes(self) -> str | None:
        a = self.args
        lines = [
            "### SalUn (diffusion)",
            f"- UNet kind: {'class-conditional (DDPM)' if self.kind == 'class' else 'text-conditional (Stable Diffusion)'}",
            f"- mask ratio r = {a.mask_ratio} (global top-r of |∇ forget diffusion loss|, CFG s = "
            f"{a.mask_guidance_scale}, per-batch clip {a.mask_clip_norm or 'off'}, antithetic t {a.mask_antithetic}, "
            f"reduction {a.mask_reduction})",
            f"- forget target: {('pseudo class ' + a.pseudo_label) if self.kind == 'class' else repr(a.forget_target_prompt) + ' (or the pseudo_prompt column)'}"
            f", retain weight β = {a.retain_weight}",
        ]
        if self.mask is not None:
            lines.append(f"- salient weights: {self.mask.num_salient:,} of {self.mask.num_entries:,}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ input checks
def unet_kind(model) -> str:
    """'class' for a ``UNet2DModel`` with class embeddings, 'text' for a ``UNet2DConditionModel``;
    ``TypeError`` / ``ValueError`` otherwise."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    if isinstance(model, UNet2DConditionModel):
        return "text"
    if isinstance(model, UNet2DModel):
        n = getattr(model.config, "num_class_embeds", None)
        if n is None or getattr(model.config, "class_embed_type", None) is not None:
            raise ValueError(
                "SalUnDiffusionTrainer needs a class-conditional UNet2DModel (num_class_embeds set, "
                "class_embed_type None): this UNet2DModel has no class embeddings"
            )
        if n < 3:
            raise ValueError(f"num_class_embeds={n}: SalUn needs at least 2 real classes plus the null class")
        return "class"
    raise TypeError(
        f"model must be a diffusers UNet2DModel (class-conditional) or UNet2DConditionModel, got {type(model).__name__}"
    )


def check_scheduler(scheduler) -> None:
    if scheduler is None:
        raise ValueError("SalUnDiffusionTrainer needs a noise_scheduler (e.g. diffusers.DDPMScheduler)")
    if not hasattr(scheduler, "add_noise") or not hasattr(
        getattr(scheduler, "config", None), "num_train_timesteps"
    ):
        raise TypeError(
            f"noise_scheduler must be a diffusers training scheduler with add_noise, got {type(scheduler).__name__}"
        )
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(
            f"noise_scheduler has prediction_type={kind!r}; expected epsilon, v_prediction or sample"
        )


def check_text_encoder(unet, text_encoder, tokenizer) -> None:
    if text_encoder is None or tokenizer is None:
        raise ValueError("a UNet2DConditionModel needs text_encoder and tokenizer (to encode the prompts)")
    dim, hidden = unet.config.cross_attention_dim, getattr(text_encoder.config, "hidden_size", None)
    if isinstance(dim, int) and hidden is not None and hidden != dim:
        raise ValueError(f"text_encoder hidden_size {hidden} != the UNet's cross_attention_dim {dim}")


def expected_shape(unet, vae) -> tuple[int, int, int]:
    """C×H×W of ``pixel_values``: the UNet's sample shape, or the images the VAE encodes into it."""
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if vae is None:
        return (unet.config.in_channels, h, w)
    if vae.config.latent_channels != unet.config.in_channels:
        raise ValueError(
            f"vae latent_channels {vae.config.latent_channels} != unet in_channels {unet.config.in_channels}"
        )
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    return (vae.config.in_channels, h * f, w * f)


__all__ = [
    "SalUnDiffusionConfig",
    "SalUnDiffusionTrainer",
    "cfg_prediction",
    "denoising_loss",
    "forget_loss",
    "mask_loss",
    "pseudo_labels",
    "sample_class_conditional",
]
