"""ROUGE-L precision as in SafeEraser, as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("rouge_l_precision"))``."""

import datasets
import evaluate

from hf_unlearn.evaluation.tofu import rouge_l_precision
from hf_unlearn.papers import ROUGE_PAPER

_CITATION = ROUGE_PAPER.bibtex


_DESCRIPTION = """\
ROUGE-L precision: length of the longest common subsequence of words between a generation and the
reference answer, divided by the generation's length (rouge-score, Porter stemming), averaged over samples.
SafeEraser reports it on the retain pairs (benign questions about the forget images) as utility.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list of str): generated answers.
    references (list of str): reference answers.
Returns:
    rouge_l_precision (float): mean ROUGE-L precision.
Example:
    >>> rouge = evaluate.load(metric_path("rouge_l_precision"))
    >>> rouge.compute(predictions=["a red circle"], references=["red"])
    {'rouge_l_precision': 0.3333333333333333}
"""


class RougeLPrecision(evaluate.Metric):
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
        scores = rouge_l_precision(predictions, references)
        return {"rouge_l_precision": sum(scores) / len(scores)}
