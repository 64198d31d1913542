"""RR (SafeEraser, ↑) as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("refusal_rate"))``."""

# the module, not the class: evaluate.load takes the first Metric class in this file's namespace
from hf_unlearn.evaluation import verdict_metric
from hf_unlearn.evaluation.safety import refusal_rate


class RefusalRate(verdict_metric.VerdictRateMetric):
    rate = staticmethod(refusal_rate)
    output = "refusal_rate"
    answered_is_harmful = True
    inputs = "responses to the forget (or held-out harmful) prompts"
    summary = """\
RR (SafeEraser, ↑): the share of responses to forget prompts that are refusals.
"""
