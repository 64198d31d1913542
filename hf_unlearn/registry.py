"""One entry per unlearning method: id, kind, config class, implementing class and paper.

Method classes declare ``_name`` (the id used by the CLI and in card tags), ``_paper`` (a
:class:`Paper`) and ``_tag_names``; :func:`register_method` refuses a class without them, so every
method can write its model card and appear in ``hf-unlearn list``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv_id: str | None
    bibtex: str
    url: str | None = None

    @property
    def link(self) -> str | None:
        return self.url or (f"https://arxiv.org/abs/{self.arxiv_id}" if self.arxiv_id else None)


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
            raise TypeError(f"{cls.__name__}._paper must be a hf_unlearn.registry.Paper")
        if cls._name in _REGISTRY and _REGISTRY[cls._name].cls is not cls:
            raise ValueError(f"method id {cls._name!r} is already registered")
        _REGISTRY[cls._name] = MethodEntry(cls._name, kind, cls, config_cls, cls._paper)
        return cls

    return wrap


def list_methods() -> list[MethodEntry]:
    """All registered methods, sorted by id (importing the trainers registers them)."""
    from . import generation, trainers  # noqa: F401  (import side effect: registration)

    return sorted(_REGISTRY.values(), key=lambda e: e.id)


def get_method(method_id: str) -> MethodEntry:
    entries = {e.id: e for e in list_methods()}
    if method_id not in entries:
        raise ValueError(f"unknown method {method_id!r}; available: {sorted(entries)}")
    return entries[method_id]
