"""One entry per unlearning method: id, kind, config class, implementing class and paper.

Method classes declare ``_name`` (the id used by the CLI and in card tags), ``_paper`` (a
:class:`~hf_unlearn.papers.Paper`) and ``_tag_names``, and register themselves where they are defined
with :func:`register_method`, which refuses a class without them, so every method can write its model
card and appear in ``hf-unlearn list``.

This module imports no method (imports go one way, from the methods to the registry):
:data:`METHODS` names where each built-in method is defined, and :func:`list_methods` imports those
modules on first use, which registers them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .papers import Paper

__all__ = ["METHODS", "MethodEntry", "Paper", "get_method", "list_methods", "register_method"]

# method id -> "module:Class" of every built-in method, imported lazily by list_methods()
METHODS: dict[str, str] = {
    "flat": "hf_unlearn.trainers.flat:FLATTrainer",
    "ga": "hf_unlearn.trainers.baselines:GATrainer",
    "graddiff": "hf_unlearn.trainers.baselines:GradDiffTrainer",
    "guard": "hf_unlearn.generation.guard:GUARD",
    "iau": "hf_unlearn.trainers.iau:IAUTrainer",
    "idk": "hf_unlearn.trainers.baselines:IDKTrainer",
    "npo": "hf_unlearn.trainers.baselines:NPOTrainer",
    "npo_kl": "hf_unlearn.trainers.baselines:NPOKLTrainer",
    "realera": "hf_unlearn.pipelines.realera:RealEraPipeline",
    "reglora": "hf_unlearn.trainers.reglora:RegLoRATrainer",
    "rmu": "hf_unlearn.trainers.rmu:RMUTrainer",
    "salun": "hf_unlearn.trainers.salun:SalUnTrainer",
    "salun_diffusion": "hf_unlearn.trainers.salun_diffusion:SalUnDiffusionTrainer",
    "simnpo": "hf_unlearn.trainers.baselines:SimNPOTrainer",
    "ssd": "hf_unlearn.trainers.ssd:SSDTrainer",
}


@dataclass(frozen=True)
class MethodEntry:
    id: str
    kind: str  # "trainer", "pipeline", "logits_processor", ...
    cls: type
    config_cls: type | None
    paper: Paper


_REGISTRY: dict[str, MethodEntry] = {}


def register_method(kind: str = "trainer", config_cls: type | None = None):
    """Class decorator adding a method to the registry (checks its metadata)."""

    def wrap(cls):
        for attr in ("_name", "_paper", "_tag_names"):
            if not getattr(cls, attr, None):
                raise TypeError(f"{cls.__name__} cannot be registered: it has no {attr}")
        if not isinstance(cls._paper, Paper):
            raise TypeError(f"{cls.__name__}._paper must be a hf_unlearn.papers.Paper")
        if cls._name in _REGISTRY and _REGISTRY[cls._name].cls is not cls:
            raise ValueError(f"method id {cls._name!r} is already registered")
        _REGISTRY[cls._name] = MethodEntry(cls._name, kind, cls, config_cls, cls._paper)
        return cls

    return wrap


def _load(method_id: str) -> MethodEntry:
    """Import the module defining a built-in method (registering it) and return its entry."""
    module, name = METHODS[method_id].split(":")
    cls = getattr(importlib.import_module(module), name)
    entry = _REGISTRY.get(method_id)
    if entry is None or entry.cls is not cls:
        raise RuntimeError(f"{METHODS[method_id]} did not register itself as {method_id!r}")
    return entry


def list_methods() -> list[MethodEntry]:
    """All methods, sorted by id: the built-in ones (imported here) and any other registered class."""
    for method_id in METHODS:
        _load(method_id)
    return sorted(_REGISTRY.values(), key=lambda e: e.id)


def get_method(method_id: str) -> MethodEntry:
    if method_id in METHODS:
        return _load(method_id)
    if method_id not in _REGISTRY:
        raise ValueError(f"unknown method {method_id!r}; available: {sorted(set(METHODS) | set(_REGISTRY))}")
    return _REGISTRY[method_id]
