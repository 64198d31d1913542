"""TOFU model utility as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("model_utility"))``."""

import datasets
import evaluate

from hf_unlearn.evaluation.tofu import harmonic_mean
from hf_unlearn.papers import TOFU_PAPER

_CITATION = TOFU_PAPER.bibtex

_DESCRIPTION = """\
Model utility (TOFU): the harmonic mean n / sum_i 1/x_i of non-negative scores, in TOFU the nine numbers
Probability, ROUGE-L recall and Truth Ratio on the retain, real_authors and world_facts splits. It is 0 as
soon as one score is 0.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list of float): the scores to combine.
Returns:
    model_utility (float): their harmonic mean.
Example:
    >>> mu = evaluate.load(metric_path("model_utility"))
    >>> mu.compute(predictions=[0.5, 1.0])
    {'model_utility': 0.6666666666666666}
"""


class ModelUtility(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64")}),
            reference_urls=["https://arxiv.org/abs/2401.06121"],
        )

    def _compute(self, predictions):
        return {"model_utility": harmonic_mean(predictions)}
