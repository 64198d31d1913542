"""SalUn's weight-saliency mask (Fan et al., ICLR 2024, "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", Eq. 6):

    m_S = 1( |∇_θ ℓ_f(θ; D_f)|_{θ=θ_o} ≥ γ ),

with γ chosen so that a fraction r of *all* parameters is salient: one global ranking over the
concatenation of every parameter tensor, biases and norm weights included (not per layer; as in
``Classification/generate_mask.py::save_gradient_ratio``). As in the reference code the
gradient is the sum of batch-mean gradients over the forget batches, with its sign, and the absolute value
is taken at the end, so per-batch gradients can cancel.

Masks are dicts ``{parameter name: bool tensor of the parameter's shape}`` (True = salient = may change).
:class:`SaliencyMask` holds one and enforces it on any module and optimizer (a classifier in
``SalUnTrainer``, a diffusion UNet in a plain training loop): it masks the gradients, and after every
optimizer step puts the non-salient weights back and zeroes their optimizer state. Mask files are
safetensors read and checked with :mod:`hf_unlearn.importance.io`, like SSD's importance files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from .io import check_fits_parameters, load_safetensors_checked


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


class SaliencyMask:
    """A weight-saliency mask m_S enforced on a module and its optimizer: only salient weights move.

    ``mask`` maps parameter names (as in ``module.named_parameters()``) to bool tensors of the parameters'
    shapes, True = salient. :meth:`attach` remembers the current (original) values θ_o of the non-salient
    entries and hooks into the optimizer:

    - before every ``optimizer.step()`` the gradients of non-salient entries are zeroed
      (:meth:`mask_gradients`; call it yourself right after ``backward()`` to mask before gradient
      clipping, as ``SalUnTrainer`` does, so that frozen entries take no share of the clipping norm);
    - after every step, with ``restore=True``, the non-salient entries are set back to θ_o and their
      optimizer state (momentum buffers, Adam moments: every state tensor of the parameter's shape) is
      zeroed, so weight decay and momentum cannot move them either (salun.md pitfall 1; the reference
      code's 2026 fix, PR #33).

    So after any number of steps the non-salient entries equal θ_o bit for bit (with ``restore=True``).
    Parameters the mask does not name are left alone. Works with any ``torch.optim.Optimizer``
    (and the optimizer inside accelerate's wrapper).

    Example (a plain loop)::

        mask = SaliencyMask.from_gradients(grads, ratio=0.5)        # or SaliencyMask.load(path, unet)
        mask.attach(unet, optimizer)
        for batch in loader:
            loss(unet, batch).backward()
            optimizer.step()                                          # masked, then restored
            optimizer.zero_grad()
        mask.detach()
    """

    def __init__(self, mask: dict[str, torch.Tensor]):
        self.mask = {n: m.bool() for n, m in mask.items()}
        self._frozen: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []
        self._handles: list = []

    @classmethod
    def from_gradients(cls, gradients: dict[str, torch.Tensor], ratio: float) -> SaliencyMask:
        """The global top-``ratio`` mask of |gradients| (:func:`saliency_mask`)."""
        return cls(saliency_mask(gradients, ratio))

    # ------------------------------------------------------------------------------ a dict of masks
    def __getitem__(self, name: str) -> torch.Tensor:
        return self.mask[name]

    def __iter__(self):
        return iter(self.mask)

    def __len__(self) -> int:
        return len(self.mask)

    def items(self):
        return self.mask.items()

    @property
    def num_salient(self) -> int:
        """How many entries may change."""
        return sum(int(m.sum()) for m in self.mask.values())

    @property
    def num_entries(self) -> int:
        return sum(m.numel() for m in self.mask.values())

    # ------------------------------------------------------------------------------- enforcement
    def attach(self, module: torch.nn.Module, optimizer=None, restore: bool = True) -> SaliencyMask:
        """Enforce the mask on ``module``'s parameters from now on; returns ``self``.

        Records θ_o of the non-salient entries (their current values). With ``optimizer`` (a
        ``torch.optim.Optimizer``), registers :meth:`mask_gradients` as its step pre-hook and, with
        ``restore``, :meth:`restore` as its step post-hook. Attaching again first detaches. ``ValueError``
        when the mask does not name exactly the module's trainable parameters with their shapes.
        """
        self.detach()
        params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        _check_fits(self.mask, params, "saliency mask", type(module).__name__)
        named = dict(module.named_parameters())
        for n, m in self.mask.items():
            p = named[n]
            frozen = ~_shard_like(m, p)
            self._frozen.append((p, frozen, _local(p).detach()[frozen].clone()))
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(lambda opt, *_: self.mask_gradients()))
            if restore:
                self._handles.append(optimizer.register_step_post_hook(lambda opt, *_: self.restore(opt)))
        return self

    def is_attached_to(self, module: torch.nn.Module) -> bool:
        """Whether the recorded parameters are ``module``'s current parameter objects (FSDP2's
        ``fully_shard`` replaces them with sharded ones, so a mask attached before it must be attached
        again)."""
        named = dict(module.named_parameters())
        return len(self._frozen) == len(self.mask) and all(
            named.get(n) is p for n, (p, _, _) in zip(self.mask, self._frozen, strict=True)
        )

    def detach(self) -> None:
        """Remove the optimizer hooks and forget θ_o (the module's weights stay as they are)."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._frozen = [], []

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of the non-salient entries (in place; parameters without a gradient are
        skipped)."""
        for p, frozen, _ in self._frozen:
            if p.grad is not None:
                _local(p.grad)[frozen] = 0

    @torch.no_grad()
    def restore(self, optimizer=None) -> None:
        """Set the non-salient entries back to θ_o and zero their state in ``optimizer`` (every state
        tensor of the parameter's shape: momentum buffers, Adam moments)."""
        for p, frozen, theta0 in self._frozen:
            _local(p)[frozen] = theta0
            if optimizer is None:
                continue
            for value in optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    _local(value)[frozen] = 0

    # -------------------------------------------------------------------------------------- files
    def save(self, path, model=None, **meta) -> None:
        """Store the mask as safetensors (bool tensors); ``meta`` (JSON-encoded) and the class name of
        ``model`` go into the file's metadata (``mask_ratio=r`` lets :meth:`load` refuse another ratio)."""
        info = {k: json.dumps(v) for k, v in meta.items()}
        if model is not None:
            info["architecture"] = json.dumps(type(model).__name__)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file({n: m.contiguous().cpu() for n, m in self.mask.items()}, str(path), info)

    @classmethod
    def load(cls, path, module, mask_ratio: float | None = None) -> SaliencyMask:
        """Read a mask written by :meth:`save` (or any safetensors file of 0/1 tensors) for ``module``.

        It must name exactly the module's trainable parameters, with their shapes. With ``mask_ratio``,
        a mask saved with another ratio is refused (a resumed or re-run SalUn with a new r must not
        silently keep the old mask). ``FileNotFoundError`` / ``ValueError`` otherwise.
        """
        path = Path(path)
        tensors, meta = load_safetensors_checked(path, "saliency mask")
        try:
            saved = json.loads(meta["mask_ratio"]) if "mask_ratio" in meta else None
        except json.JSONDecodeError as e:
            raise ValueError(f"saliency mask {path} has metadata that save() did not write: {e}") from e
        if mask_ratio is not None and saved is not None and saved != mask_ratio:
            raise ValueError(
                f"saliency mask {path} was computed with mask_ratio={saved}, but this run has "
                f"mask_ratio={mask_ratio}: set mask_ratio={saved} to reuse it, or start from a fresh "
                "output_dir (or drop mask_path) to compute a mask with the new ratio"
            )
        params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        _check_fits(tensors, params, f"saliency mask {path.name}", type(module).__name__)
        not_binary = [
            n for n, t in tensors.items() if t.dtype != torch.bool and not ((t == 0) | (t == 1)).all()
        ]
        if not_binary:
            raise ValueError(
                f"saliency mask {path} holds values other than 0/1 in {not_binary[:2]}: it is not a mask"
            )
        return cls(tensors)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of an FSDP2 ``DTensor`` (a view: writes reach the parameter), else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _shard_like(mask: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The entries of the whole ``mask`` that this process holds of ``p``: the whole mask for a plain
    parameter, the shard cut as the ``DTensor``'s placements cut the parameter (no communication: every
    process holds the same whole mask)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(p, DTensor):
        return mask.to(p.device)
    whole = mask.to(p.to_local().device)
    return distribute_tensor(whole, p.device_mesh, p.placements, src_data_rank=None).to_local()


def _check_fits(tensors: dict, params: dict, what: str, model_name: str) -> None:
    """``ValueError`` naming ``what`` unless ``tensors`` has one tensor per parameter, of its shape."""
    try:
        check_fits_parameters(tensors, params, "the mask")
    except ValueError as e:
        raise ValueError(
            f"{what} does not fit {model_name}; was it computed for a different architecture? ({e})"
        ) from e


def save_mask(mask: dict[str, torch.Tensor], path, model=None, **info) -> None:
    """Store a mask as safetensors (:meth:`SaliencyMask.save`)."""
    SaliencyMask(mask).save(path, model, **info)


def load_mask(path, model, mask_ratio: float | None = None) -> dict[str, torch.Tensor]:
    """The ``{name: bool tensor}`` dict of :meth:`SaliencyMask.load`."""
    return SaliencyMask.load(path, model, mask_ratio).mask
