"""SalUn's weight-saliency mask (Fan et al., ICLR 2024, "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", Eq. 6):

    m_S = 1( |∇_θ ℓ_f(θ; D_f)|_{θ=θ_o} ≥ γ ),

with γ chosen so that a fraction r of *all* parameters is salient: one global ranking over the
concatenation of every parameter tensor (not per layer; salun.md pitfall 7). As in the reference code the
gradient is the sum of batch-mean gradients over the forget batches, with its sign, and the absolute value
is taken at the end, so per-batch gradients can cancel.

Masks are dicts ``{parameter name: bool tensor of the parameter's shape}`` (True = salient = may change).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def accumulate_gradients(
    model, batches: Iterable[dict[str, torch.Tensor]], loss_fn: Callable
) -> tuple[dict[str, torch.Tensor], int]:
    """(Σ_b ∇_θ loss_fn(model, batch_b), number of batches), signed fp32 sums keyed by parameter name.

    The model is in eval mode during the pass (as in the reference ``generate_mask.py``) and restored after.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count, was_training = 0, model.training
    model.eval()
    try:
        with torch.enable_grad():
            for batch in batches:
                model.zero_grad(set_to_none=True)
                loss_fn(model, batch).backward()
                for n, p in params.items():
                    if p.grad is not None:
                        sums[n] += p.grad.detach().float()
                count += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return sums, count


def saliency_mask(gradients: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Global top-r mask of |gradient|: exactly ``int(N·r)`` of the N entries are True (ties broken by
    position), whatever tensor they live in."""
    if not 0 < ratio <= 1:
        raise ValueError(f"mask ratio must be in (0, 1], got {ratio}")
    names = list(gradients)
    flat = torch.cat([gradients[n].detach().abs().flatten().float() for n in names])  # (N,)
    k = int(flat.numel() * ratio)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        # stable descending sort: equal scores keep their order, so the mask is deterministic
        keep[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
    out, start = {}, 0
    for n in names:
        size = gradients[n].numel()
        out[n] = keep[start : start + size].view_as(gradients[n])
        start += size
    return out


def save_mask(mask: dict[str, torch.Tensor], path, model=None, **info) -> None:
    """Store a mask as safetensors (bool tensors); ``info`` and the model class go into the metadata."""
    meta = {k: json.dumps(v) for k, v in info.items()}
    if model is not None:
        meta["architecture"] = json.dumps(type(model).__name__)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({n: m.contiguous().cpu() for n, m in mask.items()}, str(path), meta)


def load_mask(path, model, mask_ratio: float | None = None) -> dict[str, torch.Tensor]:
    """Load a mask saved by :func:`save_mask`; it must name exactly the model's trainable parameters,
    with the same shapes. With ``mask_ratio``, a mask saved with another ratio is refused (a resumed or
    re-run SalUn with a new r must not silently keep the old mask)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saliency mask at {path}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    saved = json.loads(meta["mask_ratio"]) if "mask_ratio" in meta else None
    if mask_ratio is not None and saved is not None and saved != mask_ratio:
        raise ValueError(
            f"saliency mask {path} was computed with mask_ratio={saved}, but this run has "
            f"mask_ratio={mask_ratio}: set mask_ratio={saved} to reuse it, or start from a fresh output_dir "
            "(or drop mask_path) to compute a mask with the new ratio"
        )
    mask = load_file(str(path))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    bad = sorted(set(params) ^ set(mask)) + [
        n for n in set(params) & set(mask) if tuple(mask[n].shape) != tuple(params[n].shape)
    ]
    if bad:
        raise ValueError(
            f"saliency mask {path.name} does not fit {type(model).__name__}: {len(bad)} parameters differ "
            f"(e.g. {bad[:2]}); it was computed for a different architecture"
        )
    return {n: m.bool() for n, m in mask.items()}
