"""Unlearning trainers: one file per method, each holding its Config and Trainer."""

from .base import MethodTrainer, NonFiniteLossError, UnlearnConfig
from .baselines import (
    GAConfig,
    GATrainer,
    GradDiffConfig,
    GradDiffTrainer,
    IDKConfig,
    IDKTrainer,
    KLConfig,
    KLTrainer,
    NPOConfig,
    NPOKLConfig,
    NPOKLTrainer,
    NPOTrainer,
    SimNPOConfig,
    SimNPOTrainer,
)
from .flat import FLATConfig, FLATTrainer
from .forget_retain import TemplateAnswerArgs, UnlearnTrainer
from .iau import (
    GradientRestrictionArgs,
    GradientRestrictionMixin,
    GradientRestrictionTrainer,
    IAUConfig,
    IAUTrainer,
    gradient_restricted_loss,
)
from .one_shot import OneShotTrainer
from .reglora import RegLoRAConfig, RegLoRATrainer, run_task_sequence
from .rmu import RMUConfig, RMUTrainer
from .salun import SalUnConfig, SalUnTrainer
from .salun_diffusion import SalUnDiffusionConfig, SalUnDiffusionTrainer, sample_class_conditional
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
    "KLConfig",
    "KLTrainer",
    "MethodTrainer",
    "NPOConfig",
    "NPOKLConfig",
    "NPOKLTrainer",
    "NPOTrainer",
    "NonFiniteLossError",
    "OneShotTrainer",
    "RMUConfig",
    "RMUTrainer",
    "RegLoRAConfig",
    "RegLoRATrainer",
    "SalUnConfig",
    "SalUnDiffusionConfig",
    "SalUnDiffusionTrainer",
    "SalUnTrainer",
    "SSDConfig",
    "SimNPOConfig",
    "SimNPOTrainer",
    "SSDTrainer",
    "TemplateAnswerArgs",
    "UnlearnConfig",
    "UnlearnTrainer",
    "gradient_restricted_loss",
    "run_task_sequence",
    "sample_class_conditional",
]
