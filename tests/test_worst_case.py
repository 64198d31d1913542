"""Worst-case forget-set search (Fan et al., ECCV 2024): projection, binarisation, and the bi-level search
on a toy problem whose easiest points are known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import HfArgumentParser, LlamaConfig, LlamaForCausalLM
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_unlearn.evaluation.worst_case import (
    WorstCaseConfig,
    WorstCaseResult,
    project_capped_simplex,
    random_forget_set,
    sign_sgd_step,
    top_m,
    upper_step,
    worst_case_forget_set,
)

# ------------------------------------------------------------------ projection


def _random_cases():
    g = torch.Generator().manual_seed(0)
    n = 50
    a = torch.randn(n, generator=g, dtype=torch.float64)
    yield from ((a, m) for m in (0, 1, 2.5, 17, 25, n - 1, n - 0.5, n))
    yield torch.full((n,), 3.7, dtype=torch.float64), 20  # all equal
    yield torch.full((n,), 3.7, dtype=torch.float64), 20.3
    yield torch.randn(n, generator=g, dtype=torch.float64) * 1e8, 10  # huge spread
    yield torch.randn(n, generator=g, dtype=torch.float64) * 1e8, 10.25
    yield torch.randn(n, generator=g, dtype=torch.float64) * 1e-12, 7  # tiny spread
    yield torch.randn(n, generator=g) * 100 + 1e4, 30  # float32, far from 0
    yield torch.tensor([5.0]), 0.5  # N = 1
    yield torch.tensor([0.2, 0.3, 0.5]), 1  # already in S: returned unchanged
    yield torch.rand(1000, generator=g, dtype=torch.float64) * 3, 999


@pytest.mark.parametrize("a,m", list(_random_cases()))
def test_projection_is_feasible_exactly(a, m):
    w = project_capped_simplex(a, m)
    assert w.dtype == torch.float64 and w.shape == a.shape
    assert (w >= 0).all() and (w <= 1).all()
    assert abs(w.sum().item() - m) <= 1e-8


@pytest.mark.parametrize("a,m", list(_random_cases()))
def test_projection_satisfies_kkt(a, m):
    """w = clip(a − μ, 0, 1) with one μ: a_i − w_i = μ on free coordinates, a_i ≤ μ where w_i = 0 and
    a_i − 1 ≥ μ where w_i = 1 (sufficient for optimality of the convex projection problem)."""
    a = a.double()
    w = project_capped_simplex(a, m)
    free = (w > 1e-9) & (w < 1 - 1e-9)
    scale = 1e-9 * max(1.0, a.abs().max().item())
    if free.any():
        mu = (a - w)[free]
        assert (mu.max() - mu.min()).item() <= scale
        mu = mu.mean().item()
        assert (a[w <= 1e-9] <= mu + scale).all()
        assert (a[w >= 1 - 1e-9] - 1 >= mu - scale).all()
    else:  # all coordinates at a bound: some μ separates them
        a, w = a.numpy(), w.numpy()
        assert a[w <= 1e-9].max(initial=-np.inf) <= a[w >= 1 - 1e-9].min(initial=np.inf) - 1 + scale


def test_projection_already_feasible_is_identity():
    a = torch.tensor([0.2, 0.3, 0.5, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(project_capped_simplex(a, 2.0), a, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_projection_is_the_euclidean_projection(seed):
    """p = Proj_S(a) ⇔ p ∈ S and ⟨a − p, v − p⟩ ≤ 0 for every vertex v of S (all m-subsets for integer
    m); then p is also at least as close to a as any random feasible point."""
    g = torch.Generator().manual_seed(seed)
    n = 7
    a = torch.randn(n, generator=g, dtype=torch.float64) * (1 + 2 * seed)
    for m in range(1, n):
        p = project_capped_simplex(a, m)
        for subset in itertools.combinations(range(n), m):
            v = torch.zeros(n, dtype=torch.float64)
            v[list(subset)] = 1
            assert torch.dot(a - p, v - p).item() <= 1e-9
        vertices = torch.stack([torch.randperm(n, generator=g) < m for _ in range(200)]).double()  # (200, n)
        mix = torch.rand(200, 200, generator=g, dtype=torch.float64)
        feasible = (mix / mix.sum(1, keepdim=True)) @ vertices  # (200, n): convex combinations
        assert ((feasible - a).norm(dim=1) >= (p - a).norm() - 1e-12).all()


def test_projection_matches_scipy_on_fractional_budgets():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    g = np.random.default_rng(1)
    for m in (0.5, 1.7, 3.2):
        a = g.normal(size=5) * 2
        res = scipy_optimize.minimize(
            lambda x, a=a: 0.5 * ((x - a) ** 2).sum(),
            np.full(5, m / 5),
            jac=lambda x, a=a: x - a,
            bounds=[(0, 1)] * 5,
            constraints=[{"type": "eq", "fun": lambda x, m=m: x.sum() - m}],
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        np.testing.assert_allclose(project_capped_simplex(a, m).numpy(), res.x, atol=1e-6)


def test_projection_bad_input():
    with pytest.raises(ValueError, match="0 <= m <= N"):
        project_capped_simplex(torch.zeros(3), 3.5)
    with pytest.raises(ValueError, match="0 <= m <= N"):
        project_capped_simplex(torch.zeros(3), -1)
    with pytest.raises(ValueError, match="1-D"):
        project_capped_simplex(torch.zeros(2, 2), 1)
    with pytest.raises(ValueError, match="NaN"):
        project_capped_simplex(torch.tensor([0.0, float("nan")]), 1)


def test_projection_edge_budgets():
    a = torch.tensor([3.0, -1.0, 0.5])
    assert project_capped_simplex(a, 0).tolist() == [0.0, 0.0, 0.0]
    assert project_capped_simplex(a, 3).tolist() == [1.0, 1.0, 1.0]
    assert project_capped_simplex(a, 2).tolist() == [1.0, 0.0, 1.0]


# ------------------------------------------------------------------ top-m, random set, small steps


def test_top_m():
    assert top_m(torch.tensor([0.1, 0.9, 0.5, 0.7]), 2) == [1, 3]
    assert top_m(np.array([0.5, 0.5, 0.5, 0.1]), 2) == [0, 1]  # ties -> lower index
    assert top_m([0.3, 0.2], 0) == []
    assert top_m([0.3, 0.2], 2) == [0, 1]
    with pytest.raises(ValueError, match="integer"):
        top_m([0.3, 0.2], 3)
    with pytest.raises(ValueError, match="integer"):
        top_m([0.3, 0.2], 1.5)


def test_random_forget_set():
    s = random_forget_set(100, 10, seed=3)
    assert s == sorted(set(s)) and len(s) == 10 and all(0 <= i < 100 for i in s)
    assert s == random_forget_set(100, 10, seed=3) != random_forget_set(100, 10, seed=4)
    with pytest.raises(ValueError):
        random_forget_set(5, 6)


def test_sign_sgd_step_and_upper_step():
    p = torch.nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
    p.grad = torch.tensor([0.3, -1e-6, 0.0])
    sign_sgd_step([p], lr=0.5)
    assert p.tolist() == [0.5, 1.5, 1.0] and p.grad is None
    # The point with the smallest loss gains weight (upper gradient ℓ + 2γw).
    w = upper_step(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([0.0, 1.0]), 1, 0.2, 0.0)
    assert w.tolist() == pytest.approx([0.6, 0.4])


# ------------------------------------------------------------------ config


def test_config_validation_and_argparser():
    with pytest.raises(ValueError, match="budget"):
        WorstCaseConfig(budget=0)
    with pytest.raises(ValueError, match="integer"):
        WorstCaseConfig(budget=2.5)
    for bad in ({"theta_lr": 0}, {"w_lr": -1}, {"gamma": -1e-4}, {"select_epochs": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            WorstCaseConfig(**bad)
    with pytest.raises(ValueError, match="lower_level"):
        WorstCaseConfig(lower_level="relabel")
    assert WorstCaseConfig(budget=0.1).forget_size(100) == 10
    assert WorstCaseConfig(budget=7).forget_size(100) == 7
    with pytest.raises(ValueError, match="between 1 and 9"):
        WorstCaseConfig(budget=0.01).forget_size(10)
    with pytest.raises(ValueError, match="between 1 and 9"):
        WorstCaseConfig(budget=10).forget_size(10)
    (cfg,) = HfArgumentParser(WorstCaseConfig).parse_args_into_dataclasses(
        ["--budget", "450", "--lower_level", "retrain", "--gamma", "0", "--disable_tqdm", "true"]
    )
    assert cfg.forget_size(4500) == 450 and cfg.lower_level == "retrain" and cfg.disable_tqdm


# ------------------------------------------------------------------ the search on a toy problem


class TinyLinear(torch.nn.Module):
    """2-D linear classifier; the default weights put the boundary at x0 = 0 (class 1 for x0 > 0)."""

    def __init__(self, preset: bool = True):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        with torch.no_grad():
            if preset:
                self.fc.weight.copy_(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]))
            else:
                self.fc.weight.normal_(std=0.1)
            self.fc.bias.zero_()

    def forward(self, pixel_values):
        return SequenceClassifierOutput(logits=self.fc(pixel_values))


def toy_blobs(seed: int = 0):
    """16 easy points (|x0| ≈ 4 on their correct side), 6 on the boundary x0 = 0 with random labels and
    4 with flipped labels, shuffled. Returns (dataset, sorted easy indices)."""
    g = np.random.default_rng(seed)
    rows = []
    for kind, count in (("easy", 16), ("boundary", 6), ("flipped", 4)):
        for _ in range(count):
            y = int(g.integers(2))
            side = {"easy": 1 if y else -1, "boundary": 0, "flipped": -1 if y else 1}[kind]
            x0 = 4.0 * side + (0.3 * g.standard_normal() if side else 0.0)
            rows.append(({"pixel_values": [x0, 0.1 * g.standard_normal()], "labels": y}, kind))
    order = g.permutation(len(rows))
    rows = [rows[i] for i in order]
    ds = Dataset.from_list([r for r, _ in rows])
    return ds, [i for i, (_, kind) in enumerate(rows) if kind == "easy"]


FAST = {"select_epochs": 5, "unlearn_epochs": 2, "theta_lr": 1e-2, "w_lr": 1.0, "batch_size": 8}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finetune_search_selects_the_easiest_points(seed):
    ds, easy = toy_blobs()
    model = TinyLinear()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = WorstCaseConfig(budget=len(easy), seed=seed, disable_tqdm=True, **FAST)
    res = worst_case_forget_set(model, ds, cfg)
    assert isinstance(res, WorstCaseResult)
    assert res.indices == easy  # budget = #easy: exactly the easy set
    assert res.scores.shape == (len(ds),) and abs(res.scores.sum() - len(easy)) < 1e-8
    assert ((res.scores >= 0) & (res.scores <= 1)).all()
    assert res.retain_indices == sorted(set(range(len(ds))) - set(easy))
    assert len(res.history) == cfg.select_epochs
    assert res.history[-1]["objective"] < res.history[0]["objective"]
    assert res.history[-1]["forget_loss"] < 1e-3 < res.history[-1]["retain_loss"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    assert model.training  # mode untouched too

    smaller = worst_case_forget_set(
        model, ds, WorstCaseConfig(budget=5, seed=seed, disable_tqdm=True, **FAST)
    )
    assert len(smaller.indices) == 5 and set(smaller.indices) <= set(easy)


@pytest.mark.parametrize("seed", [0, 1])
def test_retrain_search_selects_easy_points(seed):
    ds, easy = toy_blobs()

    def model_init():
        return TinyLinear(preset=False)

    cfg = WorstCaseConfig(
        budget=8,
        select_epochs=8,
        unlearn_epochs=10,
        theta_lr=0.05,
        w_lr=1.0,
        batch_size=8,
        lower_level="retrain",
        seed=seed,
        disable_tqdm=True,
    )
    res = worst_case_forget_set(TinyLinear(), ds, cfg, model_init=model_init)
    assert len(res.indices) == 8 and set(res.indices) <= set(easy)


def test_search_is_deterministic_and_leaves_global_rng_alone():
    ds, _ = toy_blobs()
    cfg = WorstCaseConfig(budget=0.25, seed=7, disable_tqdm=True, **{**FAST, "w_lr": 0.05})
    model = TinyLinear()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = worst_case_forget_set(model, ds, cfg)
    assert torch.equal(torch.get_rng_state(), state)
    b = worst_case_forget_set(TinyLinear(), ds, cfg)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.indices == b.indices and a.history == b.history
    c = worst_case_forget_set(TinyLinear(), ds, WorstCaseConfig(**{**cfg.__dict__, "seed": 8}))
    assert not np.array_equal(a.scores, c.scores)


def test_label_column_extra_columns_and_custom_collator():
    ds, easy = toy_blobs()
    ds = ds.rename_column("labels", "label").add_column("name", [f"p{i}" for i in range(len(ds))])
    cfg = WorstCaseConfig(budget=5, disable_tqdm=True, **FAST)
    res = worst_case_forget_set(TinyLinear(), ds, cfg)  # 'label' accepted, 'name' dropped
    assert set(res.indices) <= set(easy)

    seen = []

    def collate(rows):  # a custom collate_fn gets the rows unchanged
        seen.append(sorted(rows[0]))
        return {
            "pixel_values": torch.tensor([r["pixel_values"] for r in rows]),
            "labels": torch.tensor([r["labels"] for r in rows]),
        }

    res2 = worst_case_forget_set(TinyLinear(), ds, cfg, collate_fn=collate)
    assert seen[0] == ["labels", "name", "pixel_values"]
    np.testing.assert_allclose(res2.scores, res.scores, atol=1e-12)


def test_causal_lm_rows():
    """Tokenized causal-LM rows (token labels, -100 on the prompt) go through QACollator and the mean
    answer-token NLL."""
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    g = np.random.default_rng(0)
    rows = []
    for i in range(6):
        ids = g.integers(1, 32, size=4 + i % 3).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100, -100] + ids[2:]})
    ds = Dataset.from_list(rows)
    cfg = WorstCaseConfig(budget=2, select_epochs=2, unlearn_epochs=1, batch_size=4, disable_tqdm=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = worst_case_forget_set(model, ds, cfg)
    assert len(res.indices) == 2 and abs(res.scores.sum() - 2) < 1e-8
    assert all(np.isfinite(h["objective"]) for h in res.history)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_input():
    ds, _ = toy_blobs()
    cfg = WorstCaseConfig(budget=5, disable_tqdm=True, **FAST)
    with pytest.raises(ValueError, match="empty"):
        worst_case_forget_set(TinyLinear(), ds.select([]), cfg)
    with pytest.raises(ValueError, match="labels"):
        worst_case_forget_set(TinyLinear(), ds.remove_columns("labels"), cfg)
    with pytest.raises(ValueError, match="model-input"):
        worst_case_forget_set(TinyLinear(), ds.rename_column("pixel_values", "x"), cfg)
    with pytest.raises(TypeError, match="datasets.Dataset"):
        worst_case_forget_set(TinyLinear(), ds.to_list(), cfg)
    with pytest.raises(ValueError, match="between 1 and"):
        worst_case_forget_set(TinyLinear(), ds, WorstCaseConfig(budget=len(ds), disable_tqdm=True))
    with pytest.raises(ValueError, match="between 1 and"):
        worst_case_forget_set(TinyLinear(), ds, WorstCaseConfig(budget=0.001, disable_tqdm=True))
    with pytest.raises(ValueError, match="model_init"):
        worst_case_forget_set(TinyLinear(), ds, WorstCaseConfig(budget=5, lower_level="retrain"))
