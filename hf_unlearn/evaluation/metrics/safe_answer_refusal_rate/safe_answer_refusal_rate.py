"""SARR (SafeEraser, ↓) as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("safe_answer_refusal_rate"))``."""

# the module, not the class: evaluate.load takes the first Metric class in this file's namespace
from hf_unlearn.evaluation import verdict_metric
from hf_unlearn.evaluation.safety import safe_answer_refusal_rate


class SafeAnswerRefusalRate(verdict_metric.VerdictRateMetric):
    rate = staticmethod(safe_answer_refusal_rate)
    output = "safe_answer_refusal_rate"
    answered_is_harmful = False
    inputs = "responses to the benign-image prompts"
    summary = """\
SARR (SafeEraser, ↓): the share of responses to benign-image prompts (the decoupled pairs: a harmless
image with the forget question) that are not a normal, meaningful answer; refusals and degenerate text
both count.
"""
