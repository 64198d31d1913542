"""Classification unlearning metrics: UA / RA / TA, SalUn's MIA-Efficacy, SSD's entropy MIA, Avg. Gap.

With ``D_f`` the forget set, ``D_r`` the retain set and ``D_t`` the test set (all percentages, 0-100):

* **UA** (unlearning accuracy) ``= 100 - acc(D_f)``; **RA** ``= acc(D_r)``; **TA** ``= acc(D_t)``
  (Fan et al., 2024, "SalUn", Sec. 5 / ``Classification/main_random.py``).
* **MIA-Efficacy** (SalUn, ``Classification/evaluation/SVC_MIA.py``): an SVC (``C=3``, RBF kernel,
  ``gamma="auto"``) is trained on the softmax confidence of the true class, ``p_y(x)``, of "shadow train"
  samples (the first ``|D_t|`` retain samples in dataset order, label member) against the test set (label
  non-member); MIA-Efficacy is the percentage of ``D_f`` it predicts *non-member*. Higher = more forgetting.
* **entropy MIA** (Foster et al., 2024, "SSD", ``src/metrics.py::get_membership_attack_prob``, from
  Chundawat et al., 2023): a class-balanced logistic regression on the entropy
  ``H(p) = -sum_k p_k log p_k`` of the softmax output, retain-train samples labelled member (1) and test
  samples non-member (0); the score is the percentage of ``D_f`` predicted *member*. Lower = more forgetting.
  The two attacks are not comparable with each other (different features and conventions).
* **Avg. Gap** (SalUn, Table 1): ``mean_m |m(unlearned) - m(retrain)|`` over ``m`` in (UA, MIA, RA, TA).

:func:`predict` produces the ``(N, K)`` softmax probabilities every metric starts from; the rest are pure
functions of numpy arrays, deterministic given their inputs (the SVC and logistic regression have no
randomness). :func:`evaluate_unlearning` runs the whole SalUn protocol on a Hugging Face classifier.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from datasets import Dataset
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from tqdm.auto import tqdm

from ..data.classification import ClassificationCollator, prepare_classification_dataset

SPLITS = ("forget", "retain", "test")
AVG_GAP_KEYS = ("UA", "MIA", "RA", "TA")
# membership groups of the ``evaluate`` modules' ``references``
MEMBER, NONMEMBER, TARGET = 1, 0, -1


CLASSIFIER = (
    "an image/text classifier returning one row of class logits per sample (e.g. from "
    "AutoModelForImageClassification or AutoModelForSequenceClassification)"
)


def check_classifier(model, who: str) -> None:
    """``TypeError`` naming the class of ``model`` unless it is a sample classifier.

    Accepted: a ``transformers.PreTrainedModel`` (or a PEFT wrapper of one) whose class name has
    ``Classification`` in it (``...ForImageClassification``, ``...ForSequenceClassification``...) but not
    ``TokenClassification``; another ``torch.nn.Module`` is trusted when it has ``config.num_labels``. A causal
    LM is refused with a pointer to :func:`~hf_unlearn.evaluation.evaluate_tofu`.
    """
    from transformers import PreTrainedModel

    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    name = type(base).__name__
    if isinstance(base, PreTrainedModel):
        if base.can_generate() or name.endswith(("ForCausalLM", "LMHeadModel")):
            raise TypeError(
                f"{name} is a causal language model, not a classifier: {who} needs {CLASSIFIER}; "
                "evaluate a causal LM with hf_unlearn.evaluation.evaluate_tofu (or `hf-unlearn eval`)"
            )
        if "Classification" not in name or "TokenClassification" in name:
            raise TypeError(f"{name} is not a classifier: {who} needs {CLASSIFIER}")
    elif not isinstance(getattr(getattr(base, "config", None), "num_labels", None), int):
        raise TypeError(f"{name} is not a classifier (it has no config.num_labels): {who} needs {CLASSIFIER}")


def predict(
    model,
    dataset: Dataset,
    batch_size: int = 256,
    label_column: str = "labels",
    device=None,
    disable_tqdm: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities of a classifier on ``dataset``, in dataset order.

    ``dataset`` holds processed model inputs (``pixel_values`` or ``input_ids``...) and a label column; it is
    checked by :func:`~hf_unlearn.data.classification.prepare_classification_dataset` (non-empty, labels in
    ``0..num_labels-1``). Every column but ``labels`` is passed to ``model``; the softmax is taken in float32.
    The model runs in eval mode (no dropout, BatchNorm running statistics, as SalUn's ``collect_prob``) and
    gets its previous train/eval mode back afterwards. ``device``: where the inputs go (the model must be
    there already); default the device of the model's parameters.

    Returns ``(probs (N, K) float32, labels (N,) int64)``. A model that is not a classifier (a causal LM,
    a base model without a head) raises ``TypeError`` naming its class (see :func:`check_classifier`).
    """
    check_classifier(model, "predict")
    data = prepare_classification_dataset(dataset, "dataset", model.config.num_labels, label_column)
    return _predict_prepared(model, data, batch_size, device, disable_tqdm, desc="predict")


@torch.no_grad()
def _predict_prepared(model, data: Dataset, batch_size: int, device, disable_tqdm: bool, desc: str):
    """:func:`predict` on a dataset already checked by ``prepare_classification_dataset``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    collate = ClassificationCollator(pad_token_id=getattr(model.config, "pad_token_id", None))
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs, labels = [], []
    try:
        for start in tqdm(range(0, len(data), batch_size), desc=desc, disable=disable_tqdm):
            columns = data[start : start + batch_size]  # {column: tensor [b, ...] or list of b tensors}
            rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
            batch = collate(rows)
            labels.append(batch.pop("labels"))
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits  # [b, K]
            probs.append(torch.softmax(logits.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(probs).numpy(), torch.cat(labels).long().numpy()  # (N, K) float32, (N,) int64


def _check_probs(probs, labels=None) -> tuple[np.ndarray, np.ndarray | None]:
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs must be a non-empty (N, K) array, got shape {probs.shape}")
    if labels is None:
        return probs, None
    labels = _check_labels(labels, probs.shape[0])
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be class ids in 0..{probs.shape[1] - 1} (K={probs.shape[1]} columns)")
    return probs, labels


def _check_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{name} must be a 1-D array of {n} class ids, got shape {labels.shape}")
    if n and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integer class ids, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def accuracy(probs, labels) -> float:
    """Top-1 accuracy in percent: ``100 * mean(argmax_k probs[i, k] == labels[i])``.

    ``probs``: (N, K) probabilities or logits, or (N,) predicted class ids; ``labels``: (N,) class ids.
    """
    probs = np.asarray(probs)
    if probs.ndim == 1:  # already class ids
        predicted = _check_labels(probs, len(probs), "predictions")
        labels = _check_labels(labels, len(predicted))
        if len(predicted) == 0:
            raise ValueError("accuracy of an empty set is undefined")
    else:
        probs, labels = _check_probs(probs, labels)
        predicted = probs.argmax(axis=1)  # (N,)
    return float(100.0 * np.mean(predicted == labels))


def unlearning_accuracy(probs, labels, split: str) -> dict[str, float]:
    """The SalUn accuracy metric of one split: ``{"UA": 100 - acc}`` on ``forget``, ``{"RA": acc}`` on
    ``retain``, ``{"TA": acc}`` on ``test`` (percent). ``probs`` as in :func:`accuracy`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    acc = accuracy(probs, labels)
    if split == "forget":
        return {"UA": 100.0 - acc}
    return {"RA" if split == "retain" else "TA": acc}


def true_class_confidence(probs, labels) -> np.ndarray:
    """``p_{y_i}(x_i)``: the probability of each sample's true class, (N,) from (N, K) and (N,)."""
    probs, labels = _check_probs(probs, labels)
    return probs[np.arange(len(labels)), labels]


def prediction_entropy(probs) -> np.ndarray:
    """Shannon entropy (natural log) of each row, ``-sum_k p_k log p_k`` with ``0 log 0 = 0``: (N, K) -> (N,)."""
    probs, _ = _check_probs(probs)
    p = probs.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)  # (N, K)
    return -terms.sum(axis=1)


def _features(name: str, values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of per-sample scores, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _fit_predict(clf, members, nonmembers, targets) -> np.ndarray:
    """Fit ``clf`` on members (1) vs non-members (0) of one scalar feature; its 0/1 predictions on targets."""
    x = np.concatenate([members, nonmembers])[:, None]  # (n_m + n_n, 1)
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    clf.fit(x, y)
    return clf.predict(targets[:, None])  # (n_t,)


def svc_mia_efficacy(shadow_member_conf, shadow_nonmember_conf, target_conf) -> float:
    """SalUn's MIA-Efficacy (percent): share of targets an SVC on true-class confidence calls NON-member.

    The SVC (``C=3``, RBF, ``gamma="auto"``, as ``SVC_MIA.py::SVC_fit_predict``) is trained on the
    confidences of shadow members (label 1; SalUn: the first ``|test|`` retain samples) and shadow
    non-members (label 0; the test set), then applied to the targets (the forget set). Higher = the forget
    set looks less like training data = more forgetting. All inputs: (n,) confidences ``p_y(x)``.
    """
    members = _features("shadow_member_conf", shadow_member_conf)
    nonmembers = _features("shadow_nonmember_conf", shadow_nonmember_conf)
    targets = _features("target_conf", target_conf)
    predicted = _fit_predict(SVC(C=3, kernel="rbf", gamma="auto"), members, nonmembers, targets)
    return float(100.0 * np.mean(predicted == 0))


def entropy_mia(member_entropy, nonmember_entropy, target_entropy) -> float:
    """SSD's membership attack (percent): share of targets a logistic regression on entropy calls MEMBER.

    A class-balanced logistic regression (lbfgs) is trained on the prediction entropies of members (label 1;
    SSD: the retain-train samples) and non-members (label 0; the test set), then applied to the targets (the
    forget set). Lower = more forgetting. All inputs: (n,) entropies from :func:`prediction_entropy`.

    The reference code uses ``LogisticRegression(class_weight="balanced", solver="lbfgs",
    multi_class="multinomial")``; on two classes that multinomial fit penalises both class rows, which
    halves the L2 penalty of the binary model (at the optimum ``w_1 = -w_0 = w/2``, so
    ``|w_0|^2 + |w_1|^2 = |w|^2 / 2``); the equivalent binary fit, the only one recent scikit-learn offers
    (``multi_class`` was removed), therefore uses ``C=2``.
    """
    members = _features("member_entropy", member_entropy)
    nonmembers = _features("nonmember_entropy", nonmember_entropy)
    targets = _features("target_entropy", target_entropy)
    clf = LogisticRegression(C=2.0, class_weight="balanced", solver="lbfgs")
    predicted = _fit_predict(clf, members, nonmembers, targets)
    return float(100.0 * np.mean(predicted == 1))


def split_membership_groups(values, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split per-sample scores by group: ``groups[i]`` is 1 (member), 0 (non-member) or -1 (target).

    The input convention of the ``mia_efficacy`` and ``entropy_mia`` ``evaluate`` modules; returns
    ``(members, nonmembers, targets)``, each 1-D and non-empty.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    if values.shape != groups.shape or values.ndim != 1:
        raise ValueError(
            f"values and groups must be 1-D of the same length, got {values.shape} and {groups.shape}"
        )
    unknown = sorted(set(groups.tolist()) - {MEMBER, NONMEMBER, TARGET})
    if unknown:
        raise ValueError(f"groups must be 1 (member), 0 (non-member) or -1 (target), got {unknown}")
    out = []
    for group, name in ((MEMBER, "member (1)"), (NONMEMBER, "non-member (0)"), (TARGET, "target (-1)")):
        if not (groups == group).any():
            raise ValueError(f"no {name} samples: the attack needs members, non-members and targets")
        out.append(values[groups == group])
    return tuple(out)


def avg_gap(metrics: Mapping, retrain: Mapping, keys: Sequence = AVG_GAP_KEYS) -> float:
    """SalUn's Avg. Gap: ``mean_{k in keys} |metrics[k] - retrain[k]|`` (same units as the metrics)."""
    keys = list(keys)
    if not keys:
        raise ValueError("avg_gap needs at least one metric key")
    for name, values in (("metrics", metrics), ("retrain", retrain)):
        missing = [k for k in keys if k not in values]
        if missing:
            raise ValueError(f"{name} is missing {missing} (needs {keys}; has {sorted(values, key=str)})")
    return float(np.mean([abs(float(metrics[k]) - float(retrain[k])) for k in keys]))


def evaluate_unlearning(
    model,
    forget: Dataset,
    retain: Dataset,
    test: Dataset,
    batch_size: int = 256,
    label_column: str = "labels",
    shadow_size: int | None = None,
    disable_tqdm: bool = True,
) -> dict[str, float]:
    """SalUn's classification evaluation of an unlearned ``model``.

    Returns ``{"UA", "RA", "TA", "MIA", "entropy_MIA", "eval_seconds"}`` (metrics in percent):
    UA = 100 - acc(forget), RA = acc(retain), TA = acc(test); MIA = :func:`svc_mia_efficacy` with shadow
    members = the first ``shadow_size`` retain samples in dataset order (default ``len(test)``, as SalUn;
    capped at ``len(retain)`` when defaulted), non-members = test, targets = forget; entropy_MIA =
    :func:`entropy_mia` on the same members / non-members / targets (SSD itself uses the whole retain set
    as members; the class-balanced fit keeps the member count from shifting the decision boundary, but the
    values can differ). ``eval_seconds``: wall-clock of the call. A model that is not a classifier raises
    ``TypeError`` naming its class; causal LMs are evaluated by :func:`~hf_unlearn.evaluation.evaluate_tofu`.
    """
    started = time.perf_counter()
    check_classifier(model, "evaluate_unlearning")
    num_labels = model.config.num_labels
    data = {  # checked before any forward pass; raises ValueError naming the split
        name: prepare_classification_dataset(split, name, num_labels, label_column)
        for name, split in (("forget", forget), ("retain", retain), ("test", test))
    }
    if shadow_size is None:
        n_shadow = min(len(test), len(retain))
    elif not 1 <= shadow_size <= len(retain):
        raise ValueError(f"shadow_size must be in 1..len(retain)={len(retain)}, got {shadow_size}")
    else:
        n_shadow = shadow_size

    probs = {  # name -> ((N, K) probs, (N,) labels)
        name: _predict_prepared(model, data[name], batch_size, None, disable_tqdm, desc=f"predict {name}")
        for name in SPLITS
    }

    results = {}
    for name in SPLITS:
        results.update(unlearning_accuracy(*probs[name], split=name))
    confidence = {name: true_class_confidence(*probs[name]) for name in SPLITS}
    entropy = {name: prediction_entropy(probs[name][0]) for name in SPLITS}
    results["MIA"] = svc_mia_efficacy(
        confidence["retain"][:n_shadow], confidence["test"], confidence["forget"]
    )
    results["entropy_MIA"] = entropy_mia(entropy["retain"][:n_shadow], entropy["test"], entropy["forget"])
    results["eval_seconds"] = time.perf_counter() - started
    return {k: results[k] for k in ("UA", "RA", "TA", "MIA", "entropy_MIA", "eval_seconds")}
