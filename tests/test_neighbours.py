"""Neighbour-concept mining and beyond-concept samples (RealEra, realera.md A.4 steps 2-3)."""

import pytest
import torch
import torch.nn.functional as F

from hf_unlearn.pipelines.neighbours import (
    SamplingStats,
    beyond_concept_samples,
    mine_neighbours,
    regularisation_embeddings,
)

D1, BAND = 3.0, (0.8, 0.97)


def _embedding(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(123)) * 2  # (shape); ‖e‖ ≈ 2√d


def _dist_cos(samples: torch.Tensor, e: torch.Tensor, per_token: bool = True):
    """Distance and cosine of each sample vector to the concept, computed from the samples alone."""
    if not per_token or e.dim() == 1:
        samples, e = samples.reshape(len(samples), 1, -1), e.reshape(1, -1)
    diff = samples - e  # (N, R, n)
    return diff.norm(dim=-1), F.cosine_similarity(samples, e.expand_as(samples), dim=-1)


@pytest.mark.parametrize("shape", [(16,), (5, 16)])
@pytest.mark.parametrize("distribution", ["gaussian", "ball"])
def test_neighbours_satisfy_both_conditions(shape, distribution):
    e = _embedding(*shape)
    samples, stats = mine_neighbours(e, 50, D1, BAND, distribution=distribution)
    assert samples.shape == (50, *shape)
    dist, cos = _dist_cos(samples, e)
    assert (dist <= D1 + 1e-5).all()
    assert ((cos >= BAND[0] - 1e-6) & (cos <= BAND[1] + 1e-6)).all()
    assert isinstance(stats, SamplingStats) and stats.tries >= 50 and 0 < stats.acceptance_rate <= 1


def test_joint_and_relative_criteria():
    e = _embedding(4, 8)
    samples, _ = mine_neighbours(
        e, 20, 0.4, (0.85, 0.99), distance="relative", per_token=False, distribution="ball"
    )
    assert samples.shape == (20, 4, 8)
    dist, cos = _dist_cos(samples, e, per_token=False)
    assert (dist <= 0.4 * e.norm() + 1e-5).all()
    assert ((cos >= 0.85 - 1e-6) & (cos <= 0.99 + 1e-6)).all()


@pytest.mark.parametrize("outside", ["either", "cosine", "distance"])
@pytest.mark.parametrize("shape", [(16,), (5, 16)])
def test_beyond_samples_violate_the_neighbourhood(outside, shape):
    e = _embedding(*shape)
    samples, stats = beyond_concept_samples(e, 30, D1, BAND, outside=outside, radius=4 * D1)
    assert samples.shape == (30, *shape) and stats.tries >= 30
    dist, cos = _dist_cos(samples, e)
    far, dissimilar = dist > D1, cos < BAND[0]
    assert {"either": far | dissimilar, "cosine": dissimilar, "distance": far}[outside].all()
    assert not ((dist <= D1) & (cos >= BAND[0]) & (cos <= BAND[1])).any()


def test_seeded_reproducible_and_global_rng_untouched():
    e = _embedding(3, 16)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a, _ = mine_neighbours(e, 10, D1, BAND, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # a different global state must not matter
    b, _ = mine_neighbours(e, 10, D1, BAND, seed=7)
    c, _ = mine_neighbours(e, 10, D1, BAND, generator=torch.Generator().manual_seed(7))
    d, _ = mine_neighbours(e, 10, D1, BAND, seed=8)
    assert torch.equal(a, b) and torch.equal(a, c) and not torch.equal(a, d)
    state = torch.get_rng_state()
    x, _ = beyond_concept_samples(e, 10, D1, BAND, seed=3)
    y, _ = beyond_concept_samples(e, 10, D1, BAND, seed=3)
    assert torch.equal(x, y) and torch.equal(torch.get_rng_state(), state)


def test_narrow_band_raises_after_max_tries():
    e = _embedding(16)
    band = (0.9, 0.900001)  # inside the range the candidates reach, but far too narrow
    with pytest.raises(RuntimeError, match=r"max_tries=200.*cosine_band=\[0\.9, 0\.900001\]"):
        mine_neighbours(e, 5, D1, band, max_tries=200, batch_size=64)
    with pytest.raises(RuntimeError, match=r"outside cosine_band=\[-1\.0, 1\.0\]"):  # cos < -1 is impossible
        beyond_concept_samples(e, 5, D1, (-1.0, 1.0), outside="cosine", radius=0.1, max_tries=200)


def test_stats_count_tries_exactly():
    _, stats = mine_neighbours(_embedding(16), 1, D1, (-1.0, 1.0), batch_size=8)
    assert stats.tries == 8 and stats.accepted <= 8 and stats.acceptance_rate == stats.accepted / 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cosine_band": (0.9, 0.8)}, "s1 <= s2"),
        ({"cosine_band": (-1.5, 0.8)}, r"\[-1, 1\]"),
        ({"cosine_band": (0.5, 1.2)}, r"\[-1, 1\]"),
        ({"cosine_band": (0.5,)}, "pair"),
        ({"distance_bound": 0.0}, "distance_bound"),
        ({"distance_bound": -1.0}, "distance_bound"),
        ({"distance_bound": float("inf")}, "distance_bound"),
        ({"num": 0}, "num"),
        ({"num": 2.5}, "num"),
        ({"max_tries": 0}, "max_tries"),
        ({"batch_size": 0}, "batch_size"),
        ({"distribution": "uniform"}, "distribution"),
        ({"distance": "l1"}, "distance"),
        ({"radius": 0.0}, "radius"),
        ({"concept_embedding": torch.tensor([1.0, float("nan")])}, "non-finite"),
        ({"concept_embedding": torch.tensor([1.0, float("inf")])}, "non-finite"),
        ({"concept_embedding": torch.zeros(4)}, "zero vector"),
        ({"concept_embedding": torch.ones(2, 3, 4)}, r"\(d,\) or \(tokens, d\)"),
        ({"concept_embedding": torch.ones(4, dtype=torch.long)}, "floating point"),
    ],
)
@pytest.mark.parametrize("fn", [mine_neighbours, beyond_concept_samples])
def test_bad_inputs(fn, kwargs, message):
    args = {"concept_embedding": _embedding(8), "num": 3, "distance_bound": D1, "cosine_band": BAND, **kwargs}
    with pytest.raises(ValueError, match=message):
        fn(**args)


def test_beyond_rejects_unknown_rule():
    with pytest.raises(ValueError, match="outside"):
        beyond_concept_samples(_embedding(8), 3, D1, BAND, outside="inside")


def test_regularisation_embeddings_stacks_preserve_concepts():
    e = _embedding(5, 16)
    beyond, _ = beyond_concept_samples(e, 4, D1, BAND)
    p1, p2 = torch.randn(5, 16), torch.randn(5, 16, dtype=torch.float64)
    stacked = regularisation_embeddings(beyond, [p1, p2])
    assert stacked.shape == (6, 5, 16) and stacked.dtype == beyond.dtype
    assert torch.equal(stacked[:4], beyond) and torch.equal(stacked[4], p1)
    assert regularisation_embeddings(beyond, torch.stack([p1, p1])).shape == (6, 5, 16)
    assert regularisation_embeddings(beyond, p1).shape == (5, 5, 16)
    assert torch.equal(regularisation_embeddings(beyond), beyond)
    with pytest.raises(ValueError, match="shape"):
        regularisation_embeddings(beyond, [torch.randn(16)])
    with pytest.raises(ValueError, match="non-finite"):
        regularisation_embeddings(beyond, [torch.full((5, 16), float("nan"))])


@pytest.mark.parametrize("dtype, expected", [(torch.float16, torch.float32), (torch.float64, torch.float64)])
def test_output_dtype(dtype, expected):
    samples, _ = mine_neighbours(_embedding(16).to(dtype), 4, D1, BAND)
    assert samples.dtype == expected


# ------------------------------------------------------------------ vocabulary beyond-concept samples
def test_vocabulary_words_are_seeded_whole_words():
    from transformers import BertTokenizerFast

    from hf_unlearn.pipelines.neighbours import vocabulary_words

    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "shoe",
        "##ing",
        "a",
        "bag",
        "dress",
        "x1y",
        "coat",
    ]
    from tokenizers import Tokenizer, models

    backend = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok = BertTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    words = vocabulary_words(tok, 4, seed=3)
    assert sorted(words) == ["bag", "coat", "dress", "shoe"]  # no specials, pieces, short or non-alpha
    assert vocabulary_words(tok, 2, seed=3) == words[:2] and vocabulary_words(tok, 4, seed=3) == words
    with pytest.raises(ValueError, match="fewer than"):
        vocabulary_words(tok, 5)


def test_outside_band_keeps_only_dissimilar_candidates():
    from hf_unlearn.pipelines.neighbours import outside_band

    concept = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cosines to the two concept rows: (1, 0), (0.6, 0.8), (−1, 0)
    candidates = torch.tensor([[2.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    assert outside_band(concept, candidates, 0.7).tolist() == [False, False, True]
    assert outside_band(concept, candidates, 0.9).tolist() == [False, True, True]
