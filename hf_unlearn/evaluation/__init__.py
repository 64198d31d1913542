"""Evaluation of unlearning: TOFU-style metrics, classification metrics (UA/RA/TA/MIA, Avg. Gap),
min-k% membership inference, worst-case forget sets, relearning and quantization attacks, SafeEraser's safety metrics with local judges,
``evaluate`` modules.

The ``evaluate`` modules live in ``metrics/<name>/<name>.py``; load one offline with
``evaluate.load(metric_path("forget_quality"))``.
"""

from pathlib import Path

from .classification import (
    accuracy,
    avg_gap,
    entropy_mia,
    evaluate_unlearning,
    predict,
    prediction_entropy,
    svc_mia_efficacy,
    true_class_confidence,
    unlearning_accuracy,
)
from .judges import (
    GenerativeJudge,
    SimilarityJudge,
    default_judge,
    evaluate_safety,
    judge_accuracy,
    judge_responses,
)
from .mia import mia_auc, min_k_mia, min_k_percent_score
from .robustness import PRECISIONS, quantization_attack, quantize_weights_, relearning_attack
from .safety import (
    attack_success_rate,
    is_degenerate,
    parse_verdict,
    refusal_rate,
    safe_answer_refusal_rate,
)
from .tofu import (
    answer_logprobs,
    build_perturbed_answers,
    evaluate_tofu,
    forget_quality,
    generate_answers,
    harmonic_mean,
    log_normalised_probability,
    model_truth_ratios,
    probability_score,
    rouge_l_precision,
    rouge_l_recall,
    token_logprobs,
    truth_ratio_score,
    truth_ratios,
)
from .worst_case import WorstCaseConfig, WorstCaseResult, random_forget_set, worst_case_forget_set

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def metric_path(name: str) -> str:
    """Folder of the ``evaluate`` module ``name`` (``evaluate.load`` takes it; no network needed)."""
    folder = METRICS_DIR / name
    if not (folder / f"{name}.py").is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"no evaluate module {name!r}; available: {available}")
    return str(folder)


__all__ = [
    "METRICS_DIR",
    "PRECISIONS",
    "quantization_attack",
    "quantize_weights_",
    "relearning_attack",
    "accuracy",
    "avg_gap",
    "entropy_mia",
    "evaluate_unlearning",
    "predict",
    "prediction_entropy",
    "svc_mia_efficacy",
    "true_class_confidence",
    "unlearning_accuracy",
    "WorstCaseConfig",
    "WorstCaseResult",
    "random_forget_set",
    "worst_case_forget_set",
    "answer_logprobs",
    "build_perturbed_answers",
    "evaluate_tofu",
    "forget_quality",
    "generate_answers",
    "harmonic_mean",
    "log_normalised_probability",
    "metric_path",
    "mia_auc",
    "min_k_mia",
    "min_k_percent_score",
    "model_truth_ratios",
    "probability_score",
    "rouge_l_precision",
    "rouge_l_recall",
    "GenerativeJudge",
    "SimilarityJudge",
    "attack_success_rate",
    "default_judge",
    "evaluate_safety",
    "is_degenerate",
    "judge_accuracy",
    "judge_responses",
    "parse_verdict",
    "refusal_rate",
    "safe_answer_refusal_rate",
    "token_logprobs",
    "truth_ratio_score",
    "truth_ratios",
]
