"""ROUGE-L recall as in TOFU, as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("rouge_l_recall"))``."""

import datasets
import evaluate

from hf_unlearn.evaluation.tofu import rouge_l_recall
from hf_unlearn.papers import ROUGE_PAPER

_CITATION = ROUGE_PAPER.bibtex


_DESCRIPTION = """\
ROUGE-L recall: length of the longest common subsequence of words between a generation and the reference
answer, divided by the reference length (rouge-score, Porter stemming), averaged over samples. TOFU
reports it on greedy generations.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list of str): generated answers.
    references (list of str): reference answers.
Returns:
    rouge_l_recall (float): mean ROUGE-L recall.
Example:
    >>> rouge = evaluate.load(metric_path("rouge_l_recall"))
    >>> rouge.compute(predictions=["born in Paris"], references=["She was born in Paris"])
    {'rouge_l_recall': 0.6}
"""


class RougeLRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://aclanthology.org/W04-1013/"],
        )

    def _compute(self, predictions, references):
        scores = rouge_l_recall(predictions, references)
        return {"rouge_l_recall": sum(scores) / len(scores)}
