"""SSD's entropy membership attack as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("entropy_mia"))``."""

import datasets
import evaluate

from hf_unlearn.evaluation.classification import entropy_mia, split_membership_groups
from hf_unlearn.papers import BAD_TEACHING_PAPER, SSD_PAPER

_CITATION = SSD_PAPER.bibtex + "\n" + BAD_TEACHING_PAPER.bibtex

_DESCRIPTION = """\
Entropy membership-inference attack of SSD (Foster et al., 2024; from Chundawat et al., 2023): a
class-balanced logistic regression is trained on the entropy -sum_k p_k log p_k of the softmax output of
members (SSD: retain-train samples) against non-members (the test set); the score is the percentage of target
samples (the forget set) it predicts MEMBER. Lower = more forgetting. Compute the entropies with
hf_unlearn.evaluation.classification.predict and prediction_entropy.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list of float): prediction entropy (natural log) of each sample.
    references (list of int): 1 = member, 0 = non-member, -1 = target (forget) sample.
Returns:
    entropy_mia (float): percentage (0-100) of the targets predicted member.
Example:
    >>> mia = evaluate.load(metric_path("entropy_mia"))
    >>> mia.compute(predictions=[0.01, 0.02, 1.0, 1.1, 0.01], references=[1, 1, 0, 0, -1])
    {'entropy_mia': 100.0}
"""


class EntropyMIA(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://arxiv.org/abs/2308.07707", "https://arxiv.org/abs/2205.08096"],
        )

    def _compute(self, predictions, references):
        members, nonmembers, targets = split_membership_groups(predictions, references)
        return {"entropy_mia": entropy_mia(members, nonmembers, targets)}
