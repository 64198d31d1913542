"""Unlearning model cards: rendering, metadata round trip, fingerprints, config diffs, secrets."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from datasets import Dataset
from huggingface_hub import ModelCard
from transformers import TrainingArguments

from hf_unlearn.data.demo import make_demo_dataset
from hf_unlearn.model_cards import (
    build_model_card,
    config_diff,
    dataset_fingerprint,
    is_secret_name,
    library_versions,
    method_card_info,
    without_secrets,
)
from hf_unlearn.registry import Paper

FAKE_TOKEN = "hf_fake_token_for_tests"
REAL_LOOKING_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
PAPER = Paper(
    title="A Fake Paper on Forgetting",
    arxiv_id="2401.99999",
    bibtex="@article{fake2024forgetting,\n  title={A Fake Paper on Forgetting},\n  author={Doe, Jane},\n  year={2024}\n}",
)
METRICS = {
    "before": {"forget_quality": 1.25e-9, "model_utility": 0.6125},
    "after": {"forget_quality": 0.4321, "model_utility": 0.5875},
    "retain_model": {"forget_quality": 1.0, "model_utility": 0.6},
}


@dataclass
class FakeUnlearnConfig(TrainingArguments):
    alpha: float = field(default=1.0)
    forget_loss: str = field(default="ga")


@pytest.fixture(scope="module")
def demo():
    return make_demo_dataset(n_people=6, n_forget=2, n_holdout=1)


def make_args(tmp_path, **kw):
    return FakeUnlearnConfig(output_dir=str(tmp_path / "out"), report_to=[], hub_token=FAKE_TOKEN, **kw)


def make_card(demo, tmp_path, **overrides):
    kwargs = dict(
        method_id="fake_npo",
        method_name="FakeNPO",
        paper=PAPER,
        base_model="org/tiny-base",
        config=config_diff(make_args(tmp_path, learning_rate=1e-5, alpha=0.5)),
        forget=dataset_fingerprint(demo["forget"]),
        retain=dataset_fingerprint(demo["retain"]),
        metrics=METRICS,
        model_name="tiny-base-unlearned",
        extra_tags=["npo-like"],
    )
    kwargs.update(overrides)
    return build_model_card(**kwargs)


def test_card_renders_method_data_metrics_and_versions(demo, tmp_path):
    card = make_card(demo, tmp_path)
    text = card.content
    fp = dataset_fingerprint(demo["forget"])
    assert text.startswith("---\n")
    assert "# tiny-base-unlearned" in text
    assert fp["sha256"] in text and f"{fp['num_rows']} rows" in text
    assert dataset_fingerprint(demo["retain"])["sha256"] in text
    assert "```bibtex\n@article{fake2024forgetting," in text and "author={Doe, Jane}" in text
    assert "https://arxiv.org/abs/2401.99999" in text and "FakeNPO" in text
    # before / after / retain-model numbers and the change column
    assert "| Metric | Before | After | Retain model | Change (after - before) |" in text
    assert "| forget_quality | 1.25e-09 | 0.4321 | 1 | +0.4321 |" in text
    assert "| model_utility | 0.6125 | 0.5875 | 0.6 | -0.025 |" in text
    # config: only the changed fields
    assert "| `learning_rate` | `1e-05` |" in text and "| `alpha` | `0.5` |" in text
    assert "forget_loss" not in text and "num_train_epochs" not in text
    assert 'AutoModelForCausalLM.from_pretrained("tiny-base-unlearned")' in text
    assert "Unlearning is approximate" in text and "measured against a retain model" in text
    versions = library_versions()
    for lib in ("hf_unlearn", "transformers", "torch", "huggingface_hub"):
        assert f"- {lib}: {versions[lib]}" in text
    # never the content of the forget set
    for row in demo["forget"]:
        assert row["answer"] not in text and row["person"] not in text


def test_metadata_round_trips_with_eval_results(demo, tmp_path):
    card = make_card(demo, tmp_path)
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    data = loaded.data
    assert data.tags[:4] == ["hf_unlearn", "unlearning", "fake_npo", "npo-like"]
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert data.base_model == "org/tiny-base"
    assert data.model_name == "tiny-base-unlearned"
    results = {r.metric_type: r for r in data.eval_results}
    assert set(results) == {"forget_quality", "model_utility"}
    assert results["forget_quality"].metric_value == pytest.approx(0.4321)  # the "after" values
    assert results["model_utility"].task_type == "text-generation"
    assert results["model_utility"].dataset_type == "forget-set"
    d = data.to_dict()
    assert d["model-index"][0]["name"] == "tiny-base-unlearned"
    unl = d["unlearning"]
    assert unl["method"] == "fake_npo" and unl["paper"] == "arxiv:2401.99999"
    assert unl["forget_set"] == {k: dataset_fingerprint(demo["forget"])[k] for k in ("num_rows", "sha256")}
    assert unl["metrics"]["retain_model"]["forget_quality"] == 1.0
    assert unl["metrics"]["before"]["forget_quality"] == pytest.approx(1.25e-9)


def test_no_secret_reaches_the_card(demo, tmp_path):
    args = make_args(tmp_path, learning_rate=2e-5, hub_model_id="user/tiny", push_to_hub=True)
    assert args.hub_token == FAKE_TOKEN
    diff = config_diff(args)
    assert "hub_token" not in diff and "output_dir" not in diff
    raw_config = {
        "learning_rate": 2e-5,
        "hub_token": FAKE_TOKEN,
        "wandb_api_key": "k-123",
        "my_password": "pw",
        "nested": {"secretValue": "s", "ok": 1},
        "note": f"token {REAL_LOOKING_TOKEN}",
    }
    cards = [
        make_card(demo, tmp_path, config=c, notes=f"pushed with {REAL_LOOKING_TOKEN}")
        for c in (args, diff, raw_config)
    ]
    for card in cards:
        for secret in (FAKE_TOKEN, REAL_LOOKING_TOKEN, "k-123", '"pw"', "secretValue"):
            assert secret not in card.content, secret
        assert str(tmp_path) not in card.content  # no local output path
        assert "pushed with <redacted>" in card.content
    assert cards[0].content == cards[1].content  # a dataclass config is diffed the same way
    assert '| `hub_model_id` | `"user/tiny"` |' in cards[0].content and "push_to_hub" in cards[0].content
    assert (
        '| `note` | `"token <redacted>"` |' in cards[2].content
        and '| `nested` | `{"ok": 1}` |' in cards[2].content
    )
    for name in ("hub_token", "api_key", "wandb_api_key", "HF_TOKEN", "clientSecret", "db_password", "auth"):
        assert is_secret_name(name), name
    for name in (
        "max_new_tokens",
        "average_tokens_across_devices",
        "learning_rate",
        "hub_model_id",
        "author",
    ):
        assert not is_secret_name(name), name
    clean = without_secrets(args)
    assert clean.hub_token is None and args.hub_token == FAKE_TOKEN and clean.learning_rate == 2e-5


def test_fingerprint_is_stable_and_sensitive(demo):
    forget = demo["forget"]
    fp = dataset_fingerprint(forget)
    assert fp == dataset_fingerprint(forget)  # stable across calls
    assert fp["num_rows"] == len(forget) and fp["columns"] == sorted(forget.column_names)
    assert len(fp["sha256"]) == 64 and set(set(fp["sha256"])) <= set("0123456789abcdef")
    # same rows as plain Python data give the same fingerprint
    assert dataset_fingerprint(forget.to_list()) == fp
    assert dataset_fingerprint(forget.to_dict()) == fp
    # one answer changed -> different fingerprint
    changed = forget.to_list()
    changed[3] = dict(changed[3], answer=changed[3]["answer"] + " ")
    assert dataset_fingerprint(Dataset.from_list(changed))["sha256"] != fp["sha256"]
    # order-sensitive, and depends on the selected columns
    assert dataset_fingerprint(forget.select(list(reversed(range(len(forget))))))["sha256"] != fp["sha256"]
    qa = dataset_fingerprint(forget, columns=["question", "answer"])
    assert qa["columns"] == ["question", "answer"] and qa["sha256"] != fp["sha256"]
    assert (
        dataset_fingerprint(Dataset.from_list(changed), columns=["question"])["sha256"]
        == dataset_fingerprint(forget, columns=["question"])["sha256"]
    )
    # tokenized rows (lists of ints) hash too
    tok = Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]], "labels": [[-100, 2, 3], [-100, 5]]})
    assert dataset_fingerprint(tok)["num_rows"] == 2
    with pytest.raises(KeyError):
        dataset_fingerprint(forget, columns=["nope"])


def test_config_diff_lists_only_changed_fields(tmp_path):
    args = FakeUnlearnConfig(
        output_dir=str(tmp_path),
        report_to=[],
        learning_rate=3e-4,
        num_train_epochs=2,
        alpha=0.25,
        logging_steps=7,
        hub_token=FAKE_TOKEN,
    )
    assert config_diff(args) == {
        "num_train_epochs": 2,
        "learning_rate": 3e-4,
        "logging_steps": 7,
        "alpha": 0.25,
    }
    assert config_diff(FakeUnlearnConfig(output_dir=str(tmp_path), report_to=[])) == {}

    @dataclass
    class Plain:
        lr: float = 1e-3
        layers: list = field(default_factory=lambda: [1, 2])
        cache_dir: str | None = None
        api_key: str | None = None

    assert config_diff(Plain()) == {}
    assert config_diff(Plain(lr=0.1, layers=[3], cache_dir="/x", api_key="k")) == {"lr": 0.1, "layers": [3]}
    with pytest.raises(TypeError):
        config_diff(42)


def test_local_base_model_stays_out_of_metadata(demo, tmp_path):
    local = tmp_path / "checkpoints" / "my-local-model"
    local.mkdir(parents=True)
    card = make_card(demo, tmp_path, base_model=str(local), model_name=None, metrics=None, retain=None)
    assert card.data.base_model is None
    assert "the local checkpoint `my-local-model`" in card.content and str(local) not in card.content
    assert card.data.eval_results is None and "model-index" not in card.data.to_dict()
    assert "not evaluated" in card.content and "No retain model was given" in card.content
    assert card.data.to_dict()["unlearning"]["method"] == "fake_npo"
    assert "# my-local-model-fake_npo-unlearned" in card.content
    assert "Retain set" not in card.content


def test_method_card_info_reads_method_metadata():
    class FakeTrainer:
        _name = "fake"
        _paper = PAPER
        _tag_names = ["fake-tag"]

    info = method_card_info(FakeTrainer)
    assert info == {"method_id": "fake", "method_name": "Fake", "paper": PAPER, "extra_tags": ("fake-tag",)}
    card = build_model_card(**info, base_model=None, config={}, forget=None, retain=None, metrics=None)
    assert card.data.tags == ["hf_unlearn", "unlearning", "fake", "fake-tag"]
    assert (
        "All settings were left at the defaults" in card.content
        and "Forget set:** not recorded" in card.content
    )
