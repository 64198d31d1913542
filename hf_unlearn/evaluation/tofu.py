"""TOFU-style metrics (Maini et al., 2024, "TOFU: A Task of Fictitious Unlearning for LLMs").

Every likelihood metric here comes from one routine, :func:`answer_logprobs`: the log-probability of
each answer token given the prompt and the answer so far (``encode_qa`` formatting, EOS included).
With ``a`` an answer of ``|a|`` tokens and ``q`` its question:

* length-normalised probability  ``P_norm(a|q) = P(a|q)^(1/|a|) = exp(mean_t log p(a_t | q, a_<t))``;
* **Probability** of a split: ``mean P_norm(a|q)`` on forget / retain (and any other split), and
  ``mean P_norm(a|q) / (P_norm(a|q) + sum_j P_norm(a_pert_j|q))`` on ``real_authors`` and
  ``world_facts`` (:data:`RELATIVE_PROBABILITY_SPLITS`), as in TOFU;
* **truth ratio** ``R = mean_j P_norm(a_pert_j|q) / P_norm(a|q)`` (TOFU's ``R_truth``). TOFU puts a
  paraphrased answer in the denominator; these data have no paraphrases, so the original answer is
  used (TOFU does the same for real_authors / world_facts). ``truth_ratio_mean`` names the mean over
  the perturbed answers: ``"arithmetic"`` (the default), the TOFU paper's ``(1/m) sum_j P_norm(a_pert_j)``,
  or ``"geometric"``, ``(prod_j P_norm(a_pert_j))^(1/m) = exp(-mean_j loss_j)``, what TOFU's reference
  code (``aggregate_eval_stat.py``) and open-unlearning (``truth_ratio`` in
  ``src/evals/metrics/memorization.py``) compute. Use ``"geometric"`` to compare with their numbers;
  the geometric mean is never larger, so R is lower or equal and forget quality can differ;
* **Truth Ratio** score of a split: ``mean max(0, 1 - R)`` (high = the model prefers the true answer),
  except on the ``forget`` split where TOFU reports ``mean min(R, 1/R)``;
* **ROUGE-L recall** of the greedy generation against the answer (``rouge-score``, stemming on, as TOFU);
* **forget quality**: p-value of the two-sample Kolmogorov-Smirnov test between the forget-split
  truth ratios of the unlearned model and of the retain model (TOFU compares the statistic
  ``exp(mean_j loss_pert - loss_para)``, i.e. ``1/R`` with ``truth_ratio_mean="geometric"``; KS is
  invariant to that monotone map);
* **model utility**: harmonic mean of the nine scores Probability, ROUGE-L recall and Truth Ratio on
  retain, real_authors and world_facts (:data:`UTILITY_SPLITS`).

Perturbed (wrong) answers come from a split's ``perturbed_answer`` column; splits without one
(forget, retain in the local TOFU files) get them from :func:`build_perturbed_answers`: other authors'
answers to the question in the same position, a substitute for TOFU's hand-written perturbations.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import torch
from datasets import Dataset
from scipy.stats import ks_2samp
from tqdm.auto import tqdm

from ..data.qa import QACollator, check_qa_columns, encode_prompt, tokenize_qa_dataset
from ..losses.common import answer_token_logprobs

# the one per-token routine shared with the losses (position t predicts token t+1, -100 not scored)
token_logprobs = answer_token_logprobs

FORGET_SPLIT = "forget"
UTILITY_SPLITS = ("retain", "real_authors", "world_facts")
RELATIVE_PROBABILITY_SPLITS = ("real_authors", "world_facts")
PERTURBED_COLUMN = "perturbed_answer"
# mean over the perturbed answers in the truth ratio: the TOFU paper's, or TOFU's code / open-unlearning's
TRUTH_RATIO_MEANS = ("arithmetic", "geometric")


# ---------------------------------------------------------------------------------------------------
# Pure functions (hand-checkable on small tensors)
# ---------------------------------------------------------------------------------------------------


def log_normalised_probability(token_logprobs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``log P_norm(a|q) = (1/|a|) sum_t log p(a_t|q, a_<t)`` per sample: ``[N]`` float64.

    ``token_logprobs`` holds one 1-D tensor of answer-token log-probs per sample.
    """
    if any(lp.numel() == 0 for lp in token_logprobs):
        raise ValueError("a sample has no answer tokens")
    return torch.stack([lp.double().mean() for lp in token_logprobs])


def probability_score(log_p_true: torch.Tensor, log_p_perturbed: torch.Tensor | None = None) -> float:
    """TOFU's Probability from length-normalised log-probs.

    Without perturbed answers: ``mean_i P_norm(a_i)``. With ``log_p_perturbed`` ``[N, m]`` (NaN =
    missing): ``mean_i P_norm(a_i) / (P_norm(a_i) + sum_j P_norm(a_pert_ij))``, in log space so that
    tiny probabilities do not underflow.
    """
    log_p_true = log_p_true.double()
    if log_p_perturbed is None:
        return log_p_true.exp().mean().item()
    lp = log_p_perturbed.double()
    all_lp = torch.cat([log_p_true[:, None], lp.nan_to_num(nan=-math.inf)], dim=1)  # [N, 1+m]
    return (log_p_true - torch.logsumexp(all_lp, dim=1)).exp().mean().item()


def check_truth_ratio_mean(truth_ratio_mean: str) -> str:
    """Return ``truth_ratio_mean`` if it is one of :data:`TRUTH_RATIO_MEANS`, else raise ``ValueError``."""
    if truth_ratio_mean not in TRUTH_RATIO_MEANS:
        raise ValueError(
            f"truth_ratio_mean must be one of {TRUTH_RATIO_MEANS} ('arithmetic': TOFU paper; 'geometric': "
            f"TOFU's code and open-unlearning), got {truth_ratio_mean!r}"
        )
    return truth_ratio_mean


def truth_ratios(
    log_p_true: torch.Tensor, log_p_perturbed: torch.Tensor, truth_ratio_mean: str = "arithmetic"
) -> torch.Tensor:
    """``R_i = mean_j P_norm(a_pert_ij) / P_norm(a_i)`` per sample: ``[N]`` float64.

    ``log_p_true`` ``[N]``, ``log_p_perturbed`` ``[N, m]`` (NaN = missing; each row needs one value).
    ``truth_ratio_mean``: ``"arithmetic"`` (TOFU paper, Maini et al. 2024, the default) computes
    ``exp(logmeanexp_j log P_norm(a_pert_ij) - log P_norm(a_i))``; ``"geometric"`` (TOFU's
    ``aggregate_eval_stat.py``, open-unlearning's ``truth_ratio``) computes
    ``exp(mean_j log P_norm(a_pert_ij) - log P_norm(a_i))``. Both agree when ``m = 1``.
    """
    check_truth_ratio_mean(truth_ratio_mean)
    lp = log_p_perturbed.double()
    valid = ~lp.isnan()  # [N, m]
    if not bool(valid.any(dim=1).all()):
        raise ValueError("every sample needs at least one perturbed answer")
    if truth_ratio_mean == "geometric":
        log_mean_pert = lp.nan_to_num(nan=0.0).sum(1) / valid.sum(1)
    else:
        log_mean_pert = torch.logsumexp(lp.masked_fill(~valid, -math.inf), dim=1) - valid.sum(1).log()
    return (log_mean_pert - log_p_true.double()).exp()


def truth_ratio_score(ratios: Sequence[float] | torch.Tensor, forget: bool = False) -> float:
    """TOFU's Truth Ratio score: ``mean max(0, 1 - R)``, or ``mean min(R, 1/R)`` when ``forget``."""
    r = torch.as_tensor(ratios, dtype=torch.float64)
    if forget:
        return torch.minimum(r, 1 / r).mean().item()
    return (1 - r).clamp(min=0).mean().item()


def harmonic_mean(values: Sequence[float]) -> float:
    """``n / sum_i 1/x_i`` of non-negative numbers; 0 as soon as one of them is 0."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("harmonic_mean of no values")
    if any(math.isnan(v) or v < 0 for v in values):
        raise ValueError(f"harmonic_mean needs non-negative numbers, got {values}")
    if min(values) == 0:
        return 0.0
    return len(values) / sum(1 / v for v in values)


def forget_quality(unlearned_truth_ratios: Sequence[float], retain_truth_ratios: Sequence[float]) -> dict:
    """Two-sample KS test between the forget-split truth ratios of the unlearned and retain models.

    Returns ``{"forget_quality": p_value, "ks_statistic": D}``. A p-value near 1 means the unlearned
    model is statistically indistinguishable from one never trained on the forget set.
    """
    if len(unlearned_truth_ratios) == 0 or len(retain_truth_ratios) == 0:
        raise ValueError("forget_quality needs truth ratios of both models")
    res = ks_2samp(list(unlearned_truth_ratios), list(retain_truth_ratios))
    return {"forget_quality": float(res.pvalue), "ks_statistic": float(res.statistic)}


def _rouge_l(predictions: Sequence[str], references: Sequence[str], field: str) -> list[float]:
    from rouge_score.rouge_scorer import RougeScorer  # imports nltk: ~1 s, so only when needed

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    return [
        getattr(scorer.score(ref, pred)["rougeL"], field)
        for pred, ref in zip(predictions, references, strict=True)
    ]


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L recall (longest common subsequence / reference length) of each prediction (TOFU)."""
    return _rouge_l(predictions, references, "recall")


def rouge_l_precision(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L precision (longest common subsequence / prediction length) of each prediction: SafeEraser's
    utility on the retain pairs (its ``evaluate_unharmpair``), which rewards short, on-point answers."""
    return _rouge_l(predictions, references, "precision")


def build_perturbed_answers(
    dataset: Dataset,
    n: int = 3,
    group_column: str | None = "author_index",
    seed: int = 0,
    answer_column: str = "answer",
) -> list[list[str]]:
    """``n`` wrong answers per row, taken from other rows: a stand-in for TOFU's perturbed answers.

    TOFU's forget and retain splits come with hand-written perturbations (same template, wrong
    facts); the local files do not. Within ``group_column`` (the author), the k-th row is answered
    with the answers of the k-th rows of other authors: TOFU asks each author's questions in a similar
    order, so these are fluent answers to a similar question with another author's facts. The
    candidates are visited in a cyclic order fixed by ``seed`` (each answer serves as a perturbation
    about equally often). When fewer than ``n`` other authors have a k-th row, the rest come from any
    other row. Without ``group_column`` every row is its own group, i.e. other rows' answers are used.
    A row never gets its own answer text nor the same text twice. Pure: ``dataset`` is not changed.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    answers = list(dataset[answer_column])
    has_groups = group_column is not None and group_column in dataset.column_names
    groups = list(dataset[group_column]) if has_groups else list(range(len(answers)))
    if len(set(answers)) <= n:
        raise ValueError(
            f"need more than n={n} distinct answers to build perturbed answers, got {len(set(answers))}"
        )

    counts: dict = defaultdict(int)
    by_position: dict[int, list[int]] = defaultdict(list)  # position within group -> rows
    for i, g in enumerate(groups):
        by_position[counts[g]].append(i)
        counts[g] += 1
    rng = random.Random(seed)
    pools = [by_position[k] for k in sorted(by_position)] + [list(range(len(answers)))]
    for pool in pools:
        rng.shuffle(pool)
    place = [{row: p for p, row in enumerate(pool)} for pool in pools]  # row -> index in each pool
    same_position_pool = {row: k for k, pool in enumerate(pools[:-1]) for row in pool}

    def walk(i, k, picked, other_group):
        pool = pools[k]
        start = place[k][i]
        for step in range(1, len(pool)):
            if len(picked) == n:
                return
            j = pool[(start + step) % len(pool)]
            if (other_group and groups[j] == groups[i]) or answers[j] == answers[i] or answers[j] in picked:
                continue
            picked.append(answers[j])

    out = []
    for i in range(len(answers)):
        picked: list[str] = []
        walk(i, same_position_pool[i], picked, other_group=True)
        walk(i, len(pools) - 1, picked, other_group=False)
        out.append(picked)
    return out


# ---------------------------------------------------------------------------------------------------
# Model-level routines
# ---------------------------------------------------------------------------------------------------


def _pad_token_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad batches with")
    return pad


@contextmanager
def _eval_mode(model):
    """``model.eval()`` for the block, the previous mode afterwards; yields the model's device."""
    was_training = model.training
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        model.train(was_training)


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches of similar length (longest first), to pad as little as possible."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


@torch.no_grad()
def answer_logprobs(
    model,
    tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    max_length: int = 256,
    batch_size: int = 16,
    name: str = "dataset",
    disable_tqdm: bool = False,
    include_eos: bool = True,
) -> list[torch.Tensor]:
    """Answer-token log-probs of ``model`` for each (question, answer): one 1-D CPU tensor per pair.

    Pairs are formatted with ``encode_qa`` (answer + EOS, prompt masked) and batched by length.
    The single likelihood routine behind probability, truth ratio and min-k% membership scores.
    ``include_eos=False`` leaves out the final EOS prediction (open-unlearning's ``tokenwise_logprobs``
    convention, used by its MIA attacks); a row cut by ``max_length`` has no EOS and keeps every token.
    """
    eos = tokenizer.eos_token_id if not include_eos else None
    pairs = Dataset.from_dict({"question": list(questions), "answer": list(answers)})
    rows = tokenize_qa_dataset(pairs, tokenizer, max_length, name=name).to_list()
    collate = QACollator(_pad_token_id(tokenizer))
    batches = _batches([len(r["input_ids"]) for r in rows], batch_size)
    out: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    with _eval_mode(model) as device:
        for idx in tqdm(batches, desc=f"log-probs {name}", disable=disable_tqdm):
            batch = {k: v.to(device) for k, v in collate([rows[i] for i in idx]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logprobs, mask = token_logprobs(logits, batch["labels"])  # [b, T-1] each
            targets = batch["labels"][:, 1:]
            for lp, m, tgt, i in zip(logprobs, mask, targets, idx, strict=True):
                lp, tgt = lp[m], tgt[m]
                if eos is not None and tgt.numel() > 1 and int(tgt[-1]) == eos:
                    lp = lp[:-1]
                out[i] = lp.cpu()
    return out


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    questions: Sequence[str],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    name: str = "dataset",
    disable_tqdm: bool = False,
) -> list[str]:
    """Greedy answers to ``questions`` (prompt = ``encode_prompt``), decoded without special tokens.

    Batches are left-padded with an attention mask so that every row continues right after its
    prompt; only the new tokens are decoded.
    """
    prompts = [encode_prompt(tokenizer, q) for q in questions]
    pad = _pad_token_id(tokenizer)
    out = [""] * len(prompts)
    with _eval_mode(model) as device:
        for idx in tqdm(
            _batches([len(p) for p in prompts], batch_size), desc=f"generate {name}", disable=disable_tqdm
        ):
            width = max(len(prompts[i]) for i in idx)
            n_pad = [width - len(prompts[i]) for i in idx]
            input_ids = torch.tensor(
                [[pad] * k + prompts[i] for k, i in zip(n_pad, idx, strict=True)], device=device
            )
            attention_mask = torch.tensor([[0] * k + [1] * (width - k) for k in n_pad], device=device)
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )  # [b, width + new]
            texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for i, text in zip(idx, texts, strict=True):
                out[i] = text.strip()
    return out


def check_split(name: str, dataset) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``dataset`` is a non-empty Dataset of question/answer text."""
    label = f"split {name!r}"
    check_qa_columns(dataset, label)
    missing = [c for c in ("question", "answer") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{label} is missing column(s) {missing}; it has {dataset.column_names}")


def _perturbed_answers(
    dataset: Dataset, name: str, n: int, group_column: str | None, seed: int
) -> list[list[str]]:
    if PERTURBED_COLUMN not in dataset.column_names:
        return build_perturbed_answers(dataset, n=n, group_column=group_column, seed=seed)
    perturbed = list(dataset[PERTURBED_COLUMN])
    for i, answers in enumerate(perturbed):
        if (
            not isinstance(answers, list)
            or not answers
            or not all(isinstance(a, str) and a.strip() for a in answers)
        ):
            raise ValueError(
                f"split {name!r} row {i}: '{PERTURBED_COLUMN}' must be a non-empty list of strings"
            )
    return perturbed


def _split_log_probabilities(
    model, tokenizer, dataset: Dataset, name: str, *, n_perturbed, group_column, seed, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log P_norm`` of the answers ``[N]`` and of the perturbed answers ``[N, m]`` (NaN-padded), one pass."""
    perturbed = _perturbed_answers(dataset, name, n_perturbed, group_column, seed)
    questions, answers = list(dataset["question"]), list(dataset["answer"])
    flat_q = questions + [q for q, pert in zip(questions, perturbed, strict=True) for _ in pert]
    flat_a = answers + [a for pert in perturbed for a in pert]
    log_p = log_normalised_probability(answer_logprobs(model, tokenizer, flat_q, flat_a, name=name, **kwargs))
    n = len(answers)
    log_p_pert = torch.full((n, max(len(p) for p in perturbed)), math.nan, dtype=torch.float64)  # [N, m]
    offset = n
    for i, pert in enumerate(perturbed):
        log_p_pert[i, : len(pert)] = log_p[offset : offset + len(pert)]
        offset += len(pert)
    return log_p[:n], log_p_pert


def model_truth_ratios(
    model,
    tokenizer,
    dataset: Dataset,
    *,
    name: str = "forget",
    n_perturbed: int = 3,
    group_column: str | None = "author_index",
    seed: int = 0,
    max_length: int = 256,
    batch_size: int = 16,
    disable_tqdm: bool = False,
    truth_ratio_mean: str = "arithmetic",
) -> list[float]:
    """Per-sample truth ratios ``R`` of ``model`` on ``dataset`` (no generation).

    What :func:`evaluate_tofu` needs as ``retain_truth_ratios``: call it once with the retain model on
    the forget split, then pass the list when evaluating each unlearned model (with the same
    ``n_perturbed`` / ``group_column`` / ``seed`` / ``truth_ratio_mean``, so that both models score the
    same perturbed answers the same way). ``truth_ratio_mean``: see :func:`truth_ratios`
    (``"arithmetic"``, TOFU paper, default; ``"geometric"``, TOFU's code and open-unlearning).
    """
    check_truth_ratio_mean(truth_ratio_mean)
    check_split(name, dataset)
    log_p, log_p_pert = _split_log_probabilities(
        model,
        tokenizer,
        dataset,
        name,
        n_perturbed=n_perturbed,
        group_column=group_column,
        seed=seed,
        max_length=max_length,
        batch_size=batch_size,
        disable_tqdm=disable_tqdm,
    )
    return truth_ratios(log_p, log_p_pert, truth_ratio_mean).tolist()


def evaluate_tofu(
    model,
    tokenizer,
    splits: Mapping[str, Dataset],
    retain_truth_ratios: Sequence[float] | None = None,
    *,
    max_length: int = 256,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    n_perturbed: int = 3,
    group_column: str | None = "author_index",
    seed: int = 0,
    disable_tqdm: bool = False,
    truth_ratio_mean: str = "arithmetic",
) -> dict:
    """TOFU's evaluation of ``model`` on QA ``splits`` (columns ``question``, ``answer``, optional
    ``perturbed_answer`` list). Split names matter: ``"forget"`` is the forget set,
    ``"retain"``, ``"real_authors"``, ``"world_facts"`` feed model utility; any other name (e.g.
    ``"holdout"``) is scored like retain.

    Returns (JSON-friendly; keys only present when computable)::

        {
          "splits": {name: {"probability": float, "rouge_l_recall": float,
                            "truth_ratio": float, "num_samples": int}},
          "model_utility": float,          # retain, real_authors and world_facts all given
          "forget_truth_ratios": [float],  # per-sample R on "forget", in row order
          "forget_quality": float,         # KS p-value; needs "forget" and retain_truth_ratios
          "ks_statistic": float,
        }

    ``retain_truth_ratios``: the retain model's ``forget_truth_ratios`` on the same forget split
    (:func:`model_truth_ratios` computes them without generating). Perturbed answers of splits
    without ``perturbed_answer``: :func:`build_perturbed_answers` (``n_perturbed``, ``group_column``,
    ``seed``). ``max_length`` cuts scored sequences; ``max_new_tokens`` bounds greedy generations.
    ``truth_ratio_mean`` (:func:`truth_ratios`): ``"arithmetic"`` (TOFU paper, the default) or
    ``"geometric"`` (TOFU's code and open-unlearning: use it to compare with their numbers); compute
    ``retain_truth_ratios`` with the same value.
    """
    check_truth_ratio_mean(truth_ratio_mean)
    if not splits:
        raise ValueError("splits is empty: pass e.g. {'forget': forget, 'retain': retain}")
    for name, dataset in splits.items():
        check_split(name, dataset)
    if retain_truth_ratios is not None:
        if FORGET_SPLIT not in splits:
            raise ValueError(
                f"retain_truth_ratios given but splits has no {FORGET_SPLIT!r} split: {list(splits)}"
            )
        if len(retain_truth_ratios) != len(splits[FORGET_SPLIT]):
            raise ValueError(
                f"retain_truth_ratios has {len(retain_truth_ratios)} values but the forget split has "
                f"{len(splits[FORGET_SPLIT])} rows; compute them on the same forget split"
            )

    common = dict(max_length=max_length, batch_size=batch_size, disable_tqdm=disable_tqdm)
    result: dict = {"splits": {}}
    for name, dataset in splits.items():
        log_p, log_p_pert = _split_log_probabilities(
            model,
            tokenizer,
            dataset,
            name,
            n_perturbed=n_perturbed,
            group_column=group_column,
            seed=seed,
            **common,
        )
        ratios = truth_ratios(log_p, log_p_pert, truth_ratio_mean)
        generations = generate_answers(
            model,
            tokenizer,
            dataset["question"],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            name=name,
            disable_tqdm=disable_tqdm,
        )
        rouge = rouge_l_recall(generations, dataset["answer"])
        result["splits"][name] = {
            "probability": probability_score(
                log_p, log_p_pert if name in RELATIVE_PROBABILITY_SPLITS else None
            ),
            "rouge_l_recall": sum(rouge) / len(rouge),
            "truth_ratio": truth_ratio_score(ratios, forget=name == FORGET_SPLIT),
            "num_samples": len(dataset),
        }
        if name == FORGET_SPLIT:
            result["forget_truth_ratios"] = ratios.tolist()

    if all(s in splits for s in UTILITY_SPLITS):
        scores = [
            result["splits"][s][m]
            for s in UTILITY_SPLITS
            for m in ("probability", "rouge_l_recall", "truth_ratio")
        ]
        result["model_utility"] = harmonic_mean(scores)
    if retain_truth_ratios is not None:
        result.update(forget_quality(result["forget_truth_ratios"], retain_truth_ratios))
    return result
