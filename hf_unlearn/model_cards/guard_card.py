"""The card of a GUARD folder: says plainly that the weights are unchanged and that the forget set's
answers are stored in the index. Rendered from the Jinja template ``templates/guard_card.md``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import PurePath

from huggingface_hub import ModelCard, ModelCardData

from .card import library_versions, looks_like_hub_id, redact, render_card, to_jsonable


def build_guard_card(guard) -> ModelCard:
    """The ``README.md`` of ``guard.save_pretrained(folder)`` (secret-looking config fields dropped)."""
    cfg = to_jsonable(asdict(guard.config))  # drops secret-looking keys, redacts token-like strings
    base = str(getattr(guard.model.config, "_name_or_path", "") or "")
    data = ModelCardData(
        library_name="hf_unlearn",
        tags=["hf_unlearn", "unlearning", *guard._tag_names],
        base_model=base if looks_like_hub_id(base) else None,
    )
    forget = guard.forget_fingerprint or {}
    paper = guard._paper
    return render_card(
        guard._card_kind,
        data,
        paper=paper,
        model_label=redact(PurePath(base.rstrip("/\\")).name or type(guard.model).__name__),
        num_answers=len(guard.answers),
        num_rows=forget.get("num_rows", len(guard.answers)),
        sha256=forget.get("sha256", "n/a"),
        config_json=redact(json.dumps(cfg, indent=2)),
        versions=library_versions(),
        bibtex=(paper.bibtex or "").strip(),
    )
