"""Unlearning trainers: one file per method, each holding its Config and Trainer."""

from .base import NonFiniteLossError, UnlearnConfig, UnlearnTrainer
from .baselines import (
    GAConfig,
    GATrainer,
    GradDiffConfig,
    GradDiffTrainer,
    IDKConfig,
    IDKTrainer,
    NPOConfig,
    NPOTrainer,
)
from .flat import FLATConfig, FLATTrainer
from .iau import (
    GradientRestrictionArgs,
    GradientRestrictionMixin,
    GradientRestrictionTrainer,
    IAUConfig,
    IAUTrainer,
    gradient_restricted_loss,
)
from .salun import SalUnConfig, SalUnTrainer
from .ssd import SSDConfig, SSDTrainer

__all__ = [
    "FLATConfig",
    "FLATTrainer",
    "GAConfig",
    "GATrainer",
    "GradDiffConfig",
    "GradDiffTrainer",
    "GradientRestrictionArgs",
    "GradientRestrictionMixin",
    "GradientRestrictionTrainer",
    "IAUConfig",
    "IAUTrainer",
    "IDKConfig",
    "IDKTrainer",
    "NPOConfig",
    "NPOTrainer",
    "NonFiniteLossError",
    "SalUnConfig",
    "SalUnTrainer",
    "SSDConfig",
    "SSDTrainer",
    "UnlearnConfig",
    "UnlearnTrainer",
    "gradient_restricted_loss",
]
