"""Pure loss functions: tensors in, tensors out, no model or trainer state."""

from .common import answer_token_logprobs, per_sample_loss, sequence_logprob, sequence_mean_prob, sequence_nll
from .flat import DIVERGENCES, flat_loss
from .kl import KL_REDUCTIONS, retain_kl
from .npo import npo_loss, simnpo_loss
from .prompt_decouple import prompt_decouple_loss
from .rmu import RMU_POSITIONS, activation_mse, steering_vector

__all__ = [
    "DIVERGENCES",
    "KL_REDUCTIONS",
    "RMU_POSITIONS",
    "activation_mse",
    "answer_token_logprobs",
    "flat_loss",
    "npo_loss",
    "prompt_decouple_loss",
    "retain_kl",
    "simnpo_loss",
    "steering_vector",
    "sequence_logprob",
    "sequence_mean_prob",
    "sequence_nll",
    "per_sample_loss",
]
