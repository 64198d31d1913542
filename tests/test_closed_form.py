"""Closed-form cross-attention editing (UCE / MACE normal equations) and token selection."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import UNet2DConditionModel

from hf_unlearn.pipelines import (
    align_token_pairs,
    closed_form_weight,
    concept_embeddings,
    cross_attention_projections,
    edit_cross_attention,
    last_subject_index,
    select_concept_tokens,
)

D_TEXT = 32


def tiny_unet(cross_attention: bool = True) -> UNet2DConditionModel:
    torch.manual_seed(0)
    if cross_attention:
        blocks = {
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        }
    else:
        blocks = {
            "down_block_types": ("DownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "UpBlock2D"),
            "mid_block_type": None,
        }
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        cross_attention_dim=D_TEXT,
        layers_per_block=1,
        attention_head_dim=8,
        norm_num_groups=8,
        **blocks,
    ).eval()


def random_problem(d_out=12, d_in=16, n_e=5, n_p=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(d_out, d_in, generator=g) / math.sqrt(d_in)
    c_e = torch.randn(n_e, d_in, generator=g)
    v = torch.randn(n_e, d_out, generator=g)
    c_p = torch.randn(n_p, d_in, generator=g)
    return w0, c_e, v, c_p


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("lam,s_e,s_p", [(0.5, 1.0, 1.0), (3.0, 2.0, 0.1), (1e3, 1.0, 0.5)])
def test_closed_form_equals_stacked_least_squares(lam, s_e, s_p):
    w0, c_e, v, c_p = random_problem()
    new = closed_form_weight(w0, c_e, v, c_p, lam=lam, erase_scale=s_e, preserve_scale=s_p)
    # Eq. (1) as one least-squares problem in Wᵀ: rows √s_e c_iᵀ, √s_p c_jᵀ, √λ I.
    a = torch.cat([math.sqrt(s_e) * c_e, math.sqrt(s_p) * c_p, math.sqrt(lam) * torch.eye(16)]).double()
    b = torch.cat([math.sqrt(s_e) * v, math.sqrt(s_p) * c_p @ w0.T, math.sqrt(lam) * w0.T]).double()
    reference = torch.linalg.lstsq(a, b).solution.T.float()  # (d_out, d_in)
    assert new.shape == w0.shape and new.dtype == torch.float32
    torch.testing.assert_close(new, reference, atol=1e-5, rtol=1e-5)


def test_closed_form_without_preserve_set_and_large_lambda_stays_near_w0():
    w0, c_e, v, _ = random_problem()
    near = closed_form_weight(w0, c_e, v, None, lam=1e6)
    assert (near - w0).norm() / w0.norm() < 1e-3
    far = closed_form_weight(w0, c_e, v, torch.empty(0, 16), lam=1e-3)
    assert ((c_e @ far.T - v).norm() / v.norm()).item() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_is_solved_in_float32(dtype):
    w0, c_e, v, c_p = (x.to(dtype) for x in random_problem())
    new = closed_form_weight(w0, c_e, v, c_p, lam=0.5)
    assert new.dtype == dtype
    fp32 = closed_form_weight(*(x.float() for x in (w0, c_e, v, c_p)), lam=0.5)
    eps = torch.finfo(dtype).eps
    # Only the final rounding to `dtype` separates the two: half an ulp of each entry.
    assert ((new.float() - fp32).abs() <= eps * fp32.abs() + 1e-6).all()


def test_uce_edit_maps_erase_to_anchor_and_keeps_preserve():
    unet = tiny_unet()
    g = torch.Generator().manual_seed(1)
    erase = torch.randn(2, D_TEXT, generator=g)
    anchor = torch.randn(2, D_TEXT, generator=g)
    preserve = torch.randn(6, D_TEXT, generator=g)
    layers = cross_attention_projections(unet)
    assert len(layers) == 8 and all(".attn2.to_" in n for n in layers)
    originals = {n: m.weight.detach().clone() for n, m in layers.items()}
    untouched = {
        k: v.clone() for k, v in unet.state_dict().items() if k.removesuffix(".weight") not in layers
    }

    # Without a preserve set the edit drifts the preserve concepts; measure that for comparison.
    no_preserve = tiny_unet()
    edit_cross_attention(no_preserve, erase, anchor, lam=0.5)
    summary = edit_cross_attention(unet, erase, anchor, preserve, lam=0.5)

    assert sorted(summary.layers) == sorted(layers)
    assert 0 < summary.max_relative_change == max(summary.relative_changes.values())
    drifts_free = cross_attention_projections(no_preserve)
    for name, w0 in originals.items():
        w1 = layers[name].weight.detach()
        target = anchor @ w0.T  # v* = W0 c_anchor: (2, d_out)
        erase_before = ((erase @ w0.T - target).norm() / target.norm()).item()
        erase_after = ((erase @ w1.T - target).norm() / target.norm()).item()
        assert erase_before > 0.5 and erase_after < 0.05, (name, erase_before, erase_after)
        kept = preserve @ w0.T
        drift = ((preserve @ w1.T - kept).norm() / kept.norm()).item()
        drift_free = ((preserve @ drifts_free[name].weight.detach().T - kept).norm() / kept.norm()).item()
        assert drift < 0.05 and drift < 0.2 * drift_free, (name, drift, drift_free)
    after = unet.state_dict()
    assert all(torch.equal(after[k], v) for k, v in untouched.items())
    sample = torch.randn(1, 4, 8, 8)
    out = unet(sample, 10, encoder_hidden_states=torch.randn(1, 3, D_TEXT)).sample
    assert out.shape == sample.shape and torch.isfinite(out).all()


def test_half_precision_unet_keeps_its_dtype():
    unet = tiny_unet().to(torch.float16)
    erase, anchor = torch.randn(2, D_TEXT), torch.randn(2, D_TEXT)
    summary = edit_cross_attention(unet, erase, anchor, torch.randn(4, D_TEXT))
    assert summary.max_relative_change > 0
    assert all(m.weight.dtype == torch.float16 for m in cross_attention_projections(unet).values())


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf")])
def test_lambda_must_be_positive(lam):
    w0, c_e, v, c_p = random_problem()
    with pytest.raises(ValueError, match="lam"):
        closed_form_weight(w0, c_e, v, c_p, lam=lam)
    with pytest.raises(ValueError, match="preserve_scale"):
        closed_form_weight(w0, c_e, v, c_p, preserve_scale=-1.0)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda w, c, v, p: (w, c[:, :-1], v, p), "erase_embeddings must have 16 columns"),
        (lambda w, c, v, p: (w, c, v[:, :-1], p), "erase_targets must have 12 columns"),
        (lambda w, c, v, p: (w, c, v[:-1], p), "same number of rows"),
        (lambda w, c, v, p: (w, c, v, p[:, :3]), "preserve_embeddings must have 16 columns"),
        (lambda w, c, v, p: (w[0], c, v, p), "weight must be a 2-D tensor"),
        (lambda w, c, v, p: (w, c.clone().fill_(float("nan")), v, p), "erase_embeddings contains NaN"),
        (
            lambda w, c, v, p: (w, c, v, torch.cat([p, torch.full((1, 16), float("inf"))])),
            "preserve_embeddings",
        ),
    ],
)
def test_bad_input_errors(change, match):
    with pytest.raises(ValueError, match=match):
        closed_form_weight(*change(*random_problem()))


def test_refused_unet_edits_leave_it_bit_identical():
    unet = tiny_unet()
    before = state(unet)
    erase, anchor = torch.randn(2, D_TEXT), torch.randn(2, D_TEXT)
    bad = [
        ((erase, anchor[:1]), {}, "one row per erase embedding"),
        ((erase[:, :16], anchor[:, :16]), {}, "32-d text embeddings"),
        ((erase, anchor, torch.full((3, D_TEXT), float("nan"))), {}, "NaN"),
        ((erase, anchor), {"lam": 0.0}, "lam"),
    ]
    for args, kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            edit_cross_attention(unet, *args, **kwargs)
        assert_bit_identical(unet, before)

    # fp16: the solution overflows to inf in some layers only after solving; still nothing is assigned.
    half = tiny_unet().to(torch.float16)
    before = state(half)
    unit = torch.nn.functional.normalize(torch.randn(1, D_TEXT), dim=-1)
    with pytest.raises(ValueError, match="not finite"):
        edit_cross_attention(half, unit, 1e7 * torch.randn(1, D_TEXT), lam=1e-3)
    assert_bit_identical(half, before)


def test_unet_without_cross_attention_is_refused():
    unet = tiny_unet(cross_attention=False)
    before = state(unet)
    with pytest.raises(ValueError, match="no cross-attention"):
        edit_cross_attention(unet, torch.randn(1, D_TEXT), torch.randn(1, D_TEXT))
    assert_bit_identical(unet, before)


def test_token_selection_on_hand_made_prompt():
    # <bos> "van" "gogh" <eos> <pad> <pad> <pad>: row t = [t, 10 t].
    states = torch.stack([torch.tensor([t, 10.0 * t]) for t in range(7)])  # (7, 2)
    mask = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    idx = last_subject_index(mask)
    assert idx == 2
    torch.testing.assert_close(
        select_concept_tokens(states, idx, "last_subject"), torch.tensor([[2.0, 20.0]])
    )
    torch.testing.assert_close(select_concept_tokens(states, idx, "subject_to_end"), states[2:])
    assert select_concept_tokens(states, idx).shape == (1, 2)  # default: last subject token

    # Anchor "" : <bos> <eos> <pad>…, its "subject" is <bos>; a longer prompt ends its subject at 4.
    anchor = -states
    erase_rows = select_concept_tokens(states, 4, "subject_to_end")  # rows 4, 5, 6
    anchor_rows = select_concept_tokens(anchor, 0, "subject_to_end")  # rows 0 … 6
    e, a = align_token_pairs(erase_rows, anchor_rows)
    torch.testing.assert_close(e, states[4:])
    torch.testing.assert_close(a, anchor[:3])

    stacked = concept_embeddings([states, anchor], [2, 4], "subject_to_end")
    assert stacked.shape == (5 + 3, 2)

    with pytest.raises(ValueError, match="mode"):
        select_concept_tokens(states, idx, "all")
    with pytest.raises(ValueError, match="outside"):
        select_concept_tokens(states, 7)
    with pytest.raises(ValueError, match="no subject token"):
        last_subject_index(torch.tensor([1, 1, 0]))
