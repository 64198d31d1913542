"""SalUn's UA / RA / TA as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("unlearning_accuracy"))``."""

import datasets
import evaluate

from hf_unlearn.evaluation.classification import unlearning_accuracy
from hf_unlearn.papers import SALUN_PAPER

_CITATION = SALUN_PAPER.bibtex

_DESCRIPTION = """\
Accuracy metrics of classification unlearning (SalUn, Fan et al., 2024), in percent: on the forget split the
unlearning accuracy UA = 100 - accuracy (higher = more forgetting); on the retain split the remaining
accuracy RA; on the test split the testing accuracy TA.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    split (str): "forget", "retain" or "test" (required).
Returns:
    UA (float) for split="forget", RA (float) for "retain", TA (float) for "test"; percent (0-100).
Example:
    >>> acc = evaluate.load(metric_path("unlearning_accuracy"))
    >>> acc.compute(predictions=[0, 1, 2, 2], references=[0, 1, 2, 0], split="forget")
    {'UA': 25.0}
"""


class UnlearningAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://arxiv.org/abs/2310.12508"],
        )

    def _compute(self, predictions, references, split=None):
        if split is None:
            raise ValueError('pass split="forget", "retain" or "test" (forget gives UA = 100 - accuracy)')
        return unlearning_accuracy(predictions, references, split)
