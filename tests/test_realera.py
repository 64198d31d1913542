"""RealEraPipeline: generation, erase (RealEra stages 1–3 and UCE), bad input, save → reload, model card
and push_to_hub."""

from __future__ import annotations

import re

import pytest
import torch
from hub_server import hub_server, use_hub
from huggingface_hub import ModelCard
from transformers import HfArgumentParser
from utils import D_TEXT, MAX_LEN, tiny_pipe  # noqa: F401  (tiny Stable Diffusion components)

from hf_unlearn.model_cards.pipeline_card import build_pipeline_card
from hf_unlearn.papers import REALERA_PAPER, UCE_PAPER
from hf_unlearn.pipelines import (
    RealEraConfig,
    RealEraPipeline,
    beyond_concept_samples,
    cross_attention_projections,
    mine_neighbours,
)


def generate(pipe, prompt="a photo of cat"):
    out = pipe(
        prompt,
        num_inference_steps=2,
        height=16,
        width=16,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    return out.images  # (1, 16, 16, 3)


def token_row(pipe, prompt):
    """The last-subject row of a prompt's encoding (d,)."""
    ids, mask, idx = pipe._tokenize(prompt, "prompt", allow_empty=True)
    return pipe._encode(ids, mask)[idx]


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model, before):
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_pipeline_generates():
    images = generate(tiny_pipe())
    assert images.shape == (1, 16, 16, 3) and (images >= 0).all() and (images <= 1).all()


def test_erase_maps_concept_keys_and_values_to_the_anchor():
    pipe = tiny_pipe()
    with torch.no_grad():
        cat, dog, tree = (token_row(pipe, p) for p in ("cat", "dog", "tree"))
    w0 = {n: m.weight.clone() for n, m in cross_attention_projections(pipe.unet).items()}
    config = RealEraConfig(num_neighbours=4, num_beyond=4, lam=1e-4)
    summary = pipe.erase("cat", anchors="dog", preserve=["tree"], config=config)
    assert summary["num_neighbours"] == 4 and summary["num_beyond"] == 4
    assert summary["num_erase_rows"] == 5 and summary["num_preserve_rows"] == 1
    assert summary["num_regularisation_rows"] == 5 and summary["edited_layers"] == len(w0) == 8
    for name, layer in cross_attention_projections(pipe.unet).items():
        w = layer.weight
        torch.testing.assert_close(w @ cat, w0[name] @ dog, atol=1e-3, rtol=1e-3)  # key/value of cat = dog's
        torch.testing.assert_close(w @ tree, w0[name] @ tree, atol=1e-3, rtol=1e-3)  # preserve kept
        assert not torch.allclose(w @ cat, w0[name] @ cat, atol=1e-2)


def test_neighbours_are_erased_and_beyond_samples_kept():
    pipe = tiny_pipe()
    with torch.no_grad():
        cat, empty = token_row(pipe, "cat"), token_row(pipe, "")
    w0 = {n: m.weight.clone() for n, m in cross_attention_projections(pipe.unet).items()}
    config = RealEraConfig(num_neighbours=3, num_beyond=3, lam=1e-4, seed=5)
    neighbours, _ = mine_neighbours(cat[None], 3, 0.5, (0.85, 0.99), distance="relative", seed=5)
    beyond, _ = beyond_concept_samples(cat[None], 3, 0.5, (0.85, 0.99), distance="relative", seed=10_005)
    pipe.erase(["cat"], config=config)
    for name, layer in cross_attention_projections(pipe.unet).items():
        target = w0[name] @ empty
        for n in neighbours[:, 0]:
            torch.testing.assert_close(layer.weight @ n, target, atol=1e-3, rtol=1e-3)
        for b in beyond[:, 0]:
            torch.testing.assert_close(layer.weight @ b, w0[name] @ b, atol=1e-3, rtol=1e-3)


def test_several_concepts_and_subject_to_end():
    pipe = tiny_pipe()
    config = RealEraConfig(num_neighbours=2, num_beyond=2, token_selection="subject_to_end")
    summary = pipe.erase(["cat", "van gogh"], anchors=["animal", "art"], config=config)
    # cat: 12 − 1 rows from the subject on; "van gogh" ends one token later: 10 pairs with "art"
    assert summary["num_erase_rows"] == 3 * (11 + 10)
    assert summary["num_neighbours"] == 4 and summary["num_beyond"] == 4
    assert pipe.config.realera["erasures"][0]["anchors"] == ["animal", "art"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"concepts": ""}, "concept '' is empty"),
        ({"concepts": ["cat", "!!!"]}, "concept '!!!' is empty or has no token"),
        ({"concepts": "cat", "anchors": " Cat "}, "anchor of concept 'cat' is the concept itself"),
        (
            {"concepts": "a photo of a van gogh painting by monet art dog"},
            "more than the tokenizer's limit 12",
        ),
        (
            {"concepts": "cat", "preserve": ["tree", "a photo of a van gogh painting by monet art dog cat"]},
            "preserve concept .* limit",
        ),
        ({"concepts": ["cat", "dog"], "anchors": ["a", "b", "c"]}, "one anchor for all"),
        ({"concepts": "cat", "method": "esd"}, "method must be one of"),
        (
            {"concepts": "cat", "config": RealEraConfig(cosine_low=0.999, cosine_high=1.0, max_tries=50)},
            "fewer than",
        ),
    ],
)
def test_bad_input_leaves_unet_bit_identical(kwargs, message):
    pipe = tiny_pipe()
    before = state(pipe.unet)
    with pytest.raises((ValueError, RuntimeError), match=message):
        pipe.erase(**kwargs)
    assert_bit_identical(pipe.unet, before)
    assert pipe.config.realera is None


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"cosine_low": 0.9, "cosine_high": 0.8}, "S1 <= S2"),
        ({"cosine_low": -1.5}, r"\[-1, 1\]"),
        ({"cosine_high": 1.2}, r"\[-1, 1\]"),
        ({"lam": 0.0}, "lam"),
        ({"lam": -1.0}, "lam"),
        ({"distance_bound": 0.0}, "D1"),
        ({"num_neighbours": -1}, "num_neighbours"),
        ({"token_selection": "all"}, "token_selection"),
        ({"distribution": "uniform"}, "distribution"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RealEraConfig(**kwargs)


def test_config_parses_with_hf_argument_parser():
    (config,) = HfArgumentParser(RealEraConfig).parse_args_into_dataclasses(
        ["--anchors", "dog", "--num_neighbours", "3", "--cosine_low", "0.5", "--lam", "2"]
    )
    assert config.anchors == ["dog"] and config.num_neighbours == 3 and config.lam == 2.0
    assert all(f.metadata.get("help") for f in RealEraConfig.__dataclass_fields__.values())


def test_erase_save_reload_round_trip(tmp_path):
    pipe = tiny_pipe()
    original = generate(pipe)
    pipe.erase("cat", anchors="dog", preserve="tree", config=RealEraConfig(num_neighbours=2, seed=3))
    erased = generate(pipe)
    assert abs(erased - original).max() > 0
    pipe.save_pretrained(tmp_path)
    reloaded = RealEraPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert isinstance(reloaded, RealEraPipeline)
    assert (generate(reloaded) == erased).all()
    (record,) = reloaded.config.realera["erasures"]
    assert record["concepts"] == ["cat"] and record["anchors"] == ["dog"] and record["preserve"] == ["tree"]
    assert record["config"]["seed"] == 3 and record["num_neighbours"] == 2 and record["method"] == "realera"


def test_uce_and_realera_differ():
    uce, realera = tiny_pipe(), tiny_pipe()
    s_uce = uce.erase("cat", anchors="dog", method="uce")
    s_realera = realera.erase("cat", anchors="dog")
    assert s_uce["num_neighbours"] == s_uce["num_beyond"] == 0 and s_uce["num_erase_rows"] == 1
    assert s_realera["num_neighbours"] == 8 and s_realera["num_beyond"] == 8
    differ = [
        not torch.equal(a.weight, b.weight)
        for a, b in zip(
            cross_attention_projections(uce.unet).values(),
            cross_attention_projections(realera.unet).values(),
            strict=True,
        )
    ]
    assert all(differ)


# ---------------------------------------------------------------------------------- model card
FAKE_TOKEN = "hf_" + "FakeTokenForRealEraTests0123456789abc"


def test_card_names_concepts_anchors_neighbours_and_paper(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    pipe = tiny_pipe()
    config = RealEraConfig(num_neighbours=3, num_beyond=2, token_selection="subject_to_end")
    pipe.erase("van gogh", anchors="art", preserve=["monet"], config=config)
    card = build_pipeline_card(pipe, repo_id=f"user/erased-{FAKE_TOKEN}")
    text = str(card)
    meta = card.data.to_dict()
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "text-to-image"
    assert {"hf_unlearn", "unlearning", "concept-erasure"} <= set(meta["tags"])
    assert meta["unlearning"]["erased_concepts"] == ["van gogh"] and "base_model" not in meta
    assert "Erased concepts: `van gogh`" in text and "`art`" in text and "`monet`" in text
    assert "Mined neighbour concepts: 3; beyond-concept samples: 2" in text
    assert "| token_selection | `subject_to_end` |" in text and "| per_token | `true` |" in text
    assert "arxiv.org/abs/2410.09140" in text and REALERA_PAPER.bibtex.strip() in text
    assert "RealEra" in text and FAKE_TOKEN not in text and not re.search(r"hf_[A-Za-z0-9]{30,}", text)


def test_uce_card_names_uce_and_a_hub_base():
    pipe = tiny_pipe()
    pipe.erase("cat", anchors="dog", method="uce")
    pipe.register_to_config(_name_or_path="someone/tiny-sd")
    card = build_pipeline_card(pipe)
    assert card.data.base_model == "someone/tiny-sd" and card.data.to_dict()["unlearning"]["method"] == "uce"
    assert "erased by **UCE**" in card.content and UCE_PAPER.bibtex.strip() in card.content
    assert "Mined neighbour concepts: 0; beyond-concept samples: 0" in card.content


def test_save_pretrained_writes_our_card(tmp_path):
    pipe = tiny_pipe()
    pipe.erase("cat", anchors="dog", config=RealEraConfig(num_neighbours=2, num_beyond=1))
    pipe.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "diffusers" and "hf_unlearn" in card.data.tags
    assert "Erased concepts: `cat`" in card.content and "Mined neighbour concepts: 2" in card.content


def test_push_to_hub_uploads_our_card_without_the_token():
    pipe = tiny_pipe()
    pipe.erase("cat", anchors="dog", config=RealEraConfig(num_neighbours=2, num_beyond=1))
    with hub_server() as hub, use_hub(hub.endpoint):
        pipe.push_to_hub("user/realera-demo", token=FAKE_TOKEN)
        files = hub.files("user/realera-demo")
        assert FAKE_TOKEN in hub.tokens_seen()
    assert {"README.md", "model_index.json", "unet/config.json"} <= set(files)
    readme = files["README.md"].decode()
    assert (
        "Erased concepts: `cat`" in readme
        and 'RealEraPipeline.from_pretrained("user/realera-demo")' in readme
    )
    assert all(FAKE_TOKEN.encode() not in content for content in files.values())


def test_vocabulary_beyond_samples_keep_their_mapping():
    pipe = tiny_pipe()
    config = RealEraConfig(
        num_neighbours=2, num_beyond=8, beyond_source="vocabulary", lam=1e-4, cosine_low=0.5
    )
    w0 = {n: m.weight.clone() for n, m in cross_attention_projections(pipe.unet).items()}
    summary = pipe.erase("cat", anchors="dog", config=config)
    with torch.no_grad():
        cat = token_row(pipe, "cat")
    kept = 0
    from hf_unlearn.pipelines.neighbours import outside_band, vocabulary_words

    for word in vocabulary_words(pipe.tokenizer, 8, seed=50_000):
        with torch.no_grad():
            row = token_row(pipe, word)
        if not outside_band(cat[None], row[None], 0.5).item():
            continue
        kept += 1
        for name, layer in cross_attention_projections(pipe.unet).items():
            torch.testing.assert_close(layer.weight @ row, w0[name] @ row, atol=2e-3, rtol=2e-3)
    assert kept == summary["num_beyond"] > 0


def test_erase_refuses_a_unet_without_cross_attention():
    from diffusers import UNet2DConditionModel

    pipe = tiny_pipe()
    pipe.unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D",
        cross_attention_dim=D_TEXT,
    )
    before = state(pipe.unet)
    for method in ("realera", "uce"):
        with pytest.raises(ValueError, match="no cross-attention"):
            pipe.erase("cat", method=method)
    assert_bit_identical(pipe.unet, before)
