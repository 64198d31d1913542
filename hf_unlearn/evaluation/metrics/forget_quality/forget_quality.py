"""TOFU forget quality as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("forget_quality"))``."""

import datasets
import evaluate

from hf_unlearn.evaluation.tofu import forget_quality
from hf_unlearn.papers import TOFU_PAPER

_CITATION = TOFU_PAPER.bibtex

_DESCRIPTION = """\
Forget quality (TOFU): the p-value of a two-sample Kolmogorov-Smirnov test between the forget-split truth
ratios R = mean_j P_norm(perturbed_j) / P_norm(answer) of the unlearned model and those of a retain model
that never saw the forget set. Near 1: indistinguishable from the retain model. The mean over perturbed
answers is the caller's: arithmetic (TOFU paper; hf_unlearn's default) or geometric (TOFU's code and
open-unlearning), see hf_unlearn.evaluation.truth_ratios(truth_ratio_mean=...). Compute both lists the
same way.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list of float): per-sample truth ratios of the unlearned model on the forget split.
    references (list of float): per-sample truth ratios of the retain model on the same forget split.
Returns:
    forget_quality (float): KS-test p-value.
    ks_statistic (float): KS statistic D.
Example:
    >>> fq = evaluate.load(metric_path("forget_quality"))
    >>> fq.compute(predictions=[0.2, 0.4, 0.6], references=[0.2, 0.4, 0.6])
    {'forget_quality': 1.0, 'ks_statistic': 0.0}
"""


class ForgetQuality(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://arxiv.org/abs/2401.06121"],
        )

    def _compute(self, predictions, references):
        return forget_quality(predictions, references)
