"""Noise-prediction fine-tuning of a text-to-image UNet: RealEra's LoRA stage and ESD-x.

Both train the UNet so that, on noisy latents x_t of the erased concept, its noise prediction under the
concept's conditioning c matches a target computed by a frozen copy ε₀ (stop-gradient):

* **RealEra, stage 4** ("prediction-noise alignment with a LoRA module"; Liu et al., arXiv 2410.09140;
  the equation was not available, this is the reconstruction of ``../shared/methods/realera.md`` A.4-5)::

      L = mean_{ẽ ∈ {c} ∪ N(c)} ‖ε_{θ+Δ}(x_t, t, ẽ) − ε₀(x_t, t, anchor)‖²
        + β · mean_{b ∈ B} ‖ε_{θ+Δ}(x_t, t, b) − ε₀(x_t, t, b)‖²                    (:func:`alignment_loss`)

  with Δ a LoRA on the UNet, ε₀ the UNet before the stage (adapter disabled), N(c) the mined
  neighbours and B the beyond-concept samples and preserve concepts, x_t = q(x_0, t) for x_0 latents
  the frozen model generates from the concept's prompt.
* **ESD-x** (Gandikota et al., "Erasing Concepts from Diffusion Models", ICCV 2023, Eq. 3 and its
  ``esd_sd.py``): x_t is the frozen model's own DDIM trajectory for c, stopped at a random step k, and ::

      L = ‖ε_θ(x_t, t, c) − [ε₀(x_t, t, c) − η (ε₀(x_t, t, c) − ε₀(x_t, t, ∅))]‖²    (:func:`esd_target`)

  trained on the cross-attention parameters only (``attn2``: to_q, to_k, to_v, to_out — "esd-x";
  "esd-x-strict": to_k and to_v).
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

ESD_MODES = {
    "esd-x": r"attn2\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$",
    "esd-x-strict": r"attn2\.(to_k|to_v)\.(weight|bias)$",
}
LORA_TARGETS = r".*attn2\.(to_q|to_k|to_v|to_out\.0)$"  # peft target_modules regex: the cross-attention


def esd_target(eps_c: torch.Tensor, eps_uncond: torch.Tensor, negative_guidance: float) -> torch.Tensor:
    """ESD's target ε₀(c) − η (ε₀(c) − ε₀(∅)): the frozen prediction pushed *away* from the concept."""
    return eps_c - negative_guidance * (eps_c - eps_uncond)


def alignment_loss(
    pred_erase: torch.Tensor,
    target_anchor: torch.Tensor,
    pred_beyond: torch.Tensor | None = None,
    target_beyond: torch.Tensor | None = None,
    beyond_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """RealEra stage 4's loss: MSE of the erase predictions to the anchor's frozen prediction, plus
    β · MSE of the beyond predictions to their own frozen predictions. Returns (loss, logged terms)."""
    erase = nn.functional.mse_loss(pred_erase, target_anchor)
    logs = {"erase": float(erase.detach())}
    if pred_beyond is None or len(pred_beyond) == 0:
        return erase, logs
    beyond = nn.functional.mse_loss(pred_beyond, target_beyond)
    logs["beyond"] = float(beyond.detach())
    return erase + beyond_weight * beyond, logs


def esd_parameters(unet: nn.Module, mode: str = "esd-x") -> dict[str, nn.Parameter]:
    """The parameters ESD trains: every cross-attention (``attn2``) projection (``esd-x``) or only its
    key/value maps (``esd-x-strict``). ``ValueError`` for an unknown mode or a UNet without them."""
    if mode not in ESD_MODES:
        raise ValueError(f"ESD mode must be one of {tuple(ESD_MODES)}, got {mode!r}")
    pattern = re.compile(ESD_MODES[mode])
    params = {n: p for n, p in unet.named_parameters() if pattern.search(n)}
    if not params:
        raise ValueError(f"{type(unet).__name__} has no cross-attention (attn2) parameters for {mode}")
    return params


def _cfg(unet, latents, t, cond, uncond, guidance_scale):
    """Classifier-free guided ε: ε(∅) + w (ε(c) − ε(∅)) in one batched UNet call."""
    n = len(latents)
    eps = unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    eps_u, eps_c = eps[:n], eps[n:]
    return eps_u + guidance_scale * (eps_c - eps_u)


@torch.no_grad()
def partial_denoise(
    unet,
    scheduler,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    shape: tuple[int, ...],
    num_inference_steps: int,
    stop_at: int | None = None,
    guidance_scale: float = 3.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run DDIM with guidance from pure noise for ``stop_at`` of ``num_inference_steps`` steps (all by
    default) as ``StableDiffusionPipeline.__call__`` does, on a copy of ``scheduler``.

    Returns (latents, t): the latents after ``stop_at`` steps and the timestep they are at (the next
    step's t; for a full run, the last step's t). ``cond``/``uncond`` are (1, L, d) or (B, L, d).
    """
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps
    stop_at = len(timesteps) if stop_at is None else stop_at
    param = next(unet.parameters())
    latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(param.device, param.dtype)
    latents = latents * scheduler.init_noise_sigma
    cond = cond.expand(shape[0], -1, -1).to(param.dtype)
    uncond = uncond.expand(shape[0], -1, -1).to(param.dtype)
    for t in timesteps[:stop_at]:
        eps = _cfg(unet, scheduler.scale_model_input(latents, t), t, cond, uncond, guidance_scale)
        latents = scheduler.step(eps, t, latents).prev_sample
    t_next = timesteps[min(stop_at, len(timesteps) - 1)]
    return latents, t_next


def _check_finite(loss: torch.Tensor, step: int, what: str) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"{what}: the loss is {float(loss.detach())} at step {step}; lower the learning rate (the pipeline's "
            "weights were restored to their state before erase)"
        )


def _optimizer_step(optimizer, loss: torch.Tensor, step: int, what: str, progress=None) -> float:
    """Check ``loss`` is finite, take one optimizer step on it, advance the progress bar; returns the loss."""
    _check_finite(loss, step, what)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    value = float(loss.detach())
    if progress is not None:
        progress.update(1)
        progress.set_postfix(loss=f"{value:.4f}")
    return value


def add_lora(unet, rank: int, alpha: float, target_modules: str = LORA_TARGETS) -> str:
    """Add a fresh LoRA adapter (peft, through diffusers' ``add_adapter``) to ``unet``; only its weights
    train. Returns the adapter's name (``realera``, or ``realera_<n>`` when that name is taken)."""
    from peft import LoraConfig

    taken = set(getattr(unet, "peft_config", {}) or {})
    name = next(n for n in ("realera", *(f"realera_{i}" for i in range(2, 1000))) if n not in taken)
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules, init_lora_weights=True),
        adapter_name=name,
    )
    unet.set_adapter(name)
    for n, p in unet.named_parameters():
        p.requires_grad_(f".{name}." in n)
    return name


def train_lora_alignment(
    unet,
    scheduler,
    x0: torch.Tensor,
    erase_states: torch.Tensor,
    anchor_states: torch.Tensor,
    keep_states: torch.Tensor,
    *,
    erase_groups: torch.Tensor,
    keep_groups: torch.Tensor,
    steps: int,
    lr: float,
    batch_size: int,
    beyond_weight: float,
    generator: torch.Generator,
    progress=None,
) -> list[float]:
    """Stage 4 on a UNet that carries an active LoRA adapter (:func:`add_lora`): ``steps`` AdamW steps
    of :func:`alignment_loss`.

    ``x0`` (K, M, C, H, W): M latents of each of the K erased concepts; ``erase_states`` (E, L, d): the
    concepts' and their neighbours' encodings, row e paired with ``anchor_states[e]`` and with the
    latents of concept ``erase_groups[e]``; ``keep_states`` (B, L, d): beyond samples and preserve
    concepts, kept at their own frozen prediction on the latents of concept ``keep_groups[b]`` (B may
    be 0). Each step draws ``batch_size`` erase rows and, if B > 0, as many kept rows, each with its own
    x_0, t and ε. Returns the loss of every step.
    """
    trainable = [p for p in unet.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the UNet has no trainable LoRA parameters (call add_lora first)")
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    param = trainable[0]
    T = scheduler.config.num_train_timesteps
    groups = [(erase_states, anchor_states, erase_groups)]
    if len(keep_states):
        groups.append((keep_states, keep_states, keep_groups))
    losses = []
    unet.train()
    for step in range(steps):
        inputs, targets = [], []
        for states, target_states, concept_of in groups:
            rows = torch.randint(0, len(states), (batch_size,), generator=generator)
            which = torch.randint(0, x0.shape[1], (batch_size,), generator=generator)
            x = x0[concept_of[rows], which]
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            t = torch.randint(0, T, (batch_size,), generator=generator)
            xt = scheduler.add_noise(x, noise, t).to(param.device, param.dtype)
            t = t.to(param.device)
            with torch.no_grad():
                unet.disable_adapters()
                try:
                    target = unet(xt, t, encoder_hidden_states=target_states[rows].to(xt)).sample
                finally:
                    unet.enable_adapters()
            inputs.append((xt, t, states[rows].to(xt)))
            targets.append(target)
        preds = [unet(xt, t, encoder_hidden_states=c).sample for xt, t, c in inputs]
        if len(preds) == 2:
            loss, _ = alignment_loss(preds[0], targets[0], preds[1], targets[1], beyond_weight)
        else:
            loss, _ = alignment_loss(preds[0], targets[0])
        losses.append(_optimizer_step(optimizer, loss, step, "RealEra LoRA stage", progress))
    unet.eval()
    optimizer.zero_grad(set_to_none=True)
    return losses


def train_esd(
    unet,
    scheduler,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    latent_shape: tuple[int, ...],
    *,
    steps: int,
    lr: float,
    negative_guidance: float,
    guidance_scale: float,
    num_inference_steps: int,
    mode: str,
    generator: torch.Generator,
    progress=None,
) -> list[float]:
    """ESD-x (``esd_sd.py``'s loop) on ``unet`` in place; a frozen copy gives x_t and the targets.

    ``cond`` (C, L, d): the erased prompts' encodings (one drawn per step), ``uncond`` (1, L, d); each
    step samples k ~ U{0..num_inference_steps − 1}, runs the frozen model's guided DDIM trajectory for k
    steps (batch ``latent_shape[0]``) and takes one Adam step on the ESD parameters. Returns the losses.
    """
    params = esd_parameters(unet, mode)
    frozen = copy.deepcopy(unet).eval().requires_grad_(False)
    flags = {n: p.requires_grad for n, p in unet.named_parameters()}
    for n, p in unet.named_parameters():
        p.requires_grad_(n in params)
    optimizer = torch.optim.Adam(list(params.values()), lr=lr)
    losses = []
    try:
        unet.train()
        for step in range(steps):
            c = cond[int(torch.randint(0, len(cond), (1,), generator=generator))][None]
            k = int(torch.randint(0, num_inference_steps, (1,), generator=generator))
            xt, t = partial_denoise(
                frozen, scheduler, c, uncond, latent_shape, num_inference_steps, k, guidance_scale, generator
            )
            n = latent_shape[0]
            with torch.no_grad():
                eps = frozen(
                    torch.cat([xt, xt]),
                    t,
                    encoder_hidden_states=torch.cat([c, uncond]).repeat_interleave(n, 0),
                ).sample
                target = esd_target(eps[:n], eps[n:], negative_guidance)
            loss = nn.functional.mse_loss(
                unet(xt, t, encoder_hidden_states=c.expand(n, -1, -1)).sample, target
            )
            losses.append(_optimizer_step(optimizer, loss, step, "ESD", progress))
    finally:
        unet.eval()
        optimizer.zero_grad(set_to_none=True)
        for n, p in unet.named_parameters():
            p.requires_grad_(flags[n])
    return losses
