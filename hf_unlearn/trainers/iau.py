"""IAU: Influence Approximation Unlearning (Liu, Wu, Lian & Chen, "Efficient Machine Unlearning via
Influence Approximation", arXiv 2507.23257, 2025).

Removing a training point z has, to first order, the same influence on the ERM solution as *adding* a
virtual point whose gradient is −∇ℓ(z); "memorising" that point with one gradient step is gradient
*ascent* on z, and no Hessian is needed (the paper's *incremental approximation*). *Gradient correction*
adds the retained data's gradient as a descent term, so the whole unlearning is one (or a few) steps

    θ_u = θ + η · d,    d = ∇L_forget(θ) − w · ∇L_retain(θ),

with L_forget / L_retain the mean per-sample loss over each whole set (cross-entropy for a classifier,
mean answer-token NLL for a causal LM) and w = ``retain_weight`` (1 in the paper; 0 gives a plain
gradient-ascent step). :class:`IAUTrainer` performs this edit in ``train()`` without the Trainer loop.

Step rules (``IAUConfig.step_rule``):

- ``"adam_first_step"`` (default, the reference code): a freshly created Adam minimising w·L_r − L_f.
  Its first step is Δθ = η · d / (|d| + ε) per coordinate (:func:`adam_first_step`), i.e. ≈ η·sign(d):
  the result depends on η, not on the gradient scale. With ``num_steps > 1`` the Adam moments carry
  across steps (:func:`adam_step`), exactly as ``torch.optim.Adam`` would.
- ``"sgd"``: Δθ = η · d (:func:`sgd_step`). The gradient scale matters, so η needs its own tuning.

η is ``learning_rate``; :class:`IAUConfig` changes its default to the reference value 1e-3 (the unlearning
trainers' 1e-5 would make a sign step invisible). Each step recomputes both gradients at the current θ,
accumulated batch by batch (``gradient_batch_size`` rows at a time) as Σ_i ∇ℓ_i / N, so the update does not
depend on the chunking; the reference pushes each whole set through as one batch, which does not scale.
Under ``torchrun`` each process handles its share of the batches and the sums and counts are reduced
across processes, so every rank applies the same update.

The paper's second ingredient, *gradient restriction* (GR), acts when the *original* model is trained:
loss + α·Σ_tensors ‖∇_θ loss‖₂ on each mini-batch (:func:`gradient_restricted_loss`,
:class:`GradientRestrictionTrainer`). It keeps gradients small, which makes the first-order approximation
behind the one-step edit tighter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import SchedulerType
from transformers.utils import logging

from ..papers import IAU_PAPER
from ..registry import register_method
from .base import NonFiniteLossError, UnlearnConfig, _base_model
from .one_shot import OneShotTrainer

logger = logging.get_logger(__name__)

STEP_RULES = ("adam_first_step", "sgd")
DEFAULT_GR_ALPHA = 0.005  # the reference's α for gradient restriction


# ------------------------------------------------------------------------------------------- maths
def iau_direction(
    grad_forget: torch.Tensor, grad_retain: torch.Tensor | None, retain_weight: float = 1.0
) -> torch.Tensor:
    """d = ∇L_f − w·∇L_r (one parameter tensor; any shape, both the same). ``grad_retain=None`` or w = 0
    gives the pure ascent direction ∇L_f (the "GA step" without gradient correction)."""
    if grad_retain is None or retain_weight == 0:
        return grad_forget.clone()
    return grad_forget - retain_weight * grad_retain


def sgd_step(direction: torch.Tensor, lr: float) -> torch.Tensor:
    """Δθ = η·d (same shape as ``direction``)."""
    return lr * direction


def adam_first_step(direction: torch.Tensor, lr: float, eps: float = 1e-8) -> torch.Tensor:
    """Δθ of the first step of a fresh Adam fed the gradient −d: η·d / (|d| + ε), elementwise.

    With zero moments, m̂₁ = d and √v̂₁ = |d| whatever β₁, β₂ are, so the step is ≈ η·sign(d) (exactly 0
    where d = 0). Same shape as ``direction``.
    """
    return lr * direction / (direction.abs() + eps)


def adam_step(
    direction: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.Tensor:
    """Δθ of ``torch.optim.Adam`` (no weight decay, no AMSGrad) at ``step`` (1-based), *ascending* d.

    Adam minimising w·L_r − L_f sees the gradient g = −d; its moments of g are the negated / equal moments
    of d, so the step θ ← θ − η·m̂(g)/(√v̂(g) + ε) equals θ + η·m̂(d)/(√v̂(d) + ε). ``exp_avg`` and
    ``exp_avg_sq`` (the moments of d, shape of ``direction``) are updated in place. At ``step = 1`` with
    zero moments this is :func:`adam_first_step` up to rounding.
    """
    b1, b2 = betas
    exp_avg.mul_(b1).add_(direction, alpha=1 - b1)
    exp_avg_sq.mul_(b2).addcmul_(direction, direction, value=1 - b2)
    bias1, bias2 = 1 - b1**step, 1 - b2**step
    denom = exp_avg_sq.sqrt() / math.sqrt(bias2) + eps
    return (lr / bias1) * exp_avg / denom


def gradient_restricted_loss(loss: torch.Tensor, params, alpha: float) -> torch.Tensor:
    """IAU's gradient-restriction (GR) loss: loss + α·Σ_tensors ‖∇_θ loss‖₂.

    ``loss`` is a scalar (the mini-batch mean loss, as in the reference code, not a per-sample norm);
    ``params`` the parameter tensors θ (those without ``requires_grad`` are skipped). The penalty is the
    *sum of the L2 norms of each tensor's gradient* (not the global norm). The gradient is taken with
    ``create_graph=True`` so that backpropagating the result differentiates through it (double backprop:
    roughly 2-3x the cost and memory of an ordinary backward pass). α = 0 returns ``loss`` itself.
    """
    if alpha == 0:
        return loss
    params = [p for p in params if p.requires_grad]
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    norms = [torch.linalg.vector_norm(g) for g in grads if g is not None]
    if not norms:
        return loss
    return loss + alpha * torch.stack(norms).sum()


# ------------------------------------------------------------------------------------------ config
@dataclass
class IAUConfig(UnlearnConfig):
    """IAU's hyper-parameters. η is ``learning_rate`` (default 1e-3, the reference's Adam step size).

    The Trainer-loop settings (epochs, ``max_steps``, train batch size, scheduler, warmup) are not used:
    the edit is ``num_steps`` full-gradient steps. The Adam rule uses ``adam_beta1``, ``adam_beta2`` and
    ``adam_epsilon``; weight decay is not part of the method and must stay 0.
    """

    learning_rate: float = field(
        default=1e-3,
        metadata={
            "help": "η, the step size. Reference: 1e-3 with the Adam first step (≈ η per coordinate); "
            "the 'sgd' rule scales with the gradient and needs its own η."
        },
    )
    step_rule: str = field(
        default="adam_first_step",
        metadata={
            "help": "'adam_first_step' (reference: a fresh Adam, first step ≈ η·sign(d)) or 'sgd' "
            "(Δθ = η·d), with d = ∇L_forget − retain_weight·∇L_retain."
        },
    )
    num_steps: int = field(
        default=1,
        metadata={
            "help": "Number of update steps (reference: 1). Each recomputes both gradients at the current "
            "weights; Adam's moments carry across steps."
        },
    )
    gradient_batch_size: int = field(
        default=64,
        metadata={
            "help": "Rows per forward/backward pass when accumulating ∇L_forget and ∇L_retain (per "
            "process). The update does not depend on it, only memory and speed do."
        },
    )
    compute_loss_after: bool = field(
        default=True,
        metadata={
            "help": "Measure the forget/retain mean loss after the update (one forward pass over both "
            "sets; the losses before the update come free with the gradients)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):  # also rejects NaN
            raise ValueError(f"learning_rate (η) must be a finite number > 0, got {self.learning_rate}")
        if self.step_rule not in STEP_RULES:
            raise ValueError(f"step_rule must be one of {STEP_RULES}, got {self.step_rule!r}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.gradient_batch_size < 1:
            raise ValueError(f"gradient_batch_size must be >= 1, got {self.gradient_batch_size}")
        if self.weight_decay != 0:
            raise ValueError(f"IAU applies no weight decay; weight_decay must be 0, got {self.weight_decay}")


# ----------------------------------------------------------------------------------------- trainer
@register_method("trainer", IAUConfig)
class IAUTrainer(OneShotTrainer):
    """Influence-approximation unlearning as a ``Trainer`` whose ``train()`` applies the IAU update.

    ``train()`` computes ∇L_forget and ∇L_retain over the whole sets (in batches of
    ``gradient_batch_size``, model in eval mode: no dropout, BatchNorm running statistics untouched),
    applies θ ← θ + Δθ(d) with the chosen step rule, repeats ``num_steps`` times, and restores the model's
    train/eval mode. Only parameters with ``requires_grad`` are changed (the adapters of a PEFT model).

    A retain set is required unless ``retain_weight == 0`` (a pure gradient-ascent step); with
    ``retain_weight == 0`` a given retain set is only used to report its loss. A step whose losses,
    gradients or resulting weights are not finite is refused with ``NonFiniteLossError`` (``check_finite``,
    on by default). ``train()`` is all or nothing: if it raises (a refused step, or any error, also after
    the first of several steps) the trainable parameters are restored bit for bit from a copy taken at the
    start (kept in CPU memory), and nothing is written to disk.
    """

    _name = "iau"
    _paper = IAU_PAPER
    _tag_names = ["iau", "influence-approximation", "retrain-free"]
    config_class = IAUConfig
    supported_tasks = ("causal_lm", "classification")

    def __init__(self, *args, **kwargs):
        self.edit_metrics: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def check_inputs(self, model, args, peft_config) -> None:
        if args.retain_weight > 0 and self.retain_raw is None:
            raise ValueError(
                "IAUTrainer needs a retain_dataset for its gradient correction (d = ∇L_forget − "
                f"retain_weight·∇L_retain, retain_weight={args.retain_weight}); pass one, or set "
                "retain_weight=0 for a pure gradient-ascent step"
            )

    # ------------------------------------------------------------------------------ passes
    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if not params:
            raise ValueError("the model has no trainable parameters (requires_grad) to update")
        return params

    def mean_gradient(self, dataset, params: dict) -> tuple[dict[str, torch.Tensor], float]:
        """(∇L, L) with L = (1/N) Σ_i ℓ_i over the whole ``dataset`` at the current weights.

        Gradients of Σ_batch ℓ_i are summed batch by batch in fp32 (shapes of the parameters), then the
        sums and N are reduced across processes, so the result is independent of the batch size and of
        the number of processes.
        """
        a = self.args
        names, tensors = list(params), list(params.values())
        sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        loss_sum = torch.zeros((), dtype=torch.float32, device=a.device)
        count = 0
        with torch.enable_grad():
            for batch in self.rank_batches(dataset, a.gradient_batch_size, "IAU: mean gradient"):
                losses = self.sample_losses(self.model, batch)  # (B,)
                total = losses.sum()
                grads = torch.autograd.grad(total, tensors, allow_unused=True)
                for n, g in zip(names, grads, strict=True):
                    if g is not None:
                        sums[n] += g.detach().float()
                loss_sum += total.detach().float()
                count += losses.shape[0]
        n_rows = self._reduce(torch.tensor(float(count), device=a.device)).item()
        mean_loss = (self._reduce(loss_sum) / n_rows).item()
        return {n: self._reduce(s) / n_rows for n, s in sums.items()}, mean_loss

    @torch.no_grad()
    def mean_loss(self, dataset) -> float:
        """L = (1/N) Σ_i ℓ_i over the whole ``dataset`` (forward passes only, reduced across processes)."""
        a = self.args
        loss_sum = torch.zeros((), dtype=torch.float32, device=a.device)
        count = 0
        for batch in self.rank_batches(dataset, a.gradient_batch_size):
            losses = self.sample_losses(self.model, batch)  # (B,)
            loss_sum += losses.float().sum()
            count += losses.shape[0]
        n_rows = self._reduce(torch.tensor(float(count), device=a.device)).item()
        return (self._reduce(loss_sum) / n_rows).item()

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return t
        return self.accelerator.reduce(t, reduction="sum")

    # ------------------------------------------------------------------------------- train
    def edit(self) -> tuple[dict[str, float], float]:
        """Apply ``num_steps`` IAU steps in place; the training loss is the objective
        w·L_retain − L_forget before the update."""
        a = self.args
        model = self.model
        params = self._trainable()
        forget = self.train_dataset.views["forget"]
        retain = self.train_dataset.views.get("retain")
        use_retain_grad = retain is not None and a.retain_weight > 0
        moments = (
            {
                n: (torch.zeros_like(s, dtype=torch.float32), torch.zeros_like(s, dtype=torch.float32))
                for n, s in params.items()
            }
            if a.step_rule == "adam_first_step"
            else None
        )
        total_update = (
            None
            if a.num_steps == 1
            else {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        )
        metrics: dict[str, float] = {}
        was_training, start_step = model.training, self.state.global_step
        original = {n: p.detach().to("cpu", copy=True) for n, p in params.items()}
        model.eval()
        try:
            for step in range(1, a.num_steps + 1):
                g_forget, loss_f = self.mean_gradient(forget, params)
                g_retain, loss_r = None, None
                if use_retain_grad:
                    g_retain, loss_r = self.mean_gradient(retain, params)
                elif retain is not None and step == 1:
                    loss_r = self.mean_loss(retain)
                logs = {"forget_loss": loss_f, "forget_grad_norm": _global_norm(g_forget.values())}
                if loss_r is not None:
                    logs["retain_loss"] = loss_r
                if g_retain is not None:
                    logs["retain_grad_norm"] = _global_norm(g_retain.values())
                if a.check_finite:
                    self._check_finite_step(step, logs, g_forget, g_retain)
                deltas = self._deltas(step, g_forget, g_retain, moments)
                del g_forget, g_retain
                logs["update_norm"] = _global_norm(deltas.values())
                if a.check_finite:
                    self._check_finite_update(step, params, deltas)
                with torch.no_grad():
                    for n, p in params.items():
                        p.add_(deltas[n].to(p.dtype))
                        if total_update is not None:
                            total_update[n] += deltas[n]
                del deltas
                if step == 1:
                    metrics["forget_loss_before"] = loss_f
                    if loss_r is not None:
                        metrics["retain_loss_before"] = loss_r
                    metrics["forget_grad_norm"] = logs["forget_grad_norm"]
                    if "retain_grad_norm" in logs:
                        metrics["retain_grad_norm"] = logs["retain_grad_norm"]
                    objective = (a.retain_weight * loss_r if use_retain_grad else 0.0) - loss_f
                self.state.global_step = step
                if a.num_steps > 1:
                    self.log({f"step_{k}": round(v, 6) for k, v in logs.items()})
            metrics["update_norm"] = (
                logs["update_norm"] if total_update is None else _global_norm(total_update.values())
            )
            if a.compute_loss_after:
                metrics["forget_loss_after"] = self.mean_loss(forget)
                if retain is not None:
                    metrics["retain_loss_after"] = self.mean_loss(retain)
        except BaseException:
            _restore(params, original)
            self.state.global_step = start_step
            raise
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        self.state.global_step = a.num_steps
        return {**metrics, "num_steps": a.num_steps}, objective

    def _deltas(self, step: int, g_forget: dict, g_retain: dict | None, moments: dict | None) -> dict:
        """Δθ per parameter (fp32, parameter shapes) from d = ∇L_f − w·∇L_r, freeing the gradients."""
        a = self.args
        deltas = {}
        for n in list(g_forget):
            d = iau_direction(g_forget.pop(n), None if g_retain is None else g_retain.pop(n), a.retain_weight)
            if moments is None:
                deltas[n] = sgd_step(d, a.learning_rate)
            else:
                m, v = moments[n]
                betas = (a.adam_beta1, a.adam_beta2)
                deltas[n] = adam_step(d, m, v, step, a.learning_rate, betas, a.adam_epsilon)
        return deltas

    def _check_finite_step(self, step, logs, g_forget, g_retain) -> None:
        for key in ("forget_loss", "retain_loss"):
            if key in logs and not math.isfinite(logs[key]):
                raise NonFiniteLossError(
                    f"IAU step {step}: the mean {key.replace('_', ' ')} is {logs[key]}; the model is "
                    "unchanged. Check the data (NaN/inf inputs) and the model."
                )
        for which, grads in (("forget", g_forget), ("retain", g_retain)):
            bad = [n for n, g in (grads or {}).items() if not torch.isfinite(g).all()]
            if bad:
                raise NonFiniteLossError(
                    f"IAU step {step}: non-finite ∇L_{which} in {bad[:3]}{' ...' if len(bad) > 3 else ''}; "
                    "the model is unchanged."
                )

    @staticmethod
    def _check_finite_update(step, params, deltas) -> None:
        bad = [
            n
            for n, p in params.items()
            if not (
                torch.isfinite(deltas[n]).all() and torch.isfinite(p.detach() + deltas[n].to(p.dtype)).all()
            )
        ]
        if bad:
            raise NonFiniteLossError(
                f"IAU step {step}: the update would make {bad[:3]}{' ...' if len(bad) > 3 else ''} NaN/inf; "
                "the model is unchanged. Lower learning_rate."
            )

    def card_notes(self) -> str | None:
        a = self.args
        views = self.train_dataset.views
        if a.step_rule == "adam_first_step":
            rule = "a fresh Adam, as the reference code (first step Δθ ≈ η·sign(d))"
            rule += f"; β = ({a.adam_beta1}, {a.adam_beta2}), ε = {a.adam_epsilon}"
        else:
            rule = "plain gradient step (Δθ = η·d)"
        if a.retain_weight == 0:
            direction = "d = ∇L_forget (pure gradient ascent, no gradient correction)"
        else:
            weight = "" if a.retain_weight == 1 else f"{a.retain_weight}·"
            direction = f"d = ∇L_forget − {weight}∇L_retain"
        sets = f"forget set ({len(views['forget'])} rows)"
        if "retain" in views:
            sets += f" and retain set ({len(views['retain'])} rows)"
        lines = [
            "### IAU update",
            f"- θ ← θ + Δθ(d) with {direction}",
            f"- step rule: {rule}",
            f"- η = {a.learning_rate}; {a.num_steps} step{'s' if a.num_steps > 1 else ''}",
            f"- gradients of the mean per-sample loss over the whole {sets}, "
            f"accumulated {a.gradient_batch_size} rows at a time",
        ]
        m = self.edit_metrics
        if not m:
            return "\n".join([*lines, "- the update has not been applied yet"])
        norms = f"- ‖∇L_forget‖ = {m['forget_grad_norm']:.4g}"
        if "retain_grad_norm" in m:
            norms += f", ‖∇L_retain‖ = {m['retain_grad_norm']:.4g}"
        lines.append(norms + f", ‖θ_u − θ‖ = {m['update_norm']:.4g}")
        for key in ("forget", "retain"):
            if f"{key}_loss_before" in m:
                after = m.get(f"{key}_loss_after")
                change = f" → {after:.4g}" if after is not None else " (before the update)"
                lines.append(f"- {key} mean loss: {m[f'{key}_loss_before']:.4g}{change}")
        return "\n".join(lines)


@torch.no_grad()
def _restore(params: dict[str, torch.nn.Parameter], original: dict[str, torch.Tensor]) -> None:
    """Copy the saved values back into the parameters (bit for bit: same dtype)."""
    for n, p in params.items():
        p.copy_(original[n])


def _global_norm(tensors) -> float:
    """‖(t₁, t₂, ...)‖₂ of a collection of tensors as one vector."""
    total = sum(float(t.float().pow(2).sum()) for t in tensors)
    return math.sqrt(total)


# ------------------------------------------------------------------------- gradient restriction
@dataclass
class GradientRestrictionArgs(TrainingArguments):
    """``TrainingArguments`` plus IAU's gradient-restriction strength α (for training the original model).

    The defaults are the reference's training recipe (``train_model.py``: ``optim.Adam(model.parameters(),
    lr=1e-3)``, batch 64, no scheduler, no clipping), where ``Trainer``'s differ: learning rate 1e-3
    (Trainer: 5e-5), batch 64 (8: the penalty is on the mini-batch mean loss, so its strength depends on
    the batch size), constant learning rate (linear decay) and no gradient clipping (1.0). Trainer's
    AdamW with its default weight decay 0 and betas (0.9, 0.999), ε = 1e-8 is the reference's Adam. The
    reference trains up to 200 epochs with early stopping on validation accuracy (patience 10): set
    ``num_train_epochs``, ``eval_strategy`` and an ``EarlyStoppingCallback`` for that.
    """

    gradient_restriction_alpha: float = field(
        default=DEFAULT_GR_ALPHA,
        metadata={
            "help": "α of the gradient-restriction loss, loss + α·Σ_tensors ‖∇loss‖₂ (reference: 0.005; "
            "0 = plain training). Costs a double backward pass."
        },
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (reference: 1e-3)."})
    per_device_train_batch_size: int = field(
        default=64, metadata={"help": "Training batch size per device (reference: 64)."}
    )
    lr_scheduler_type: SchedulerType | str = field(
        default="constant", metadata={"help": "Learning-rate schedule (reference: constant)."}
    )
    max_grad_norm: float = field(
        default=0.0, metadata={"help": "Gradient clipping norm, 0 = none (reference: no clipping)."}
    )

    def __post_init__(self):
        super().__post_init__()
        _check_alpha(self.gradient_restriction_alpha)


def _check_alpha(alpha) -> float:
    if not (isinstance(alpha, (int, float)) and alpha >= 0 and math.isfinite(alpha)):
        raise ValueError(f"gradient_restriction_alpha must be a finite number >= 0, got {alpha}")
    return float(alpha)


class GradientRestrictionMixin:
    """Adds IAU's gradient restriction to any ``Trainer`` subclass's ``compute_loss`` (put it first in the
    bases and call :meth:`set_gradient_restriction` after ``Trainer.__init__``, as
    :class:`GradientRestrictionTrainer` does; until then α = 0 and nothing changes).

    The penalty is computed on each micro-batch's mean loss: when α > 0 the model is not passed
    ``num_items_in_batch`` and the Trainer divides the loss by the gradient-accumulation steps, so the
    objective is the mean over micro-batches of (L_mb + α·Σ‖∇L_mb‖). Under ``torchrun`` the norm is that
    of each process's local batch gradient. Evaluation (no gradients) reports the plain loss.
    """

    gradient_restriction_alpha: float = 0.0

    def set_gradient_restriction(self, alpha: float) -> None:
        """Set α (finite, >= 0). For α > 0 the loss is taken per micro-batch (the model gets no
        ``num_items_in_batch``; the Trainer divides by the accumulation steps) and fused attention kernels,
        which have no double backward, are replaced by eager attention (:func:`use_eager_attention`)."""
        self.gradient_restriction_alpha = _check_alpha(alpha)
        self._gr_penalty: list[torch.Tensor] = []
        if self.gradient_restriction_alpha > 0:
            self.model_accepts_loss_kwargs = False  # the penalty needs each micro-batch's mean loss
            self.loss_is_scaled_for_ga = False
            use_eager_attention(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        alpha = self.gradient_restriction_alpha
        if alpha == 0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=None)
        if torch.is_grad_enabled() and loss.requires_grad:
            plain = loss.detach()
            loss = gradient_restricted_loss(loss, model.parameters(), alpha)
            self._gr_penalty.append((loss.detach() - plain) / alpha)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        except RuntimeError as e:
            if self.gradient_restriction_alpha == 0 or "derivative for" not in str(e):
                raise
            raise RuntimeError(
                f"gradient restriction needs double backward, which an operation of this model lacks ({e}). "
                "Use eager attention (attn_implementation='eager') and kernels with double-backward support, "
                "or set gradient_restriction_alpha=0."
            ) from e

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and getattr(self, "_gr_penalty", None):
            # Σ_tensors ‖∇L_mb‖₂ averaged over the micro-batches since the last log (this process)
            logs["gradient_norm_penalty"] = round(float(torch.stack(self._gr_penalty).mean()), 6)
            self._gr_penalty.clear()
        super().log(logs, *args, **kwargs)


class GradientRestrictionTrainer(GradientRestrictionMixin, Trainer):
    """A plain ``transformers.Trainer`` for training the *original* model with IAU's gradient restriction
    (Liu et al., 2025, arXiv 2507.23257): the training loss is loss + α·Σ_tensors ‖∇_θ loss‖₂.

    α comes from ``gradient_restriction_alpha=`` if given, else from ``args.gradient_restriction_alpha``
    (:class:`GradientRestrictionArgs`), else the reference value 0.005. α = 0 is exactly ``Trainer``.
    Each step costs a double backward pass (``create_graph=True``): about 2-3x the time and activation
    memory of a plain step, so use it for small models or adapters. Fused attention kernels (SDPA,
    flash-attention) have no double backward: with α > 0 the model is switched to eager attention
    (:func:`use_eager_attention`). The logged ``loss`` includes the penalty; ``gradient_norm_penalty`` is
    Σ‖∇L_mb‖ (before α) averaged over the micro-batches since the last log.
    """

    def __init__(self, *args, gradient_restriction_alpha: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if gradient_restriction_alpha is None:
            gradient_restriction_alpha = getattr(self.args, "gradient_restriction_alpha", DEFAULT_GR_ALPHA)
        self.set_gradient_restriction(gradient_restriction_alpha)


def use_eager_attention(model) -> None:
    """Switch a transformers model to eager attention, whose backward is differentiable again.

    Fused attention kernels (SDPA's flash/memory-efficient and CPU kernels, flash-attention) have no double
    backward, so the gradient-restriction penalty cannot be backpropagated through them. Eager attention
    computes the same function. Models without attention (or already eager) are left alone.
    """
    base = _base_model(model)
    impl = getattr(getattr(base, "config", None), "_attn_implementation", None)
    if impl in (None, "eager") or not hasattr(base, "set_attn_implementation"):
        return
    logger.warning(
        f"gradient restriction needs double backward, which {impl!r} attention lacks: switching the model to "
        "eager attention (the same function, computed without fused kernels)"
    )
    base.set_attn_implementation("eager")
