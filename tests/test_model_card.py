"""Unlearning model cards: rendering, metadata round trip, fingerprints, config diffs, secrets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from datasets import Dataset
from huggingface_hub import ModelCard, ModelCardData
from transformers import TrainingArguments

from hf_unlearn.data.demo import make_demo_dataset
from hf_unlearn.model_cards import (
    build_model_card,
    config_diff,
    dataset_fingerprint,
    is_secret_name,
    library_versions,
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
    assert "| Metric | Measured on | Before | After | Retain model | Change (after - before) |" in text
    assert "| forget_quality | Forget set | 1.25e-09 | 0.4321 | 1 | +0.4321 |" in text
    utility = "Model-utility sets (retain, real authors, world facts)"
    assert f"| model_utility | {utility} | 0.6125 | 0.5875 | 0.6 | -0.025 |" in text
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
    assert results["model_utility"].dataset_type == "tofu-model-utility"  # not the forget set
    assert results["forget_quality"].dataset_type == "forget-set"
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


def test_card_without_data_or_settings():
    info = {"method_id": "fake", "method_name": "Fake", "paper": PAPER, "extra_tags": ("fake-tag",)}
    card = build_model_card(**info, base_model=None, config={}, forget=None, retain=None, metrics=None)
    assert card.data.tags == ["hf_unlearn", "unlearning", "fake", "fake-tag"]
    assert (
        "All settings were left at the defaults" in card.content
        and "Forget set:** not recorded" in card.content
    )


# ---------------------------------------------------------------- trainer cards: metrics, metadata
# Regression tests of the model-card issue: record_metrics dropped nested values and numpy scalars,
# model-index put every metric under the forget set, no license / datasets fields, no base model named
# for local or config-built models, and "fine-tunes" on the cards of one-shot edits (SSD, IAU).


@pytest.fixture(scope="module")
def lm(demo):
    from hf_unlearn.tiny import tiny_llama, train_tokenizer

    texts = [r["question"] + " " + r["answer"] for split in demo.values() for r in split]
    tok = train_tokenizer(texts, vocab_size=300)
    return tok, tiny_llama(tok, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)


def lm_trainer(cls, cfg_cls, demo, lm, tmp_path, model=None, **kw):
    import copy

    tok, base = lm
    args = cfg_cls(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, disable_tqdm=True, **kw)
    return cls(
        model=model if model is not None else copy.deepcopy(base),
        args=args,
        forget_dataset=demo["forget"],
        retain_dataset=demo["retain"],
        processing_class=tok,
    )


def saved_card(trainer, **kw) -> ModelCard:
    trainer.create_model_card(**kw)
    return ModelCard.load(trainer.args.output_dir + "/README.md")


def results_by_metric(card) -> dict:
    return {(r.dataset_type, r.metric_type): r for r in card.data.eval_results or []}


def test_record_metrics_accepts_evaluate_tofu_result_as_is(demo, lm, tmp_path):
    import numpy as np
    import torch

    from hf_unlearn import FLATConfig, FLATTrainer
    from hf_unlearn.evaluation import evaluate_tofu, model_truth_ratios

    tok, model = lm
    splits = {"forget": demo["forget"], "retain": demo["retain"]}
    common = dict(max_new_tokens=4, group_column="person", disable_tqdm=True)
    res = evaluate_tofu(model, tok, splits, **common)  # no retain model: only nested values + a list
    assert set(res) == {"splits", "forget_truth_ratios"}
    trainer = lm_trainer(FLATTrainer, FLATConfig, demo, lm, tmp_path)
    trainer.record_metrics("before", res)
    rec = trainer.unlearning_metrics["before"]
    assert rec["forget/probability"] == pytest.approx(res["splits"]["forget"]["probability"])
    assert rec["retain/truth_ratio"] == pytest.approx(res["splits"]["retain"]["truth_ratio"])
    assert "forget_truth_ratios" not in rec and not any("truth_ratios" in k for k in rec)  # per-sample

    ratios = model_truth_ratios(model, tok, demo["forget"], group_column="person", disable_tqdm=True)
    after = evaluate_tofu(model, tok, splits, ratios, **common)
    after["mia_auc"] = np.float32(0.625)  # numpy and torch scalars are numbers too
    after["splits"]["forget"]["extra"] = torch.tensor(0.5)
    trainer.record_metrics("after", after)
    rec = trainer.unlearning_metrics["after"]
    assert rec["mia_auc"] == pytest.approx(0.625) and type(rec["mia_auc"]) is float
    assert rec["forget/extra"] == 0.5 and rec["forget_quality"] == pytest.approx(after["forget_quality"])
    card = saved_card(trainer)
    assert "not evaluated" not in card.content
    assert "| forget/probability |" in card.content and "| retain/rouge_l_recall |" in card.content
    results = results_by_metric(card)
    assert results[("forget-set", "probability")].metric_value == pytest.approx(
        after["splits"]["forget"]["probability"]
    )
    assert ("retain-set", "probability") in results and ("forget-set", "mia_auc") in results

    for bad in ({"forget_truth_ratios": [0.1, 0.2]}, {"splits": {"forget": {"name": "x"}}}, {}):
        with pytest.raises(ValueError, match="no scalar"):
            trainer.record_metrics("after", bad)
    with pytest.raises(ValueError, match="stage"):
        trainer.record_metrics("later", {"x": 1.0})


def test_record_metrics_accepts_classification_results_and_ssd_card_says_edit(tmp_path):
    from classif_utils import blobs, tiny_resnet

    from hf_unlearn import SSDConfig, SSDTrainer
    from hf_unlearn.evaluation import evaluate_unlearning

    data = blobs(36)
    forget, retain, test = data.select(range(6)), data.select(range(6, 24)), data.select(range(24, 36))
    model = tiny_resnet()
    args = SSDConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = SSDTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain)
    trainer.record_metrics("after", evaluate_unlearning(model, forget, retain, test, batch_size=8))
    card = saved_card(trainer)
    results = results_by_metric(card)
    assert {("forget-set", "UA"), ("retain-set", "RA"), ("test-set", "TA"), ("forget-set", "MIA")} <= set(
        results
    )
    assert not any(m == "eval_seconds" for _, m in results)  # a timing, not a metric of the model
    assert "fine-tune" not in card.content and "trained with" not in card.content
    assert "without training steps" in card.content and "## Configuration" in card.content


def test_iau_card_does_not_say_fine_tunes_but_flat_card_does(demo, lm, tmp_path):
    from hf_unlearn import FLATConfig, FLATTrainer, IAUConfig, IAUTrainer

    iau = saved_card(lm_trainer(IAUTrainer, IAUConfig, demo, lm, tmp_path / "iau"))
    assert "fine-tune" not in iau.content and "without training steps" in iau.content
    flat = saved_card(lm_trainer(FLATTrainer, FLATConfig, demo, lm, tmp_path / "flat"))
    assert "Unlearning fine-tunes the model" in flat.content and "## Training configuration" in flat.content


def test_model_index_lists_each_metric_under_its_dataset(demo, tmp_path):
    metrics = {
        "after": {
            "forget/probability": 0.1,
            "retain/probability": 0.8,
            "holdout/rouge_l_recall": 0.3,
            "forget_rouge_l": 0.2,  # flat names with a split prefix (the demo's)
            "retain_rouge_l": 0.7,
            "forget_quality": 0.5,
            "model_utility": 0.6,
            "mia_auc": 0.55,
            "forget/num_samples": 12,
        }
    }
    card = make_card(demo, tmp_path, metrics=metrics)
    results = results_by_metric(card)
    by = set(results)
    assert by == {
        ("forget-set", "probability"),
        ("retain-set", "probability"),
        ("holdout-set", "rouge_l_recall"),
        ("forget-set", "forget_rouge_l"),
        ("retain-set", "retain_rouge_l"),
        ("forget-set", "forget_quality"),
        ("tofu-model-utility", "model_utility"),
        ("forget-set", "mia_auc"),
    }, by
    assert results[("retain-set", "retain_rouge_l")].dataset_name == "Retain set"
    # the YAML groups results by dataset; the table says where each metric was measured
    index = card.data.to_dict()["model-index"][0]["results"]
    assert sorted(r["dataset"]["type"] for r in index) == sorted(
        {"forget-set", "retain-set", "holdout-set", "tofu-model-utility"}
    )
    assert "| retain_rouge_l | Retain set |" in card.content


def test_license_and_base_model_of_a_local_checkpoint(demo, lm, tmp_path):
    from hf_unlearn import FLATConfig, FLATTrainer, IAUConfig, IAUTrainer

    tok, model = lm
    local = tmp_path / "my-finetune"
    model.save_pretrained(local)
    ModelCard("---\nlicense: mit\nbase_model: org/pretrained\n---\n# mine\n").save(local / "README.md")
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(local)
    assert loaded.config._name_or_path == str(local)
    card = saved_card(lm_trainer(FLATTrainer, FLATConfig, demo, lm, tmp_path, model=loaded))
    assert card.data.license == "mit"  # inherited from the base model's own card
    assert card.data.base_model is None and str(local) not in card.content  # the Hub validates it
    assert "the local checkpoint `my-finetune` (`LlamaForCausalLM`" in card.content
    assert "[org/pretrained](https://huggingface.co/org/pretrained)" in card.content

    trainer = lm_trainer(IAUTrainer, IAUConfig, demo, lm, tmp_path / "b")  # built from a config
    card = saved_card(trainer, license="apache-2.0")
    assert card.data.license == "apache-2.0" and card.data.base_model is None
    assert "`LlamaForCausalLM` built from a configuration" in card.content  # as the demo's model
    assert saved_card(trainer).data.license == "apache-2.0"  # kept for later cards of this trainer
    fresh = lm_trainer(IAUTrainer, IAUConfig, demo, lm, tmp_path / "b2")
    assert saved_card(fresh).data.license is None  # unknown: omitted, never guessed

    hub_model = lm_trainer(FLATTrainer, FLATConfig, demo, lm, tmp_path / "c")
    hub_model.model.config._name_or_path = "org/tiny-base"
    card = saved_card(hub_model, finetuned_from=None)
    assert card.data.base_model == "org/tiny-base"
    assert saved_card(hub_model, finetuned_from="other/base").data.base_model == "other/base"


def test_base_model_license_from_the_hub_cache(tmp_path):
    from hf_unlearn.model_cards import describe_base_model

    snap = tmp_path / "models--org--cached" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (tmp_path / "models--org--cached" / "refs").mkdir()
    (tmp_path / "models--org--cached" / "refs" / "main").write_text("abc123")
    (snap / "README.md").write_text("---\nlicense: llama3\n---\n# cached\n")
    info = describe_base_model("org/cached", "LlamaForCausalLM", cache_dir=tmp_path)
    assert info["hub_id"] == "org/cached" and info["license"] == "llama3"
    assert describe_base_model("org/absent", None, cache_dir=tmp_path)["license"] is None
    # a single-segment name is a Hub id only if the Hub cache has it (else it is just a label)
    assert describe_base_model("my-model", None, cache_dir=tmp_path)["hub_id"] is None


def test_datasets_field_names_hub_and_named_datasets(demo, lm, tmp_path):
    import shutil

    from datasets import DatasetInfo, load_dataset

    from hf_unlearn import FLATConfig, FLATTrainer
    from hf_unlearn.model_cards import dataset_source

    assert dataset_source(demo["forget"]) is None  # built in memory: no name
    # a Hub dataset as datasets caches it: <cache>/<namespace>___<name>/<config>/<version>/<hash>/
    arrow = tmp_path / "hub" / "locuslab___tofu" / "forget01" / "0.0.0" / "abc"
    arrow.mkdir(parents=True)
    src = demo["forget"].cache_files or None
    if src is None:
        demo["forget"].save_to_disk(tmp_path / "saved")
        src = [{"filename": str(next((tmp_path / "saved").glob("*.arrow")))}]
    shutil.copy(src[0]["filename"], arrow / "tofu-train.arrow")
    info = DatasetInfo(dataset_name="tofu", builder_name="parquet", config_name="forget01")
    hub_forget = Dataset.from_file(str(arrow / "tofu-train.arrow"), info=info, split="train")
    assert dataset_source(hub_forget) == {
        "name": "locuslab/tofu",
        "hub_id": "locuslab/tofu",
        "config": "forget01",
        "split": "train",
    }
    # a folder loaded by path has a name but no Hub id; Dataset.from_json gets the builder's name only
    folder = tmp_path / "my_retain"
    folder.mkdir()
    demo["retain"].to_json(folder / "train.jsonl")
    named = load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "c"))
    assert dataset_source(named)["name"] == "my_retain" and dataset_source(named)["hub_id"] is None
    assert (
        dataset_source(Dataset.from_json(str(folder / "train.jsonl"), cache_dir=str(tmp_path / "c"))) is None
    )

    tok, model = lm
    import copy

    args = FLATConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = FLATTrainer(
        model=copy.deepcopy(model),
        args=args,
        forget_dataset=hub_forget,
        retain_dataset=named,
        processing_class=tok,
    )
    trainer.record_metrics("after", {"forget/probability": 0.1, "retain/probability": 0.9})
    card = saved_card(trainer)
    assert card.data.datasets == ["locuslab/tofu"]  # Hub ids only: the Hub links them
    assert "`my_retain`" in card.content and "`locuslab/tofu`" in card.content
    forget_result = results_by_metric(card)[("locuslab/tofu", "probability")]
    assert forget_result.dataset_config == "forget01" and forget_result.dataset_split == "train"
    assert ("retain-set", "probability") in results_by_metric(card)
    assert saved_card(trainer, dataset_tags=["org/extra"]).data.datasets == ["locuslab/tofu", "org/extra"]


def test_metrics_recorded_after_save_model_reach_the_card(demo, lm, tmp_path):
    from hf_unlearn import FLATConfig, FLATTrainer

    trainer = lm_trainer(FLATTrainer, FLATConfig, demo, lm, tmp_path, save_strategy="no")
    trainer.save_model()
    readme = tmp_path / "out" / "README.md"
    assert "not evaluated" in readme.read_text()
    trainer.record_metrics("after", {"forget": {"probability": 0.25}})  # refreshes the written card
    assert "| forget/probability |" in readme.read_text() and "not evaluated" not in readme.read_text()


def test_guard_card_is_rendered_from_a_template():
    from types import SimpleNamespace

    from hf_unlearn.model_cards import guard_card
    from hf_unlearn.model_cards.card import CARD_TEMPLATES, TEMPLATES_DIR

    assert (TEMPLATES_DIR / CARD_TEMPLATES["logits_processor"]).is_file()
    assert "lines = [" not in Path(guard_card.__file__).read_text()

    @dataclass
    class Cfg:
        threshold: float = 0.5
        token: str | None = None

    guard = SimpleNamespace(
        config=Cfg(token=REAL_LOOKING_TOKEN),
        model=SimpleNamespace(config=SimpleNamespace(_name_or_path="org/base-lm")),
        _tag_names=["guard"],
        _card_kind="logits_processor",
        forget_fingerprint={"num_rows": 3, "sha256": "ab" * 32},
        _paper=PAPER,
        answers=["a", "b", "c"],
    )
    card = guard_card.build_guard_card(guard)
    assert card.data.base_model == "org/base-lm" and card.data.tags == ["hf_unlearn", "unlearning", "guard"]
    text = card.content
    assert "weights are unchanged" in text and "(3 answers)" in text and "ab" * 32 in text
    assert "`base-lm`" in text and "@article{fake2024forgetting," in text
    assert REAL_LOOKING_TOKEN not in text and '"threshold": 0.5' in text


def test_trainer_tags_the_model_for_the_hub(tmp_path):
    from utils import demo_world

    from hf_unlearn import FLATConfig, FLATTrainer

    data, tok, model = demo_world()
    FLATTrainer(
        model=model,
        args=FLATConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True),
        forget_dataset=data["forget"],
        processing_class=tok,
    )
    assert {"hf_unlearn", "unlearning", "flat"} <= set(model.model_tags)


def test_each_kind_of_method_renders_its_own_template():
    from hf_unlearn.model_cards.card import render_card

    data = ModelCardData(library_name="hf_unlearn")
    with pytest.raises(ValueError, match="no model-card template for methods of kind 'nope'"):
        render_card("nope", data)
