"""SalUn's MIA-Efficacy as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("mia_efficacy"))``."""

import datasets
import evaluate

from hf_unlearn.evaluation.classification import split_membership_groups, svc_mia_efficacy
from hf_unlearn.papers import SALUN_PAPER

_CITATION = SALUN_PAPER.bibtex

_DESCRIPTION = """\
MIA-Efficacy (SalUn, Fan et al., 2024): an SVC (C=3, RBF kernel, gamma="auto") is trained on the true-class
softmax confidence p_y(x) of shadow members (SalUn: the first |test| retain samples) against shadow
non-members (the test set); the score is the percentage of target samples (the forget set) it predicts
NON-member. Higher = more forgetting. Compute the confidences with
hf_unlearn.evaluation.classification.predict and true_class_confidence.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list of float): true-class confidence p_y(x) of each sample.
    references (list of int): 1 = shadow member, 0 = shadow non-member, -1 = target (forget) sample.
Returns:
    mia_efficacy (float): percentage (0-100) of the targets predicted non-member.
Example:
    >>> mia = evaluate.load(metric_path("mia_efficacy"))
    >>> mia.compute(predictions=[0.99, 0.98, 0.5, 0.45, 0.5], references=[1, 1, 0, 0, -1])
    {'mia_efficacy': 100.0}
"""


class MIAEfficacy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
            reference_urls=[
                "https://arxiv.org/abs/2310.12508",
                "https://github.com/OPTML-Group/Unlearn-Saliency",
            ],
        )

    def _compute(self, predictions, references):
        members, nonmembers, targets = split_membership_groups(predictions, references)
        return {"mia_efficacy": svc_mia_efficacy(members, nonmembers, targets)}
