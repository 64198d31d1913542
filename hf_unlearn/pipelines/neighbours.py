"""RealEra's neighbour-concept mining and beyond-concept samples, as pure tensor functions.

RealEra (Liu et al., arXiv 2410.09140) erases a concept together with its *neighbours*: random
perturbations ``ẽ = e + η`` of the erased concept's text-encoder output embedding ``e`` that stay
within a distance bound ``d(e, ẽ) ≤ D1`` and whose cosine similarity to ``e`` lies in a band
``[S1, S2]`` (the paper's abstract and method overview: the part that is stated). Concepts *beyond*
that neighbourhood are regularisation targets that keep their original mapping ``W0 · b``.

The paper body was not available, so the sampling distribution, what "distance" means, how a
``tokens × d`` embedding is handled and what "beyond" means are a reconstruction (the paper's values
and sampler are not public; RealEra has no released code) and are exposed as arguments:

* ``distribution="gaussian"`` (default; the reconstruction's sampler): ``η ~ N(0, σ² I)`` with
  ``σ = radius / √d``, so that the typical ``‖η‖₂`` is ``radius``. In high dimension ``‖η‖`` is
  concentrated and ``η ⟂ e`` almost surely, so ``cos(e, ẽ) ≈ 1 / √(1 + (radius / ‖e‖)²)``: the band
  must contain that value. ``distribution="ball"`` draws a uniform direction (a normalised
  Gaussian) and a radius uniform on ``[0, radius]`` (uniform in radius, not in volume), which
  spreads the cosine over a wide range and suits narrow bands.
* ``distance="l2"`` (default: ``‖η‖₂ ≤ D1``) or ``"relative"``
  (``‖η‖₂ / ‖e‖₂ ≤ D1``, a scale-free bound).
* ``per_token=True`` (default: rejection sampling per token vector):
  for a ``(tokens, d)`` embedding each token vector is perturbed and accepted on its own; with
  ``per_token=False`` the whole ``(tokens, d)`` matrix is one flattened vector.
* beyond-concept samples (cos(e, ẽ) < S1, or a larger ‖η‖): ``outside``
  chooses ``"either"`` (default), ``"cosine"`` or ``"distance"``.

No public source gives values for ``D1``, ``S1``, ``S2`` or the number of samples, so
those are required arguments. Every function draws from its own ``torch.Generator``; the global
RNG is never touched, and the same seed (and ``batch_size``) gives the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

DISTRIBUTIONS = ("gaussian", "ball")
DISTANCES = ("l2", "relative")
OUTSIDE_RULES = ("either", "cosine", "distance")


@dataclass(frozen=True)
class SamplingStats:
    """How a rejection sampler fared.

    ``tries``: candidates drawn per embedding vector (per token row when ``per_token``);
    ``accepted``: accepted candidates in all rows, including any beyond ``num`` that were dropped;
    ``acceptance_rate``: ``accepted / (tries · rows)``.
    """

    tries: int
    accepted: int
    acceptance_rate: float


def mine_neighbours(
    concept_embedding: torch.Tensor,
    num: int,
    distance_bound: float,
    cosine_band: tuple[float, float],
    *,
    distribution: str = "gaussian",
    distance: str = "l2",
    radius: float | None = None,
    per_token: bool = True,
    seed: int = 0,
    generator: torch.Generator | None = None,
    max_tries: int = 100_000,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, SamplingStats]:
    """Mine ``num`` neighbour concepts ``ẽ = e + η`` of an erased concept ``e`` (RealEra, A.4 step 2).

    A candidate is accepted when ``d(e, ẽ) ≤ distance_bound`` (``D1``) and
    ``S1 ≤ cos(e, ẽ) ≤ S2`` with ``cosine_band = (S1, S2)``; ``S2 < 1`` excludes near-copies of
    ``e`` and ``S1`` keeps the neighbours semantically close. See the module docstring for
    ``distribution``, ``distance`` and ``per_token``; ``radius`` (in the units of ``distance``)
    is the typical ``‖η‖`` (gaussian) or the largest ``‖η‖`` (ball), default ``distance_bound``.

    concept_embedding: (d,) or (tokens, d), the text-encoder output for the concept.
    Returns (samples, stats): samples (num, d) or (num, tokens, d) in float32 (float64 stays
    float64), on the embedding's device. Raises ``RuntimeError`` naming the band when fewer than
    ``num`` candidates pass within ``max_tries`` draws per vector.
    """
    _check_common(concept_embedding, num, distance_bound, distribution, distance, max_tries, batch_size)
    s1, s2 = _check_band(cosine_band)
    rows = _rows(concept_embedding, per_token)  # (R, n)
    bound = _absolute(distance_bound, rows, distance)  # (R,)
    scale = bound if radius is None else _absolute(_positive(radius, "radius"), rows, distance)  # (R,)

    def inside(dist: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        return (dist <= bound) & (cos >= s1) & (cos <= s2)  # (B, R)

    samples, stats, cos_range = _rejection_sample(
        rows,
        num,
        scale,
        distribution,
        inside,
        _generator(concept_embedding, seed, generator),
        max_tries,
        batch_size,
    )
    if samples is None:
        raise RuntimeError(
            f"mine_neighbours found fewer than {num} neighbours within max_tries={max_tries} draws per vector "
            f"for cosine_band=[{s1}, {s2}] and distance_bound={distance_bound} ({distance}); the drawn "
            f"candidates had cosine in [{cos_range[0]:.4f}, {cos_range[1]:.4f}]. Widen the band, change "
            f"radius/distance_bound, or use distribution='ball'."
        )
    return samples.reshape(num, *concept_embedding.shape), stats


def beyond_concept_samples(
    concept_embedding: torch.Tensor,
    num: int,
    distance_bound: float,
    cosine_band: tuple[float, float],
    *,
    outside: str = "either",
    distribution: str = "gaussian",
    distance: str = "l2",
    radius: float | None = None,
    per_token: bool = True,
    seed: int = 1,
    generator: torch.Generator | None = None,
    max_tries: int = 100_000,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, SamplingStats]:
    """Draw ``num`` perturbations of ``e`` that fall outside its neighbourhood (RealEra, A.4 step 3).

    These are the beyond-concept regularisation targets: the closed-form edit and the LoRA stage
    keep their original mapping ``W0 · b``, which confines the erasure to the neighbourhood. A
    candidate ``b = e + η`` is "outside" when (``outside``):

    * ``"either"`` (default): ``cos(e, b) < S1`` or ``d(e, b) > D1`` — it violates an acceptance
      condition of :func:`mine_neighbours` other than ``cos ≤ S2``;
    * ``"cosine"``: ``cos(e, b) < S1``;  ``"distance"``: ``d(e, b) > D1``.

    ``radius`` defaults to ``2 · distance_bound`` so that most candidates land beyond the bound;
    the other arguments mean what they mean in :func:`mine_neighbours` (a different default
    ``seed`` keeps the two sample sets independent when both use defaults).

    concept_embedding: (d,) or (tokens, d). Returns (samples, stats) with samples (num, *shape).
    """
    _check_common(concept_embedding, num, distance_bound, distribution, distance, max_tries, batch_size)
    s1, s2 = _check_band(cosine_band)
    if outside not in OUTSIDE_RULES:
        raise ValueError(f"outside must be one of {OUTSIDE_RULES}, got {outside!r}")
    rows = _rows(concept_embedding, per_token)  # (R, n)
    bound = _absolute(distance_bound, rows, distance)  # (R,)
    scale = 2 * bound if radius is None else _absolute(_positive(radius, "radius"), rows, distance)  # (R,)

    def beyond(dist: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        far, dissimilar = dist > bound, cos < s1  # (B, R) each
        return {"either": far | dissimilar, "cosine": dissimilar, "distance": far}[outside]

    samples, stats, cos_range = _rejection_sample(
        rows,
        num,
        scale,
        distribution,
        beyond,
        _generator(concept_embedding, seed, generator),
        max_tries,
        batch_size,
    )
    if samples is None:
        raise RuntimeError(
            f"beyond_concept_samples found fewer than {num} samples outside cosine_band=[{s1}, {s2}] / "
            f"distance_bound={distance_bound} ({distance}, outside={outside!r}) within max_tries={max_tries}; "
            f"the drawn candidates had cosine in [{cos_range[0]:.4f}, {cos_range[1]:.4f}]. Increase radius."
        )
    return samples.reshape(num, *concept_embedding.shape), stats


def vocabulary_words(tokenizer, num: int, seed: int = 0, min_length: int = 3) -> list[str]:
    """``num`` whole words of ``tokenizer``'s vocabulary (alphabetic, at least ``min_length`` letters, no
    special or continuation pieces), drawn without replacement from a seeded permutation.

    They are the candidates of the *vocabulary* beyond-concept samples: real concepts of the text
    encoder, kept at their original mapping when they lie outside the concept's neighbourhood
    (:func:`outside_band`). WordPiece continuations (``##ing``) and byte-level pieces are skipped;
    CLIP's end-of-word marker ``</w>`` is stripped.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    special = set(getattr(tokenizer, "all_special_tokens", []))
    words = sorted(
        {
            w
            for t in tokenizer.get_vocab()
            if t not in special
            and (w := t.removesuffix("</w>")).isascii()
            and w.isalpha()
            and len(w) >= min_length
        }
    )
    if len(words) < num:
        raise ValueError(f"the tokenizer has {len(words)} whole words, fewer than the {num} asked for")
    order = torch.randperm(len(words), generator=torch.Generator().manual_seed(seed))[:num]
    return [words[int(i)] for i in order]


def outside_band(concept_rows: torch.Tensor, candidate_rows: torch.Tensor, cosine_low: float) -> torch.Tensor:
    """Mask (N,) of the candidates whose cosine to *every* concept row is below S1 (``cosine_low``).

    concept_rows: (R, d); candidate_rows: (N, d) — one row per candidate (its last subject token).
    """
    cos = (
        torch.nn.functional.normalize(candidate_rows.float(), dim=-1)
        @ torch.nn.functional.normalize(concept_rows.float(), dim=-1).T
    )  # (N, R)
    return (cos < cosine_low).all(dim=1)


def regularisation_embeddings(
    beyond_samples: torch.Tensor, preserve_embeddings: Sequence[torch.Tensor] | torch.Tensor = ()
) -> torch.Tensor:
    """Stack beyond-concept samples with user-given preserve concepts: the set ``B`` of A.4 step 4.

    Every member ``b`` of ``B`` keeps its original mapping, entering the closed form as
    ``s_b (W0 b) bᵀ`` and ``s_b b bᵀ``. beyond_samples: (N, *shape); preserve_embeddings: a
    sequence of tensors of ``shape`` (one concept each) or one tensor (K, *shape).
    Returns (N + K, *shape) in the beyond samples' dtype and device.
    """
    if beyond_samples.dim() < 2:
        raise ValueError(
            f"beyond_samples must be (N, d) or (N, tokens, d), got shape {tuple(beyond_samples.shape)}"
        )
    shape = tuple(beyond_samples.shape[1:])
    if isinstance(preserve_embeddings, torch.Tensor):
        preserve = (
            [preserve_embeddings] if tuple(preserve_embeddings.shape) == shape else list(preserve_embeddings)
        )
    else:
        preserve = list(preserve_embeddings)
    for i, p in enumerate(preserve):
        if tuple(p.shape) != shape:
            raise ValueError(f"preserve embedding {i} has shape {tuple(p.shape)}, expected {shape}")
        if not torch.isfinite(p).all():
            raise ValueError(f"preserve embedding {i} has non-finite values")
    kept = [p.to(dtype=beyond_samples.dtype, device=beyond_samples.device) for p in preserve]
    return torch.cat([beyond_samples, *(p.unsqueeze(0) for p in kept)], dim=0)  # (N + K, *shape)


# ----------------------------------------------------------------------------------- internals


def _rejection_sample(
    rows: torch.Tensor,
    num: int,
    scale: torch.Tensor,
    distribution: str,
    accept: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    generator: torch.Generator,
    max_tries: int,
    batch_size: int,
) -> tuple[torch.Tensor | None, SamplingStats, tuple[float, float]]:
    """Draw candidates ``rows + η`` in batches until every row has ``num`` accepted ones.

    rows: (R, n); scale: (R,). Returns (samples (num, R, n) or None, stats, observed cosine range).
    """
    n_rows, n = rows.shape
    out = torch.empty(num, n_rows, n, dtype=rows.dtype, device=rows.device)  # (num, R, n)
    counts = [0] * n_rows
    tries, accepted = 0, 0
    cos_lo, cos_hi = math.inf, -math.inf
    while tries < max_tries and min(counts) < num:
        b = min(batch_size, max_tries - tries)
        eta = _draw(b, scale, n, distribution, rows, generator)  # (b, R, n)
        cand = rows + eta  # (b, R, n)
        dist = eta.norm(dim=-1)  # (b, R)
        cos = torch.nn.functional.cosine_similarity(cand, rows.expand_as(cand), dim=-1, eps=0.0)  # (b, R)
        ok = accept(dist, cos)  # (b, R)
        cos_lo, cos_hi = min(cos_lo, cos.min().item()), max(cos_hi, cos.max().item())
        accepted += int(ok.sum())
        tries += b
        for r in range(n_rows):
            take = ok[:, r].nonzero().squeeze(1)[: num - counts[r]]  # indices of new accepted candidates
            out[counts[r] : counts[r] + len(take), r] = cand[take, r]
            counts[r] += len(take)
    stats = SamplingStats(tries=tries, accepted=accepted, acceptance_rate=accepted / (tries * n_rows))
    return (out if min(counts) >= num else None), stats, (cos_lo, cos_hi)


def _draw(
    b: int, scale: torch.Tensor, n: int, distribution: str, like: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """η of shape (b, R, n): gaussian with typical norm ``scale``, or uniform direction × U[0, scale]."""
    z = torch.randn(b, len(scale), n, generator=generator, dtype=like.dtype, device=like.device)  # (b, R, n)
    if distribution == "gaussian":
        return z * (scale / math.sqrt(n))[:, None]  # σ = radius / √n
    u = torch.rand(b, len(scale), 1, generator=generator, dtype=like.dtype, device=like.device)  # (b, R, 1)
    return z / z.norm(dim=-1, keepdim=True) * u * scale[:, None]


def _rows(embedding: torch.Tensor, per_token: bool) -> torch.Tensor:
    """The vectors that are perturbed and tested independently: (R, n), in float32 or float64."""
    dtype = torch.float64 if embedding.dtype == torch.float64 else torch.float32
    e = embedding.detach().to(dtype)
    rows = e.reshape(1, -1) if (e.dim() == 1 or not per_token) else e  # (R, n)
    if (rows.norm(dim=-1) == 0).any():
        raise ValueError("concept_embedding has a zero vector: its cosine similarity is undefined")
    return rows


def _absolute(value: float, rows: torch.Tensor, distance: str) -> torch.Tensor:
    """A distance in absolute L2 units per row: (R,)."""
    base = torch.full((rows.shape[0],), float(value), dtype=rows.dtype, device=rows.device)  # (R,)
    return base * rows.norm(dim=-1) if distance == "relative" else base


def _generator(embedding: torch.Tensor, seed: int, generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        return torch.Generator(device=embedding.device).manual_seed(int(seed))
    if generator.device.type != embedding.device.type:
        raise ValueError(f"generator is on {generator.device}, concept_embedding on {embedding.device}")
    return generator


def _positive(value: float, name: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_band(cosine_band: tuple[float, float]) -> tuple[float, float]:
    try:
        s1, s2 = (float(s) for s in cosine_band)
    except (TypeError, ValueError):
        raise ValueError(f"cosine_band must be a pair (s1, s2), got {cosine_band!r}") from None
    if not (-1.0 <= s1 <= 1.0 and -1.0 <= s2 <= 1.0):
        raise ValueError(f"cosine_band values must lie in [-1, 1], got [{s1}, {s2}]")
    if s1 > s2:
        raise ValueError(f"cosine_band must have s1 <= s2, got [{s1}, {s2}]")
    return s1, s2


def _check_common(
    embedding: torch.Tensor,
    num: int,
    distance_bound: float,
    distribution: str,
    distance: str,
    max_tries: int,
    batch_size: int,
) -> None:
    if not isinstance(embedding, torch.Tensor) or embedding.dim() not in (1, 2) or embedding.numel() == 0:
        shape = tuple(embedding.shape) if isinstance(embedding, torch.Tensor) else type(embedding).__name__
        raise ValueError(f"concept_embedding must be a non-empty (d,) or (tokens, d) tensor, got {shape}")
    if not embedding.is_floating_point():
        raise ValueError(f"concept_embedding must be floating point, got {embedding.dtype}")
    if not torch.isfinite(embedding).all():
        raise ValueError("concept_embedding has non-finite values (nan or inf)")
    for name, value in (("num", num), ("max_tries", max_tries), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    _positive(distance_bound, "distance_bound")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
