"""hf_unlearn: machine unlearning for the Hugging Face stack.

Public names are imported lazily so that ``import hf_unlearn`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "UnlearnConfig": "trainers",
    "UnlearnTrainer": "trainers",
    "NonFiniteLossError": "trainers",
    "FLATConfig": "trainers",
    "FLATTrainer": "trainers",
    "GAConfig": "trainers",
    "GATrainer": "trainers",
    "GradDiffConfig": "trainers",
    "GradDiffTrainer": "trainers",
    "NPOConfig": "trainers",
    "NPOTrainer": "trainers",
    "NPOKLConfig": "trainers",
    "NPOKLTrainer": "trainers",
    "SimNPOConfig": "trainers",
    "SimNPOTrainer": "trainers",
    "RMUConfig": "trainers",
    "RMUTrainer": "trainers",
    "IDKConfig": "trainers",
    "IDKTrainer": "trainers",
    "KLConfig": "trainers",
    "KLTrainer": "trainers",
    "SSDConfig": "trainers",
    "IAUConfig": "trainers",
    "IAUTrainer": "trainers",
    "GradientRestrictionArgs": "trainers",
    "GradientRestrictionTrainer": "trainers",
    "SalUnConfig": "trainers",
    "SalUnTrainer": "trainers",
    "RegLoRAConfig": "trainers",
    "RegLoRATrainer": "trainers",
    "SalUnDiffusionConfig": "trainers",
    "SalUnDiffusionTrainer": "trainers",
    "SSDTrainer": "trainers",
    "GUARD": "generation",
    "GUARDConfig": "generation",
    "GUARDLogitsProcessor": "generation",
    "RealEraPipeline": "pipelines",
    "RealEraConfig": "pipelines",
    "PixelShuffleAutoencoder": "pipelines",
    "list_methods": "registry",
    "get_method": "registry",
    "register_method": "registry",
    "Paper": "papers",
    "load_tofu": "data.tofu",
    "make_demo_dataset": "data.demo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'hf_unlearn' has no attribute {name!r}")
