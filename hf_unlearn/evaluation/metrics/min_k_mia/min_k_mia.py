"""Min-k% membership-inference AUC as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("min_k_mia"))``."""

import datasets
import evaluate

from hf_unlearn.evaluation.mia import mia_auc
from hf_unlearn.papers import MIN_K_PAPER

_CITATION = MIN_K_PAPER.bibtex

_DESCRIPTION = """\
ROC AUC of min-k% probability membership scores (the mean of the k% lowest token log-probs of a text;
higher = member). After unlearning, forget samples should score like unseen ones: AUC near 0.5.
Compute the scores with hf_unlearn.evaluation.min_k_percent_score or min_k_mia; min_k_mia's convention
"hf_unlearn" (default: k = 0.2, EOS scored) or "open-unlearning" (k = 0.4, EOS dropped) fixes k and
the scored tokens.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list of float): membership scores, higher = more likely a training member.
    references (list of int): 1 for members (e.g. the forget set), 0 for non-members (unseen data).
Returns:
    auc (float): ROC AUC with members as the positive class.
Example:
    >>> mia = evaluate.load(metric_path("min_k_mia"))
    >>> mia.compute(predictions=[-1.0, -2.0, -3.0], references=[1, 0, 0])
    {'auc': 1.0}
"""


class MinKMIA(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://arxiv.org/abs/2310.16789"],
        )

    def _compute(self, predictions, references):
        return {"auc": mia_auc(predictions, references)}
