"""SalUn's Avg. Gap as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("avg_gap"))``."""

import datasets
import evaluate

from hf_unlearn.evaluation.classification import avg_gap
from hf_unlearn.papers import SALUN_PAPER

_CITATION = SALUN_PAPER.bibtex

_DESCRIPTION = """\
Average gap to exact unlearning (SalUn, Fan et al., 2024, "Avg. Gap"): the mean absolute difference between
the metrics of the unlearned model and those of a model retrained from scratch without the forget set,
usually over (UA, MIA-Efficacy, RA, TA) in percent. Lower = closer to retraining.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list of float): metric values of the unlearned model (e.g. UA, MIA, RA, TA).
    references (list of float): the retrained model's values of the same metrics, in the same order.
Returns:
    avg_gap (float): mean |prediction - reference|.
Example:
    >>> gap = evaluate.load(metric_path("avg_gap"))
    >>> gap.compute(predictions=[2.0, 14.0, 99.0, 94.0], references=[5.0, 13.0, 100.0, 94.0])
    {'avg_gap': 1.25}
"""


class AvgGap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://arxiv.org/abs/2310.12508"],
        )

    def _compute(self, predictions, references):
        keys = range(len(predictions))  # evaluate has checked len(references) == len(predictions)
        unlearned = dict(zip(keys, predictions, strict=True))
        retrain = dict(zip(keys, references, strict=True))
        return {"avg_gap": avg_gap(unlearned, retrain, keys=keys)}
