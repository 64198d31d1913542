"""SSD's importances (Foster et al., 2024, "Fast Machine Unlearning Without Retraining Through Selective
Synaptic Dampening", Sec. 3): a diagonal Fisher estimate per parameter, the selection I_f > α·I_D and
the dampening θ ← min(λ·I_D / I_f, 1)·θ.

Importances are dicts ``{parameter name: fp32 tensor of the parameter's shape}``, keyed by name (not by
position), and can be stored as safetensors so that I_D, computed once on the full training data, serves
later forget requests without the data.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from .io import check_fits_parameters, format_names, load_safetensors_checked

DEFINITIONS = ("batch", "per_sample")


def importance_loss(model, batch: dict[str, torch.Tensor], label_free: bool = False) -> torch.Tensor:
    """The scalar whose gradients measure importance.

    - default: the loss the model's forward returns for the labelled batch (classifier cross-entropy,
      causal-LM answer-token NLL), as in the reference code;
    - ``label_free`` (LFSSD): the batch mean of the squared L2 norm of the output logits, no labels used.
      For a causal LM the squared norm is averaged over each sequence's real (attention-masked) tokens.
    """
    if not label_free:
        out = model(**batch)
        if getattr(out, "loss", None) is None:
            raise ValueError(
                f"{type(model).__name__}'s forward returned no loss for this batch; SSD needs labels "
                "(or label_free=True)"
            )
        return out.loss
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
    sq = logits.pow(2).sum(-1)  # (B,) for classifiers, (B, L) for causal LMs
    if sq.dim() == 2:
        mask = batch.get("attention_mask", torch.ones_like(sq)).to(sq.dtype)
        sq = (sq * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return sq.mean()


def _single_rows(batch: dict[str, torch.Tensor]):
    n = next(iter(batch.values())).shape[0]
    for i in range(n):
        yield {k: v[i : i + 1] for k, v in batch.items()}


def per_sample_gradients(
    model, params: dict, batch: dict[str, torch.Tensor], label_free: bool = False
) -> dict:
    """∂ℓ_i/∂θ for every sample i of the batch at once with ``torch.func`` (vmap over grad):
    {name: (B, *param.shape)}. Raises if the model's forward cannot be vmapped (data-dependent control
    flow, as in many causal LMs); callers then fall back to one backward pass per sample."""
    from torch.func import functional_call, grad, vmap

    buffers = dict(model.named_buffers())

    def loss_one(p, sample):
        row = {k: v.unsqueeze(0) for k, v in sample.items()}

        class _Call(torch.nn.Module):  # importance_loss calls model(**batch); route it through p
            def forward(self, **kw):
                return functional_call(model, (p, buffers), args=(), kwargs=kw)

        return importance_loss(_Call(), row, label_free)

    return vmap(grad(loss_one), in_dims=(None, 0))(params, batch)


def accumulate_importance(
    model,
    batches: Iterable[dict[str, torch.Tensor]],
    definition: str = "batch",
    label_free: bool = False,
    vectorize: bool = True,
) -> tuple[dict[str, torch.Tensor], int]:
    """Sums of squared gradients (|gradients| if ``label_free``) and how many terms were summed.

    - ``"batch"`` (reference code): one term per mini-batch, the square of the batch-mean gradient; its
      scale depends on the batch size (``src/ssd.py::ParameterPerturber.calc_importance``; α was tuned
      with batch 64 or 128).
    - ``"per_sample"``: one term per sample, the square of that sample's gradient (the empirical Fisher
      E[(∂ℓ/∂θ)²]); independent of the batch size. Computed with ``torch.func.vmap`` when the model
      allows it (``vectorize``; memory B × parameters), else with one backward pass per sample.

    The model is put in eval mode (BatchNorm running statistics, no dropout) and restored afterwards;
    sums are fp32. Returning (sums, count) lets distributed callers reduce both before dividing. For
    parameters sharded by FSDP2 (``DTensor``) the sums are this process's shards (callers gather them).
    """
    if definition not in DEFINITIONS:
        raise ValueError(f"importance definition must be one of {DEFINITIONS}, got {definition!r}")
    params = trainable_parameters(model)
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}  # sharded like p (FSDP2)
    count, was_training = 0, model.training
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in params.values()):
        vectorize = False  # FSDP2-sharded parameters: torch.func cannot call through FSDP's hooks
    model.eval()

    def add(name, g):
        g = g.detach().float()
        sums[name] += g.abs() if label_free else g.pow(2)

    try:
        for batch in batches:
            if definition == "per_sample" and vectorize:
                try:
                    grads = per_sample_gradients(
                        model, {n: p.detach() for n, p in params.items()}, batch, label_free
                    )
                except Exception:  # noqa: BLE001 - any vmap limitation: use the exact per-sample loop
                    vectorize = False
                else:
                    for n, g in grads.items():  # g: (B, *shape)
                        g = g.detach().float()
                        sums[n] += (g.abs() if label_free else g.pow(2)).sum(0)
                    count += next(iter(batch.values())).shape[0]
                    continue
            for part in _single_rows(batch) if definition == "per_sample" else [batch]:
                model.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    importance_loss(model, part, label_free).backward()
                for n, p in params.items():
                    if p.grad is not None:
                        add(n, p.grad)
                count += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return sums, count


def dampening_factors(
    i_full: torch.Tensor, i_forget: torch.Tensor, alpha: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD Eq. (selection and dampening) for one parameter tensor.

    Returns (selected, beta): ``selected = I_f > α·I_D`` (strict) and, on the selected entries only,
    β = min(λ·I_D / I_f, 1) (so no weight grows; I_f > 0 there, so no inf/NaN). Shapes: selected like the
    parameter, beta (number of selected,).
    """
    selected = i_forget > alpha * i_full
    beta = (lam * i_full[selected] / i_forget[selected]).clamp(max=1.0)
    return selected, beta


def adaptive_alpha(i_full: dict, i_forget: dict, percentile: float = 99.0) -> float:
    """Adaptive SSD's selection weighting (Schoepf, Foster & Brintrup, 2024, "Parameter-tuning-free data entry
    error unlearning with adaptive selective synaptic dampening", arXiv 2402.10098): α is a percentile of the
    relative importances r_i = I_f,i / I_D,i over every parameter element, so the edit selects the elements
    whose forget importance stands out against the network's own distribution instead of a hand-tuned
    multiple of I_D:

        α = the ``percentile``-th percentile of {I_f,i / I_D,i : I_D,i > 0}   (linear interpolation).

    Elements with I_D,i = 0 have no finite ratio and are left out (they are still selected whenever
    I_f,i > 0, as with any α). Computed in float64 over all tensors.
    """
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be in (0, 100), got {percentile}")
    ratios = []
    for name, full in i_full.items():
        full64, forget64 = full.double().flatten(), i_forget[name].double().to(full.device).flatten()
        positive = full64 > 0
        ratios.append((forget64[positive] / full64[positive]).cpu())
    ratios = torch.cat(ratios) if ratios else torch.empty(0, dtype=torch.float64)
    if ratios.numel() == 0:
        raise ValueError("adaptive α needs an I_D that is > 0 somewhere; this one is zero everywhere")
    # torch.quantile refuses inputs over 2^24 elements: sort once and interpolate as numpy's "linear" method
    ordered = ratios.sort().values
    pos = (ordered.numel() - 1) * percentile / 100
    lo = int(pos)
    hi = min(lo + 1, ordered.numel() - 1)
    return float(ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo]))


def check_importance(
    importance: dict, params: dict[str, torch.Tensor], what: str, allow_all_zero: bool = True
) -> None:
    """Raise ``ValueError`` unless ``importance`` is a valid importance for ``params`` (the trainable
    parameters by name): one tensor per parameter, of its shape, finite and >= 0. With
    ``allow_all_zero=False`` an importance that is zero everywhere is refused too (as I_D it would make SSD
    zero every weight the forget set touches). ``what`` names the importance in the message."""
    check_fits_parameters(importance, params, what)
    non_finite = [n for n, t in importance.items() if not torch.isfinite(t).all()]
    if non_finite:
        raise ValueError(
            f"{what} holds NaN/inf in {format_names(non_finite)}: check the data for NaN/inf inputs and the "
            "model for overflow"
        )
    negative = [n for n, t in importance.items() if (t < 0).any()]
    if negative:
        raise ValueError(
            f"{what} holds negative values in {format_names(negative)}; importances are squared "
            "(or absolute) gradients and must be >= 0"
        )
    if not allow_all_zero and not any(t.any() for t in importance.values()):
        raise ValueError(
            f"{what} is zero everywhere: SSD would set every weight with I_f > 0 to zero; the importance "
            "was computed on data that gives the model no gradient, or the file is not an importance"
        )


def dampen_(model, i_full: dict, i_forget: dict, alpha: float, lam: float) -> dict[str, int]:
    """Apply θ_sel ← β·θ_sel in place to the model's trainable parameters; returns {name: #dampened}.

    All or nothing: both importances are checked (:func:`check_importance`; an all-zero I_D is refused)
    and every new value is computed and checked finite before the first weight is written. Warns when
    nothing is selected (the model is then unchanged).
    """
    params = trainable_parameters(model)
    check_importance(i_full, params, "the full-data importance I_D", allow_all_zero=False)
    check_importance(i_forget, params, "the forget importance I_f")
    edits = {}  # name: (selected mask, new values of the selected entries)
    with torch.no_grad():
        for name, p in params.items():
            selected, beta = dampening_factors(
                i_full[name].to(p.device), i_forget[name].to(p.device), alpha, lam
            )
            edits[name] = (selected, (p[selected].float() * beta).to(p.dtype))
        non_finite = [n for n, (_, values) in edits.items() if not torch.isfinite(values).all()]
        if non_finite:
            raise ValueError(
                f"dampening would make {format_names(non_finite)} NaN/inf (are the weights finite?); "
                "the model is unchanged"
            )
        for name, (selected, values) in edits.items():
            params[name][selected] = values
    counts = {name: int(selected.sum()) for name, (selected, _) in edits.items()}
    if not any(counts.values()):
        warnings.warn(
            f"SSD selected no parameter (I_f > α·I_D nowhere, α = {alpha}): the model is unchanged; "
            "a smaller selection_weighting (α) selects more",
            UserWarning,
            stacklevel=2,
        )
    return counts


def trainable_parameters(model) -> dict[str, torch.nn.Parameter]:
    """{name: parameter} of the parameters with ``requires_grad``: the keys of an importance dict."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


# ------------------------------------------------------------------------------ storage
def save_importance(importance: dict[str, torch.Tensor], path, model=None, **info) -> None:
    """Store an importance dict as safetensors; ``info`` (definition, batch size, ...) and the model's
    class go into the file's metadata so that :func:`load_importance` can check compatibility."""
    meta = {k: json.dumps(v) for k, v in info.items()}
    if model is not None:
        meta["architecture"] = json.dumps(type(model).__name__)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({n: t.detach().float().contiguous().cpu() for n, t in importance.items()}, str(path), meta)


def load_importance(path, model) -> tuple[dict[str, torch.Tensor], dict]:
    """Load importances saved by :func:`save_importance` and check them against ``model``
    (:func:`check_importance`, an all-zero importance refused); errors name the file and the tensor.
    Returns (importance, metadata)."""
    importance, raw_meta = load_safetensors_checked(path, "importance file")
    try:
        meta = {k: json.loads(v) for k, v in raw_meta.items()}
    except json.JSONDecodeError as e:
        raise ValueError(
            f"importance file {path} has metadata that save_importance did not write: {e}"
        ) from e
    what = f"importance file {path} (saved from a {meta.get('architecture', 'model of unknown class')})"
    check_importance(importance, trainable_parameters(model), what, allow_all_zero=False)
    return importance, meta
