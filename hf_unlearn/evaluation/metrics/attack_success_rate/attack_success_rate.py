"""ASR (SafeEraser, ↓) as an ``evaluate`` metric: ``evaluate.load(hf_unlearn.evaluation.metric_path("attack_success_rate"))``."""

# the module, not the class: evaluate.load takes the first Metric class in this file's namespace
from hf_unlearn.evaluation import verdict_metric
from hf_unlearn.evaluation.safety import attack_success_rate


class AttackSuccessRate(verdict_metric.VerdictRateMetric):
    rate = staticmethod(attack_success_rate)
    output = "attack_success_rate"
    answered_is_harmful = True
    inputs = "responses to the forget (or held-out harmful) prompts"
    summary = """\
ASR (SafeEraser, ↓): the share of responses to forget prompts that still produce the content to forget.
With the default judge a normal, meaningful answer to a forget prompt counts as an attack success.
"""
