"""Worst-case forget sets (Fan, Liu, Hero, Liu, "Challenging Forgets: Unveiling the Worst-Case Forget
Sets in Machine Unlearning", ECCV 2024, arXiv 2403.07362).

Which m of the N training points are the hardest to *evaluate* unlearning on? The paper selects the
forget set on which an unlearned model still performs best, by a bi-level problem over sample weights
w ∈ S = {w ∈ [0, 1]^N : 1ᵀw = m} (the relaxed selection, w_i = 1 ⇔ z_i is forgotten):

    upper:  min_{w ∈ S}  f(w) = Σ_i w_i ℓ(θ_u(w); z_i) + γ ‖w‖²₂                       (BLO-upper)
    lower:  θ_u(w) = argmin_θ ℓ_MU(θ; w),   ℓ_MU(θ; w) = Σ_i (1 − w_i) ℓ(θ; z_i)        (BLO-lower)

The lower level is solved approximately by a few epochs of signSGD, θ ← θ − β sign(∇_θ ℓ_MU)  (signSGD). Since
d sign(x)/dx = 0 almost everywhere, dθ_u/dw vanishes and the upper gradient is the partial one,

    ∇_w f = [ℓ(θ_u; z_i)]_i + 2γ w,                                                      (upper-grad)

so each upper iteration is a projected gradient step w ← Proj_S(w − α ∇_w f)  (upper-step), with Proj_S the
Euclidean projection onto the capped simplex (:func:`project_capped_simplex`). The final forget set
is the top-m of w (:func:`top_m`): the points a model fits best *without* training on them (easy,
redundant samples), on which even exact retraining shows ~0 "unlearning accuracy". The continuous w
is a per-sample unlearning-difficulty score. Equation labels in parentheses are used in the docstrings
below; the formulation follows the paper's Sec. 3-4 and the released data-wise code
of OPTML-Group/Unlearn-WorstCase (``data-wise/main_selmu.py``, ``unlearn/impl.py``, ``utils.py``).

:func:`worst_case_forget_set` runs the search for any model whose forward returns ``.logits``, on
classification rows (``pixel_values``/``input_ids`` + scalar ``labels``) or tokenized causal-LM rows
(``input_ids``/``attention_mask``/token ``labels``); the per-sample loss is
:func:`hf_unlearn.losses.common.per_sample_loss`. Compare any trainer here on the worst-case set and on
a random set of the same size (:func:`random_forget_set`), with the hyper-parameters tuned on the random
set, as the paper's evaluation protocol does.

Deviations from the released code (OPTML-Group/Unlearn-WorstCase, data-wise): the upper-level losses
are computed in ``eval()`` mode under ``torch.no_grad()`` (the released code stays in ``train()`` mode,
with training augmentation and BatchNorm batch statistics, ``data-wise/main_selmu.py``); the projection is
solved to ~1e-12 in float64 instead of 1e-5; w is binarised only at the end (the released code's
``feq_to_bi`` is capped to the number of upper iterations, i.e. the same thing).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from ..data.classification import MODEL_INPUTS, ClassificationCollator
from ..data.qa import QACollator
from ..losses.common import per_sample_loss

# --------------------------------------------------------------------------------------------------
# Projection and binarisation
# --------------------------------------------------------------------------------------------------


def _clipped_sum(a: torch.Tensor, mu: float) -> float:
    """g(μ) = Σ_i clip(a_i − μ, 0, 1): continuous and non-increasing in μ."""
    return (a - mu).clamp(0.0, 1.0).sum().item()


def project_capped_simplex(
    a: torch.Tensor | np.ndarray | Sequence[float], m: float, tol: float = 1e-12, max_iter: int = 200
) -> torch.Tensor:
    """Euclidean projection of ``a`` (N,) onto the capped simplex S = {w : 0 ≤ w ≤ 1, Σ_i w_i = m}.

    The KKT conditions of min_{w ∈ S} ½‖w − a‖² give w = clip(a − μ, 0, 1) for one scalar μ (the
    multiplier of Σw = m); μ is the root of g(μ) = Σ clip(a_i − μ, 0, 1) − m, found by bisection on
    [min(a) − 1, max(a)], where g goes from N − m ≥ 0 to −m ≤ 0 (the reference ``utils.bisection``,
    solved here in float64 to ``tol`` and then made exact on the final linear piece of g).

    Returns a float64 tensor (N,) on ``a``'s device whose entries lie in [0, 1] and sum to m up to
    float64 rounding (~1e-12 relative). ``m = 0`` gives all zeros, ``m = N`` all ones. Raises
    ``ValueError`` for a non-1-D or non-finite ``a`` or for m outside [0, N].
    """
    a = torch.as_tensor(a).detach().to(torch.float64)  # (N,)
    if a.dim() != 1:
        raise ValueError(f"expected a 1-D vector to project, got shape {tuple(a.shape)}")
    n = a.numel()
    if not math.isfinite(m) or not 0 <= m <= n:
        raise ValueError(f"the budget m must satisfy 0 <= m <= N = {n}, got {m}")
    if not torch.isfinite(a).all():
        raise ValueError("cannot project a vector with NaN or infinite entries")
    if m == 0:
        return torch.zeros_like(a)
    if m == n:
        return torch.ones_like(a)
    lo, hi = a.min().item() - 1.0, a.max().item()  # g(lo) = N ≥ m ≥ 0 = g(hi)
    mu = 0.5 * (lo + hi)
    for _ in range(max_iter):
        mu = 0.5 * (lo + hi)
        gap = _clipped_sum(a, mu) - m
        if abs(gap) <= tol or hi - lo <= 0.0 or mu in (lo, hi):
            break
        if gap > 0:
            lo = mu  # too much mass: shift further down
        else:
            hi = mu
    # On the linear piece of g containing μ, Σw = n_up + Σ_free (a_i − μ) = m has a closed-form root.
    shifted = a - mu  # (N,)
    free = (shifted > 0) & (shifted < 1)  # (N,)
    if free.any():
        n_up = (shifted >= 1).sum().item()
        exact = (a[free].sum().item() + n_up - m) / free.sum().item()
        if abs(_clipped_sum(a, exact) - m) <= abs(_clipped_sum(a, mu) - m):
            mu = exact
    return (a - mu).clamp(0.0, 1.0)  # (N,)


def top_m(w: torch.Tensor | np.ndarray | Sequence[float], m: int) -> list[int]:
    """Indices of the ``m`` largest entries of ``w`` (N,), sorted ascending; ties go to the lower index.

    The binarisation of the relaxed selection (``bi_w`` in the reference ``main_selmu.py``).
    """
    w = np.asarray(torch.as_tensor(w).detach().cpu().to(torch.float64))  # (N,)
    if w.ndim != 1:
        raise ValueError(f"expected a 1-D vector of weights, got shape {w.shape}")
    if int(m) != m or not 0 <= m <= w.size:
        raise ValueError(f"m must be an integer in [0, N = {w.size}], got {m}")
    order = np.argsort(-w, kind="stable")  # (N,) descending, stable keeps index order for ties
    return sorted(int(i) for i in order[: int(m)])


def random_forget_set(n: int, m: int, seed: int = 0) -> list[int]:
    """A uniformly random forget set of ``m`` of ``n`` indices, sorted: the paper's baseline."""
    if int(m) != m or not 0 <= m <= n:
        raise ValueError(f"m must be an integer in [0, n = {n}], got {m}")
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n, size=int(m), replace=False))


# --------------------------------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------------------------------


@dataclass
class WorstCaseConfig:
    """Hyper-parameters of the worst-case forget-set search (parseable with ``HfArgumentParser``).

    Defaults follow the data-wise reference code where it agrees with the paper (10 upper iterations,
    w_lr 1e-2), the README/paper for theta_lr (1e-3) and the paper for gamma (1e-4); the lower level
    defaults to 2 epochs (README example; the paper uses 10). The upper step is w_lr × per-sample loss, and
    the losses of well-fit points are ~1e-3, so scale ``w_lr`` to the loss scale for w to move.
    """

    budget: float = field(
        default=0.1,
        metadata={
            "help": "Forget-set size m: a count (an integer >= 1) or a fraction of N in (0, 1). "
            "Must resolve to 0 < m < N."
        },
    )
    select_epochs: int = field(default=10, metadata={"help": "Upper-level iterations (updates of w)."})
    unlearn_epochs: int = field(
        default=2,
        metadata={"help": "Lower-level signSGD epochs over all N points per upper iteration (0 = none)."},
    )
    theta_lr: float = field(default=1e-3, metadata={"help": "signSGD step size β of the lower level."})
    w_lr: float = field(default=1e-2, metadata={"help": "Step size α of the upper (w) update."})
    gamma: float = field(default=1e-4, metadata={"help": "Weight γ of the γ‖w‖² regulariser (>= 0)."})
    lower_level: Literal["finetune", "retrain"] = field(
        default="finetune",
        metadata={
            "help": "'finetune': each upper iteration starts from a copy of the original model (w_FT); "
            "'retrain': from model_init() (w_retrain)."
        },
    )
    batch_size: int = field(default=64, metadata={"help": "Batch size of training and scoring."})
    seed: int = field(default=42, metadata={"help": "Seed of the initial set, shuffling and model_init."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def __post_init__(self):
        b = self.budget
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
            raise ValueError(f"budget must be a count >= 1 or a fraction in (0, 1), got {b!r}")
        if b >= 1 and int(b) != b:
            raise ValueError(f"a budget >= 1 is a count of points and must be an integer, got {b}")
        for name in ("select_epochs", "batch_size"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        if int(self.unlearn_epochs) != self.unlearn_epochs or self.unlearn_epochs < 0:
            raise ValueError(f"unlearn_epochs must be an integer >= 0, got {self.unlearn_epochs}")
        for name in ("theta_lr", "w_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if self.lower_level not in ("finetune", "retrain"):
            raise ValueError(f"lower_level must be 'finetune' or 'retrain', got {self.lower_level!r}")

    def forget_size(self, n: int) -> int:
        """The budget m as a count for a dataset of ``n`` points; ``ValueError`` unless 0 < m < n."""
        m = int(self.budget) if self.budget >= 1 else int(round(self.budget * n))
        if not 0 < m < n:
            raise ValueError(
                f"budget={self.budget} gives a forget set of {m} of the {n} points; it must be between 1 "
                f"and {n - 1} (a worst-case set needs points to forget and points to retain)"
            )
        return m


@dataclass
class WorstCaseResult:
    """Output of :func:`worst_case_forget_set`.

    ``scores``: final continuous w (N,) in [0, 1] with Σw = m (higher = worse case, i.e. easier to fit
    without training on it); ``indices``: the top-m forget set, sorted; ``history``: one dict per upper
    iteration with ``iteration``, ``objective`` (f(w) = Σ w_i ℓ_i + γ‖w‖² at the w that defined the
    lower level), ``forget_loss`` / ``retain_loss`` (mean ℓ on that w's top-m set and on the rest) and
    ``n_changed`` (how many points entered the top-m set in this iteration's w update).
    """

    scores: np.ndarray
    indices: list[int]
    history: list[dict] = field(default_factory=list)

    @property
    def retain_indices(self) -> list[int]:
        """The complement of ``indices`` (sorted)."""
        chosen = set(self.indices)
        return [i for i in range(len(self.scores)) if i not in chosen]


# --------------------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------------------


def _check_dataset(dataset: Dataset) -> Dataset:
    """Non-empty ``datasets.Dataset`` with a ``labels`` column (``label`` is renamed)."""
    if dataset is None:
        raise ValueError("dataset is None; pass a datasets.Dataset of model inputs and labels")
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: there is no forget set to select")
    cols = dataset.column_names
    if "labels" not in cols and "label" in cols:
        dataset = dataset.rename_column("label", "labels")
    elif "labels" not in cols:
        raise ValueError(f"dataset has no 'labels' column; it has {cols}")
    return dataset


def _default_collator(dataset: Dataset) -> tuple[Dataset, Callable]:
    """``ClassificationCollator`` for scalar labels, ``QACollator`` for token labels; the dataset is cut to
    the model-input columns + ``labels``."""
    inputs = [c for c in MODEL_INPUTS if c in dataset.column_names and c != "attention_mask"]
    if not inputs:
        raise ValueError(
            f"dataset has no model-input column (one of {list(MODEL_INPUTS)}); it has "
            f"{dataset.column_names}. Tokenize / process it first, or pass collate_fn."
        )
    if torch.as_tensor(dataset[0]["labels"]).dim() == 0:
        keep = [c for c in MODEL_INPUTS if c in dataset.column_names]
        return dataset.select_columns([*keep, "labels"]).with_format("torch"), ClassificationCollator()
    if "input_ids" not in dataset.column_names:
        raise ValueError("token-level labels need an 'input_ids' column (tokenized causal-LM rows)")
    keep = [c for c in ("input_ids", "attention_mask") if c in dataset.column_names]
    return dataset.select_columns([*keep, "labels"]).with_format(None), QACollator(pad_token_id=0)


def _batch(dataset: Dataset, idx: Sequence[int], collate_fn: Callable, device) -> dict[str, torch.Tensor]:
    """Collate rows ``idx`` of ``dataset`` and move tensors to ``device``."""
    columns = dataset[list(idx)]  # dict of column -> list of B values
    rows = [{k: v[j] for k, v in columns.items()} for j in range(len(idx))]
    batch = collate_fn(rows)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _losses(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample loss ℓ(θ; z_b) of a batch, (B,); the model is called without ``labels``."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return per_sample_loss(model(**inputs).logits, batch["labels"])  # (B,)


def sign_sgd_step(params: Sequence[torch.nn.Parameter], lr: float) -> None:
    """θ ← θ − β sign(∇_θ) in place, then clear the gradients (signSGD; no momentum or weight decay,
    as the reference ``SignSGD.sign_step``)."""
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad.sign(), alpha=-lr)
                p.grad = None


def _solve_lower_level(
    model, dataset: Dataset, w: torch.Tensor, config: WorstCaseConfig, collate_fn: Callable, device, generator
) -> None:
    """Approximately solve (BLO-lower) θ_u(w) = argmin_θ Σ_i (1 − w_i) ℓ(θ; z_i) with ``config.unlearn_epochs``
    epochs of signSGD over all N points (shuffled by ``generator``), in place on ``model``."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    keep = (1.0 - w).clamp(min=0.0)  # (N,) float64, weight of each point in ℓ_MU
    n = len(dataset)
    for _ in range(config.unlearn_epochs):
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            weight = keep[idx]  # (B,)
            if not weight.any():
                continue  # all forgotten: zero gradient, sign step is a no-op
            losses = _losses(model, _batch(dataset, idx, collate_fn, device))  # (B,)
            (losses * weight.to(losses)).sum().backward()
            sign_sgd_step(params, config.theta_lr)


@torch.no_grad()
def _all_losses(model, dataset: Dataset, batch_size: int, collate_fn: Callable, device) -> torch.Tensor:
    """ℓ(θ; z_i) of every point, (N,) float64, in eval mode (a deliberate deviation: the reference code
    stays in train mode here, ``data-wise/main_selmu.py``)."""
    model.eval()
    out = []
    for start in range(0, len(dataset), batch_size):
        idx = range(start, min(start + batch_size, len(dataset)))
        out.append(_losses(model, _batch(dataset, idx, collate_fn, device)).double().cpu())
    return torch.cat(out)  # (N,)


def upper_step(w: torch.Tensor, losses: torch.Tensor, m: int, lr: float, gamma: float) -> torch.Tensor:
    """w ← Proj_S(w − α (ℓ + 2γw)): (upper-step) with the gradient (upper-grad). w, losses: (N,)."""
    return project_capped_simplex(w - lr * (losses + 2.0 * gamma * w), m)  # (N,)


def worst_case_forget_set(
    model,
    dataset: Dataset,
    config: WorstCaseConfig | None = None,
    model_init: Callable[[], torch.nn.Module] | None = None,
    collate_fn: Callable[[list[dict]], dict] | None = None,
    device: str | torch.device | None = None,
) -> WorstCaseResult:
    """Search the worst-case forget set of size m of ``dataset`` for ``model`` (Fan et al., 2024; module docstring).

    ``model``: the original model θ_o (any module whose forward takes the batch's inputs and returns an
    object with ``.logits``); it is never modified — every upper iteration trains a fresh
    ``copy.deepcopy(model)`` (``lower_level="finetune"``) or ``model_init()`` (``"retrain"``, called
    under a seed so the search stays deterministic). ``dataset``: a ``datasets.Dataset`` of model inputs
    and ``labels`` — scalar class labels (batched by ``ClassificationCollator``) or tokenized causal-LM
    rows with -100 on the prompt (``QACollator(pad_token_id=0)``); ``collate_fn`` overrides the default
    and then receives the rows unchanged. ``device`` defaults to the model's.

    Algorithm: w₀ = a random binary m-subset; for each of ``select_epochs`` iterations, train a fresh
    model on Σ_i (1 − w_i) ℓ_i with signSGD, compute every ℓ_i in eval mode without gradients, and set
    w ← Proj_S(w − α(ℓ + 2γw)). Returns the final w and its top-m set. Global RNG state is untouched.
    """
    config = config if config is not None else WorstCaseConfig()
    dataset = _check_dataset(dataset)
    n = len(dataset)
    m = config.forget_size(n)
    if config.lower_level == "retrain" and model_init is None:
        raise ValueError("lower_level='retrain' trains from scratch and needs model_init (a model factory)")
    if collate_fn is None:
        dataset, collate_fn = _default_collator(dataset)
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)

    rng = np.random.default_rng(config.seed)
    w = torch.zeros(n, dtype=torch.float64)  # (N,)
    w[torch.as_tensor(rng.choice(n, size=m, replace=False))] = 1.0
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(config.seed)  # dropout etc. in the lower level; restored on exit
        for it in tqdm(range(config.select_epochs), desc="worst-case search", disable=config.disable_tqdm):
            if config.lower_level == "retrain":
                torch.manual_seed(config.seed + it)
                current = model_init().to(device)
            else:
                current = copy.deepcopy(model).to(device)
            _solve_lower_level(current, dataset, w, config, collate_fn, device, generator)
            losses = _all_losses(current, dataset, config.batch_size, collate_fn, device)  # (N,)
            del current
            chosen = torch.tensor(top_m(w, m))  # (m,)
            rest = torch.ones(n, dtype=torch.bool)
            rest[chosen] = False
            new_w = upper_step(w, losses, m, config.w_lr, config.gamma)  # (N,)
            history.append(
                {
                    "iteration": it,
                    "objective": float((w * losses).sum() + config.gamma * (w * w).sum()),
                    "forget_loss": float(losses[chosen].mean()),
                    "retain_loss": float(losses[rest].mean()),
                    "n_changed": len(set(top_m(new_w, m)) - set(chosen.tolist())),
                }
            )
            w = new_w
    return WorstCaseResult(scores=w.numpy(), indices=top_m(w, m), history=history)
