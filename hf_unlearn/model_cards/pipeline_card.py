"""The card of a ``RealEraPipeline`` folder: the base pipeline, every ``erase`` call (concepts, anchors,
preserve concepts, neighbour and beyond counts, all settings) and the method's paper. Rendered from the
Jinja template ``templates/pipeline_card.md``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import PurePath

from huggingface_hub import ModelCard, ModelCardData

from ..papers import ESD_PAPER, REALERA_PAPER, UCE_PAPER
from .card import is_secret_name, library_versions, looks_like_hub_id, redact, render_card, to_jsonable

_METHOD_NAMES = {"realera": "RealEra", "uce": "UCE", "esd-x": "ESD-x", "esd-x-strict": "ESD-x (strict)"}
_PAPERS = {"realera": REALERA_PAPER, "uce": UCE_PAPER, "esd-x": ESD_PAPER, "esd-x-strict": ESD_PAPER}
_SUMMARY_KEYS = ("num_erase_rows", "num_regularisation_rows", "edited_layers")


def _cell(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def _erasure(record: dict, known: frozenset[str]) -> dict:
    """One ``erase`` record for the template. The settings of the method's own config (``known``) are
    all kept, even those whose name contains "token" (``token_selection``, ``per_token``); any other
    secret-looking key is dropped and every value has token-like strings redacted."""
    raw_settings = dict(record.get("config") or {})
    settings = {
        k: to_jsonable(v) for k, v in raw_settings.items() if k in known or not is_secret_name(str(k))
    }
    record = to_jsonable(record)  # drops secret-looking keys, redacts token-like strings
    method = record.get("method", "realera")
    change = record.get("max_relative_change")
    training = None
    if record.get("lora_loss_first") is not None:
        where = (
            "merged into the UNet"
            if record.get("lora_adapter") is None
            else f"adapter `{record['lora_adapter']}`"
        )
        training = (
            f"LoRA noise alignment: {raw_settings.get('lora_steps')} steps, loss "
            f"{record['lora_loss_first_10']:.4g} → {record['lora_loss_last_10']:.4g} (mean of the first / last "
            f"10 steps), {where}"
        )
    elif record.get("esd_loss_first") is not None:
        training = (
            f"ESD fine-tuning of {record.get('trained_parameters')} cross-attention parameters: "
            f"{raw_settings.get('esd_steps')} steps, loss {record['esd_loss_first']:.4g} → {record['esd_loss_last']:.4g}"
        )
    return {
        "method": method,
        "method_name": _METHOD_NAMES.get(method, method),
        "concepts": [_cell(c) for c in record.get("concepts", [])],
        "anchors": [_cell(a) for a in record.get("anchors", [])],
        "preserve": [_cell(p) for p in record.get("preserve", [])],
        "num_neighbours": record.get("num_neighbours", 0),
        "num_beyond": record.get("num_beyond", 0),
        **{k: record.get(k, "n/a") for k in _SUMMARY_KEYS},
        "max_relative_change": f"{change:.4g}" if isinstance(change, (int, float)) else "n/a",
        "settings": [(_cell(redact(str(k))), _cell(v)) for k, v in settings.items()],
        "closed_form": method in ("realera", "uce"),
        "training": training,
    }


def build_pipeline_card(pipe, repo_id: str | None = None) -> ModelCard:
    """The ``README.md`` of ``pipe.save_pretrained(folder)`` for a ``RealEraPipeline`` (no tokens)."""
    config_cls = getattr(pipe, "_config_class", None)
    known = frozenset(f.name for f in dataclasses.fields(config_cls)) if config_cls else frozenset()
    erasures = [_erasure(r, known) for r in ((pipe.config.get("realera") or {}).get("erasures") or [])]
    methods = list(dict.fromkeys(e["method"] for e in erasures)) or [pipe._name]
    method = "realera" if "realera" in methods else methods[0]
    paper = _PAPERS.get(method, REALERA_PAPER)
    base = str(pipe.config.get("_name_or_path") or getattr(pipe, "name_or_path", "") or "")
    hub_id = base if looks_like_hub_id(base) else None
    label = redact(PurePath(base.rstrip("/\\")).name) if base else "a pipeline built from components"
    concepts = list(dict.fromkeys(c for e in erasures for c in e["concepts"]))
    stem = (hub_id or label or "pipeline").split("/")[-1].replace(" ", "-")
    title = redact(f"{stem}-{method}-erased")
    tags = ["hf_unlearn", "unlearning", "concept-erasure", *pipe._tag_names]
    tags += [m for m in methods if m != "realera"]
    evaluation = [
        (_cell(redact(str(name))), _number(v.get("before")), _number(v.get("after")))
        for name, v in ((pipe.config.get("realera") or {}).get("evaluation") or {}).items()
        if isinstance(v, dict)
    ]
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="text-to-image",
        tags=list(dict.fromkeys(tags)),
        base_model=hub_id,
        unlearning={
            "method": method,
            "paper": f"arxiv:{paper.arxiv_id}",
            "erased_concepts": concepts,
            "num_erasures": len(erasures),
        },
    )
    return render_card(
        pipe._card_kind,
        data,
        title=title,
        method_name=_METHOD_NAMES.get(method, method),
        evaluation=evaluation,
        trained=any(e["training"] for e in erasures),
        paper=paper,
        base_hub_id=hub_id,
        base_label=label,
        pipeline_class=type(pipe).__name__,
        erasures=erasures,
        model_id=redact(repo_id or title),
        versions={**library_versions(), **_diffusers_version()},
        bibtex=paper.bibtex.strip(),
        uce_paper=UCE_PAPER,
        uce_bibtex=UCE_PAPER.bibtex.strip() if paper is REALERA_PAPER else None,
    )


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"


def _diffusers_version() -> dict[str, str]:
    try:
        import diffusers

        return {"diffusers": diffusers.__version__}
    except ImportError:  # pragma: no cover - a pipeline needs diffusers
        return {}
