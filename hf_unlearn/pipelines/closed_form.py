"""Closed-form editing of cross-attention projections: UCE, MACE's refinement, RealEra's stage 1.

One linear projection W0 (d_out × d_in) of the text embedding, the key or value map of a UNet
cross-attention layer, is replaced by the minimiser of UCE's objective (Gandikota et al., "Unified
Concept Editing in Diffusion Models", WACV 2024, arXiv 2308.14761, Sec. 3, as in its released code;
the same normal equations are MACE's ``closed_form_refinement`` and RealEra's cross-attention
alignment, whose own equation numbers were not available)

    L(W) = s_e Σ_{i∈erase} ‖W c_i − v*_i‖² + s_p Σ_{j∈preserve} ‖W c_j − W0 c_j‖² + λ ‖W − W0‖²_F   (1)

whose stationarity condition ∂L/∂W = 0 is

    W (λI + s_e Σ_i c_i c_iᵀ + s_p Σ_j c_j c_jᵀ) = λW0 + s_e Σ_i v*_i c_iᵀ + s_p Σ_j (W0 c_j) c_jᵀ    (2)
         ╰──────────────── M (d_in × d_in) ─────╯   ╰────────────── R (d_out × d_in) ───────────╯

M is symmetric positive definite for λ > 0, so W' = R M⁻¹ exists and is unique; it is computed as
W' = R M⁻¹ with M prepared once for all layers (:class:`NormalEquations`: the Woodbury identity when there
are fewer embedding rows than dimensions, else a Cholesky factorisation), in float64 whatever the model's
dtype (an fp16 factorisation of M is unstable: Σ c cᵀ overflows or loses rank).

UCE's erase target is v*_i = W0 c_anchor_i: the erased concept's tokens are sent to where the
anchor's tokens ("", "art", a super-category) already go, for both to_k and to_v.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

TokenSelection = Literal["last_subject", "subject_to_end"]
TOKEN_SELECTIONS: tuple[str, ...] = ("last_subject", "subject_to_end")


def _check_matrix(name: str, x: torch.Tensor, cols: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 2-D tensor, got {shape}")
    if cols is not None and x.shape[1] != cols:
        raise ValueError(f"{name} must have {cols} columns, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_scales(lam: float, erase_scale: float, preserve_scale: float) -> None:
    if not lam > 0 or lam == float("inf"):
        raise ValueError(f"lam (λ) must be a finite number > 0 to keep the system well-posed, got {lam}")
    for name, s in (("erase_scale", erase_scale), ("preserve_scale", preserve_scale)):
        if not 0 <= s < float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0, got {s}")


def closed_form_weight(
    weight: torch.Tensor,
    erase_embeddings: torch.Tensor,
    erase_targets: torch.Tensor,
    preserve_embeddings: torch.Tensor | None = None,
    *,
    lam: float = 0.5,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
    solver: NormalEquations | None = None,
) -> torch.Tensor:
    """Minimiser W' of Eq. (1) in the module docstring, via the normal equations (2).

    weight: W0, (d_out, d_in); erase_embeddings: c_i, (n_e, d_in); erase_targets: v*_i,
    (n_e, d_out); preserve_embeddings: c_j, (n_p, d_in) or None. ``lam`` is λ (UCE's ``lamb``,
    default 0.5 as in UCE; MACE uses 1e3), ``erase_scale`` s_e, ``preserve_scale`` s_p (UCE 2023
    used max(0.1, 1/#preserve)). Solved in float64 whatever the input dtype; returned as
    (d_out, d_in) in ``weight``'s dtype and device. Raises ValueError on bad shapes, non-finite
    input or λ <= 0.
    """
    _check_scales(lam, erase_scale, preserve_scale)
    _check_matrix("weight", weight)
    d_out, d_in = weight.shape
    _check_matrix("erase_embeddings", erase_embeddings, d_in)
    _check_matrix("erase_targets", erase_targets, d_out)
    if erase_targets.shape[0] != erase_embeddings.shape[0]:
        raise ValueError(
            f"erase_embeddings and erase_targets must have the same number of rows, got "
            f"{erase_embeddings.shape[0]} and {erase_targets.shape[0]}"
        )
    if preserve_embeddings is not None:
        _check_matrix("preserve_embeddings", preserve_embeddings, d_in)

    w0 = weight.detach().double()  # (d_out, d_in)
    c_e = erase_embeddings.detach().to(w0.device, torch.float64)  # (n_e, d_in)
    v_e = erase_targets.detach().to(w0.device, torch.float64)  # (n_e, d_out)
    rhs = lam * w0 + erase_scale * v_e.T @ c_e  # R: (d_out, d_in)
    if preserve_embeddings is not None and preserve_embeddings.shape[0] > 0:
        c_p = preserve_embeddings.detach().to(w0.device, torch.float64)  # (n_p, d_in)
        rhs = rhs + preserve_scale * (c_p @ w0.T).T @ c_p  # Σ (W0 c_j) c_jᵀ: (d_out, d_in)
    if solver is None:
        solver = NormalEquations(
            erase_embeddings,
            preserve_embeddings,
            lam=lam,
            erase_scale=erase_scale,
            preserve_scale=preserve_scale,
        )
    return solver.solve(rhs).to(weight.dtype)


class NormalEquations:
    """W' = R M⁻¹ for M = λI + s_e Σ c_i c_iᵀ + s_p Σ c_j c_jᵀ of Eq. (2), prepared once for every layer.

    M depends on the text embeddings only, not on the layer, so :func:`edit_cross_attention` builds this
    once for all the UNet's projections. With C = [√s_e C_e; √s_p C_p] (n × d_in), M = λI + CᵀC:

    - n < d_in (a few concepts and neighbours; the usual case): the Woodbury identity
      M⁻¹ = (I − Cᵀ(λI_n + CCᵀ)⁻¹C) / λ, so W' = (R − (RCᵀ) K⁻¹ C) / λ with the n × n matrix
      K = λI_n + CCᵀ factored once; O(d_out · d_in · n) per layer instead of O(d_out · d_in²);
    - otherwise: a Cholesky factorisation of M itself.

    Both in float64 (the Woodbury form divides by λ, which may be small). ``ValueError`` if the
    factorisation fails.
    """

    def __init__(
        self,
        erase_embeddings: torch.Tensor,
        preserve_embeddings: torch.Tensor | None = None,
        *,
        lam: float = 0.5,
        erase_scale: float = 1.0,
        preserve_scale: float = 1.0,
    ):
        _check_scales(lam, erase_scale, preserve_scale)
        _check_matrix("erase_embeddings", erase_embeddings)
        d_in = erase_embeddings.shape[1]
        parts = [erase_scale**0.5 * erase_embeddings.detach().double()]
        if preserve_embeddings is not None and preserve_embeddings.shape[0] > 0:
            _check_matrix("preserve_embeddings", preserve_embeddings, d_in)
            parts.append(
                preserve_scale**0.5 * preserve_embeddings.detach().to(parts[0].device, torch.float64)
            )
        self.c = torch.cat(parts)  # C: (n, d_in)
        self.lam, self.woodbury = lam, self.c.shape[0] < d_in
        n = self.c.shape[0] if self.woodbury else d_in
        small = self.c @ self.c.T if self.woodbury else self.c.T @ self.c  # CCᵀ (n × n) or CᵀC (d × d)
        matrix = lam * torch.eye(n, dtype=torch.float64, device=self.c.device) + small
        self.factor, info = torch.linalg.cholesky_ex(0.5 * (matrix + matrix.T))
        if int(info) != 0:
            raise ValueError("the normal matrix λI + Σ c cᵀ is not positive definite; nothing was edited")

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """R M⁻¹ for R (d_out, d_in), in float64."""
        rhs = rhs.to(self.c.device, torch.float64)
        if not self.woodbury:
            return torch.cholesky_solve(rhs.T, self.factor).T  # M W'ᵀ = Rᵀ (M symmetric)
        x = torch.cholesky_solve((rhs @ self.c.T).T, self.factor).T  # (R Cᵀ) K⁻¹: (d_out, n)
        return (rhs - x @ self.c) / self.lam


def cross_attention_projections(unet: nn.Module) -> dict[str, nn.Linear]:
    """Every cross-attention key/value projection, ``…attn2.to_k`` / ``…attn2.to_v``, by name.

    These are the layers UCE and MACE edit (self-attention ``attn1`` and ``to_q``/``to_out`` are
    untouched). Raises ValueError when the model has none.
    """
    layers = {
        name: module
        for name, module in unet.named_modules()
        if ".attn2." in f".{name}" and name.endswith((".to_k", ".to_v")) and isinstance(module, nn.Linear)
    }
    if not layers:
        raise ValueError(
            f"{type(unet).__name__} has no cross-attention key/value projections (attn2.to_k / attn2.to_v); "
            "closed-form concept editing needs a text-conditioned UNet with cross-attention blocks"
        )
    return layers


@dataclass
class ClosedFormEditSummary:
    """What :func:`edit_cross_attention` changed.

    ``relative_changes`` maps each edited layer to ‖W' − W0‖_F / ‖W0‖_F.
    """

    layers: list[str]
    max_relative_change: float
    relative_changes: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def edit_cross_attention(
    unet: nn.Module,
    erase_embeddings: torch.Tensor,
    anchor_embeddings: torch.Tensor,
    preserve_embeddings: torch.Tensor | None = None,
    *,
    lam: float = 0.5,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
) -> ClosedFormEditSummary:
    """UCE erasure: map each erase embedding to its anchor's key and value in every layer.

    For every ``attn2.to_k`` / ``attn2.to_v`` with weight W0, solves Eq. (1) with c_i the rows of
    ``erase_embeddings`` (n_e, d_text), targets v*_i = W0 a_i from the matching rows a_i of
    ``anchor_embeddings`` (n_e, d_text) and preserve rows c_j (n_p, d_text) kept at W0 c_j. A
    projection bias, if any, is left as it is (it cancels in both residuals of Eq. 1).

    All-or-nothing: every new weight is computed and checked finite before any is assigned, so a
    call that raises leaves ``unet`` bit-identical. Returns the edited layer names and the
    relative Frobenius change of each.
    """
    layers = cross_attention_projections(unet)
    _check_matrix("erase_embeddings", erase_embeddings)
    _check_matrix("anchor_embeddings", anchor_embeddings, erase_embeddings.shape[1])
    if anchor_embeddings.shape[0] != erase_embeddings.shape[0]:
        raise ValueError(
            "anchor_embeddings must have one row per erase embedding, got "
            f"{anchor_embeddings.shape[0]} and {erase_embeddings.shape[0]}"
        )
    new_weights: dict[str, torch.Tensor] = {}
    changes: dict[str, float] = {}
    solver = None  # M of Eq. (2) is the same for every layer: prepared once
    for name, linear in layers.items():
        w0 = linear.weight  # (d_out, d_text)
        if w0.shape[1] != erase_embeddings.shape[1]:
            raise ValueError(
                f"{name} takes {w0.shape[1]}-d text embeddings, got {erase_embeddings.shape[1]}-d embeddings"
            )
        if solver is None:
            solver = NormalEquations(
                erase_embeddings.to(w0.device),
                None if preserve_embeddings is None else preserve_embeddings.to(w0.device),
                lam=lam,
                erase_scale=erase_scale,
                preserve_scale=preserve_scale,
            )
        anchors = anchor_embeddings.to(w0.device, torch.float32)  # (n_e, d_text)
        targets = anchors @ w0.float().T  # v* = W0 a: (n_e, d_out)
        new = closed_form_weight(
            w0,
            erase_embeddings,
            targets,
            preserve_embeddings,
            lam=lam,
            erase_scale=erase_scale,
            preserve_scale=preserve_scale,
            solver=solver,
        )
        if not torch.isfinite(new).all():
            raise ValueError(
                f"the closed-form solution for {name} is not finite in {w0.dtype}; nothing was edited"
            )
        new_weights[name] = new
        changes[name] = ((new.float() - w0.float()).norm() / w0.float().norm().clamp_min(1e-12)).item()
    for name, new in new_weights.items():
        layers[name].weight.copy_(new)
    return ClosedFormEditSummary(
        layers=list(new_weights), max_relative_change=max(changes.values()), relative_changes=changes
    )


def last_subject_index(attention_mask: torch.Tensor) -> int:
    """Index of the last subject token of a bare concept prompt: ``attention_mask.sum() − 2``.

    attention_mask: (tokens,) of a CLIP-style encoding ``<bos> subject … <eos> <pad>…``, so the
    last attended position is EOS and the one before it the last word token (UCE 2025's choice).
    """
    if attention_mask.ndim != 1:
        raise ValueError(f"attention_mask must be 1-D (tokens,), got shape {tuple(attention_mask.shape)}")
    n = int(attention_mask.sum().item())
    if n < 3:
        raise ValueError("the prompt has no subject token between <bos> and <eos>")
    return n - 2


def select_concept_tokens(
    hidden_states: torch.Tensor, subject_index: int, mode: TokenSelection = "last_subject"
) -> torch.Tensor:
    """The text-encoder output rows of a concept prompt used as the c_i of Eq. (1).

    hidden_states: (tokens, d) for one prompt; ``subject_index`` the position of its last subject
    token (see :func:`last_subject_index`). Returns (n, d):

    - ``"last_subject"``: only that row, n = 1 (UCE's current code, ``trainscripts/uce_sd_erase.py``);
    - ``"subject_to_end"``: the rows from the last subject token through the end of the sequence,
      EOS and padding included, n = tokens − subject_index (UCE's 2023 paper code,
      ``train_erase.py::edit_model``): CLIP's causal encoder carries the subject into every later
      position, so these rows also encode the concept. Pair erase and anchor rows with
      :func:`align_token_pairs`.
    """
    if mode not in TOKEN_SELECTIONS:
        raise ValueError(f"mode must be one of {TOKEN_SELECTIONS}, got {mode!r}")
    if hidden_states.ndim != 2:
        raise ValueError(f"hidden_states must be (tokens, d), got shape {tuple(hidden_states.shape)}")
    tokens = hidden_states.shape[0]
    if not 0 <= subject_index < tokens:
        raise ValueError(f"subject_index {subject_index} is outside the {tokens} tokens")
    if mode == "last_subject":
        return hidden_states[subject_index : subject_index + 1]  # (1, d)
    return hidden_states[subject_index:]  # (tokens − subject_index, d)


def align_token_pairs(
    erase_rows: torch.Tensor, anchor_rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncate two row sets from :func:`select_concept_tokens` to their common length.

    Row k of each is the k-th token after its own last subject token, as in UCE 2023, where the
    prompt whose subject ends later bounds the pair count. Returns ((n, d), (n, d)).
    """
    n = min(erase_rows.shape[0], anchor_rows.shape[0])
    return erase_rows[:n], anchor_rows[:n]


def concept_embeddings(
    hidden_states: Sequence[torch.Tensor],
    subject_indices: Sequence[int],
    mode: TokenSelection = "last_subject",
) -> torch.Tensor:
    """Stack :func:`select_concept_tokens` over several prompts: (Σ n_k, d)."""
    if len(hidden_states) != len(subject_indices):
        raise ValueError("hidden_states and subject_indices must have the same length")
    return torch.cat(
        [select_concept_tokens(h, i, mode) for h, i in zip(hidden_states, subject_indices, strict=True)]
    )
