"""Classification unlearning metrics: UA/RA/TA, SalUn MIA-Efficacy, SSD entropy MIA, Avg. Gap."""

import math
import socket

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import ResNetConfig, ResNetForImageClassification

from hf_unlearn.evaluation import metric_path
from hf_unlearn.evaluation.classification import (
    accuracy,
    avg_gap,
    entropy_mia,
    evaluate_unlearning,
    predict,
    prediction_entropy,
    split_membership_groups,
    svc_mia_efficacy,
    true_class_confidence,
    unlearning_accuracy,
)

NUM_LABELS = 3
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.25, 0.25, 0.5]])
LABELS = np.array([0, 2, 0, 1])


# --------------------------------------------------------------------------- pure functions


def test_accuracy_hand_computed():
    # argmax = [0, 2, 1, 2] vs labels [0, 2, 0, 1] -> 2 of 4 correct
    assert accuracy(PROBS, LABELS) == 50.0
    assert accuracy(np.array([0, 2, 1, 2]), LABELS) == 50.0  # class ids give the same value
    assert unlearning_accuracy(PROBS, LABELS, "forget") == {"UA": 50.0}
    assert unlearning_accuracy([0, 2, 0, 2], LABELS, "retain") == {"RA": 75.0}
    assert unlearning_accuracy(PROBS, LABELS, "test") == {"TA": 50.0}


def test_true_class_confidence_hand_computed():
    np.testing.assert_allclose(true_class_confidence(PROBS, LABELS), [0.7, 0.8, 0.3, 0.25])


def test_prediction_entropy_hand_computed():
    probs = np.array([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(prediction_entropy(probs), [math.log(4), 0.0, math.log(2)], atol=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: accuracy(PROBS, LABELS[:3]), "labels"),
        (lambda: accuracy(PROBS, [0, 1, 2, 3]), r"0\.\.2"),
        (lambda: accuracy(np.zeros((0, 3)), []), "non-empty"),
        (lambda: accuracy(PROBS, LABELS.astype(float)), "integer"),
        (lambda: true_class_confidence(PROBS, [0, -1, 0, 0]), "class ids"),
        (lambda: unlearning_accuracy(PROBS, LABELS, "train"), "split"),
        (lambda: svc_mia_efficacy([], [0.5], [0.5]), "shadow_member_conf"),
        (lambda: entropy_mia([0.1], [1.0], [[0.1, 0.2]]), "target_entropy"),
        (lambda: entropy_mia([0.1], [float("nan")], [0.1]), "NaN"),
        (lambda: split_membership_groups([0.1, 0.2], [1, 0]), "target"),
        (lambda: split_membership_groups([0.1, 0.2], [1, 2]), "groups"),
    ],
)
def test_bad_metric_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_avg_gap_hand_computed():
    unlearned = {"UA": 2.0, "MIA": 14.0, "RA": 99.0, "TA": 94.0, "extra": 1.0}
    retrain = {"UA": 5.0, "MIA": 13.0, "RA": 100.0, "TA": 94.0}
    assert avg_gap(unlearned, retrain) == pytest.approx((3 + 1 + 1 + 0) / 4)
    assert avg_gap(unlearned, retrain, keys=("UA",)) == pytest.approx(3.0)
    with pytest.raises(ValueError, match=r"retrain is missing \['extra'\]"):
        avg_gap(unlearned, retrain, keys=("UA", "extra"))
    with pytest.raises(ValueError, match="metrics is missing"):
        avg_gap({"UA": 1.0}, retrain)


def _toy_scores(member_center, nonmember_center, n=40, seed=0):
    rng = np.random.default_rng(seed)
    members = member_center + 0.005 * rng.standard_normal(n)
    nonmembers = nonmember_center + 0.05 * rng.standard_normal(n)
    return members, nonmembers, rng


def test_svc_mia_efficacy_separable():
    members, nonmembers, rng = _toy_scores(0.99, 0.5)
    member_like = 0.99 + 0.005 * rng.standard_normal(20)
    nonmember_like = 0.5 + 0.05 * rng.standard_normal(20)
    # targets that look like training data are predicted member: efficacy ~0 (not forgotten)
    assert svc_mia_efficacy(members, nonmembers, member_like) == pytest.approx(0.0, abs=5)
    # targets that look unseen are predicted non-member: efficacy ~100 (forgotten)
    assert svc_mia_efficacy(members, nonmembers, nonmember_like) == pytest.approx(100.0, abs=5)
    half = svc_mia_efficacy(members, nonmembers, np.r_[member_like[:10], nonmember_like[:10]])
    assert half == pytest.approx(50.0, abs=5)
    # deterministic
    assert svc_mia_efficacy(members, nonmembers, nonmember_like) == svc_mia_efficacy(
        members, nonmembers, nonmember_like
    )


def test_entropy_mia_separable():
    # members: confident predictions (low entropy); non-members: high entropy
    members, nonmembers, rng = _toy_scores(0.05, 1.0)
    member_like = 0.05 + 0.005 * rng.standard_normal(20)
    nonmember_like = 1.0 + 0.05 * rng.standard_normal(20)
    assert entropy_mia(members, nonmembers, member_like) == pytest.approx(100.0, abs=5)
    assert entropy_mia(members, nonmembers, nonmember_like) == pytest.approx(0.0, abs=5)
    # class_weight="balanced": an unbalanced shadow set does not move the boundary to the majority
    assert entropy_mia(members[:5], nonmembers, member_like) == pytest.approx(100.0, abs=5)


# --------------------------------------------------------------------------- tiny classifier


def _model(seed=0):
    torch.manual_seed(seed)
    config = ResNetConfig(
        num_channels=1,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=NUM_LABELS,
    )
    return ResNetForImageClassification(config)


def _dataset(n, seed, label_column="labels"):
    rng = np.random.default_rng(seed)
    return Dataset.from_dict(
        {
            "pixel_values": rng.standard_normal((n, 1, 8, 8)).astype(np.float32).tolist(),
            label_column: rng.integers(0, NUM_LABELS, n).tolist(),
            "id": list(range(n)),  # not a model input: must not be forwarded
        }
    )


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def splits():
    return {"forget": _dataset(12, 1), "retain": _dataset(30, 2), "test": _dataset(16, 3)}


def _reference_probs(model, dataset):
    """Independent forward pass: the whole set as one batch, eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = torch.tensor(dataset["pixel_values"], dtype=torch.float32)
        probs = torch.softmax(model(pixel_values=x).logits, dim=-1).numpy()
    model.train(was_training)
    return probs, np.array(dataset["labels"])


@pytest.mark.parametrize("training", [True, False])
def test_predict_probabilities_and_mode_restored(model, splits, training):
    model.train(training)
    probs, labels = predict(model, splits["retain"], batch_size=7)
    assert model.training is training
    assert probs.shape == (30, NUM_LABELS) and probs.dtype == np.float32
    assert labels.shape == (30,)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    ref_probs, ref_labels = _reference_probs(model, splits["retain"])
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-5)  # eval mode: batch size does not matter
    expected_acc = 100.0 * np.mean(ref_probs.argmax(axis=1) == ref_labels)
    assert accuracy(probs, labels) == pytest.approx(expected_acc)


def test_predict_label_column_and_label_convention(model):
    renamed = _dataset(5, 4, label_column="target")
    probs, labels = predict(model, renamed, label_column="target")
    assert labels.tolist() == renamed["target"]
    probs2, labels2 = predict(model, _dataset(5, 4, label_column="label"))  # datasets' "label" is accepted
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_allclose(probs, probs2)


def test_evaluate_unlearning(model, splits):
    model.train()
    out = evaluate_unlearning(model, splits["forget"], splits["retain"], splits["test"], batch_size=8)
    assert model.training  # mode restored
    assert list(out) == ["UA", "RA", "TA", "MIA", "entropy_MIA", "eval_seconds"]
    probs = {name: _reference_probs(model, ds) for name, ds in splits.items()}
    acc = {name: 100.0 * np.mean(p.argmax(1) == y) for name, (p, y) in probs.items()}
    assert out["UA"] == pytest.approx(100.0 - acc["forget"], abs=1e-9)
    assert out["RA"] == pytest.approx(acc["retain"], abs=1e-9)
    assert out["TA"] == pytest.approx(acc["test"], abs=1e-9)
    # shadow members = the first len(test) = 16 retain samples, in dataset order
    conf = {name: true_class_confidence(p, y) for name, (p, y) in probs.items()}
    ent = {name: prediction_entropy(p) for name, (p, _) in probs.items()}
    assert out["MIA"] == pytest.approx(svc_mia_efficacy(conf["retain"][:16], conf["test"], conf["forget"]))
    assert out["entropy_MIA"] == pytest.approx(entropy_mia(ent["retain"][:16], ent["test"], ent["forget"]))
    for key in ("UA", "RA", "TA", "MIA", "entropy_MIA"):
        assert 0.0 <= out[key] <= 100.0
    assert out["eval_seconds"] > 0

    small = evaluate_unlearning(model, splits["forget"], splits["retain"], splits["test"], shadow_size=5)
    assert small["MIA"] == pytest.approx(svc_mia_efficacy(conf["retain"][:5], conf["test"], conf["forget"]))


def test_evaluate_unlearning_bad_input(model, splits):
    empty = splits["forget"].select([])
    with pytest.raises(ValueError, match="forget is empty"):
        evaluate_unlearning(model, empty, splits["retain"], splits["test"])
    with pytest.raises(ValueError, match="test is empty"):
        evaluate_unlearning(model, splits["forget"], splits["retain"], splits["test"].select([]))
    bad_labels = splits["retain"].map(lambda row: {"labels": row["labels"] + NUM_LABELS})
    with pytest.raises(ValueError, match="retain has labels .* num_labels=3"):
        evaluate_unlearning(model, splits["forget"], bad_labels, splits["test"])
    with pytest.raises(ValueError, match="test has no label column 'labels'"):
        evaluate_unlearning(
            model, splits["forget"], splits["retain"], splits["test"].remove_columns("labels")
        )
    with pytest.raises(ValueError, match="shadow_size"):
        evaluate_unlearning(model, splits["forget"], splits["retain"], splits["test"], shadow_size=31)
    with pytest.raises(ValueError, match="dataset has labels"):
        predict(model, bad_labels)


# --------------------------------------------------------------------------- evaluate modules


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _membership_case(member_center, nonmember_center, target):
    members, nonmembers, _ = _toy_scores(member_center, nonmember_center, n=10)
    scores = np.r_[members, nonmembers, target].tolist()
    groups = [1] * len(members) + [0] * len(nonmembers) + [-1] * len(target)
    return scores, groups, (members, nonmembers, np.asarray(target))


def test_evaluate_modules_match_pure_functions(no_network, tmp_path):
    import evaluate

    def load(name):
        return evaluate.load(metric_path(name), cache_dir=str(tmp_path))

    scores, groups, parts = _membership_case(0.99, 0.5, [0.99, 0.5, 0.52, 0.45])
    out = load("mia_efficacy").compute(predictions=scores, references=groups)
    assert out == {"mia_efficacy": pytest.approx(svc_mia_efficacy(*parts))}
    assert out["mia_efficacy"] == pytest.approx(75.0)

    scores, groups, parts = _membership_case(0.05, 1.0, [0.05, 0.06, 1.0, 0.04])
    out = load("entropy_mia").compute(predictions=scores, references=groups)
    assert out == {"entropy_mia": pytest.approx(entropy_mia(*parts))}
    assert out["entropy_mia"] == pytest.approx(75.0)

    acc = load("unlearning_accuracy")
    ids, labels = PROBS.argmax(1).tolist(), LABELS.tolist()
    for split in ("forget", "retain", "test"):
        assert acc.compute(predictions=ids, references=labels, split=split) == unlearning_accuracy(
            PROBS, LABELS, split
        )
    with pytest.raises(ValueError, match="split"):
        acc.compute(predictions=ids, references=labels)

    unlearned, retrain = [2.0, 14.0, 99.0, 94.0], [5.0, 13.0, 100.0, 94.0]
    out = load("avg_gap").compute(predictions=unlearned, references=retrain)
    keys = ("UA", "MIA", "RA", "TA")
    assert out == {
        "avg_gap": pytest.approx(
            avg_gap(dict(zip(keys, unlearned, strict=True)), dict(zip(keys, retrain, strict=True)))
        )
    }
    assert out["avg_gap"] == pytest.approx(1.25)


def test_evaluate_module_docstring_examples(no_network, tmp_path):
    import evaluate

    mia = evaluate.load(metric_path("mia_efficacy"), cache_dir=str(tmp_path))
    assert mia.compute(predictions=[0.99, 0.98, 0.5, 0.45, 0.5], references=[1, 1, 0, 0, -1]) == {
        "mia_efficacy": 100.0
    }
    ent = evaluate.load(metric_path("entropy_mia"), cache_dir=str(tmp_path))
    assert ent.compute(predictions=[0.01, 0.02, 1.0, 1.1, 0.01], references=[1, 1, 0, 0, -1]) == {
        "entropy_mia": 100.0
    }
    acc = evaluate.load(metric_path("unlearning_accuracy"), cache_dir=str(tmp_path))
    assert acc.compute(predictions=[0, 1, 2, 2], references=[0, 1, 2, 0], split="forget") == {"UA": 25.0}


def test_predict_pads_token_inputs():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=NUM_LABELS,
        pad_token_id=0,
    )
    model = BertForSequenceClassification(config)
    rows = {"input_ids": [[5, 6, 7], [8, 9], [10, 11, 12, 13]], "labels": [0, 1, 2]}
    rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
    model.train()
    probs, labels = predict(model, Dataset.from_dict(rows), batch_size=2)  # batch 1 is right-padded
    assert model.training
    model.eval()  # reference: one unpadded row at a time, without dropout
    with torch.no_grad():
        ref = [
            torch.softmax(model(input_ids=torch.tensor([ids])).logits, dim=-1)[0].numpy()
            for ids in rows["input_ids"]
        ]
    np.testing.assert_allclose(probs, np.stack(ref), atol=1e-5)
    assert labels.tolist() == [0, 1, 2]
