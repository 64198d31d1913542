"""The card of a GUARD folder: says plainly that the weights are unchanged and that the forget set's
answers are stored in the index."""

from __future__ import annotations

import json
from dataclasses import asdict

from huggingface_hub import ModelCard, ModelCardData

from .card import library_versions, looks_like_hub_id, redact


def build_guard_card(guard) -> ModelCard:
    cfg = asdict(guard.config)
    base = getattr(guard.model.config, "_name_or_path", "") or ""
    data = ModelCardData(
        library_name="hf_unlearn",
        tags=["hf_unlearn", "unlearning", *guard._tag_names],
        base_model=base if looks_like_hub_id(base) else None,
    )
    forget = guard.forget_fingerprint or {}
    paper = guard._paper
    lines = [
        f"---\n{data.to_yaml()}\n---",
        "",
        "# GUARD generation-time unlearning artefacts",
        "",
        f"Method: **GUARD** — [{paper.title}]({paper.link}). Built with `hf_unlearn`.",
        "",
        "## What this is",
        "",
        f"- **The model's weights are unchanged.** This folder holds only what GUARD needs at generation time "
        f"for `{base.split('/')[-1] or type(guard.model).__name__}`: a prompt classifier "
        f"(`prompt_classifier.safetensors`), an index of the forget set's answers and their sentence embeddings, "
        "and this configuration. Use it with `GUARD.from_pretrained(folder, model, tokenizer)` and "
        "`guard.generate(...)`; the model itself still knows what it was asked to forget, and anyone who runs it "
        "without GUARD gets the original outputs.",
        f"- **The forget set's answers are stored in plain text** in `forget_index.json` "
        f"({len(guard.answers)} answers): GUARD needs them to know what to block. Anyone with this folder can "
        "read them; do not publish it where those answers must stay private.",
        "- Prompts the classifier does not flag are decoded exactly as without GUARD; flagged prompts cannot "
        "complete the forbidden phrases of the most similar forget answers. Paraphrases the classifier misses, "
        "and other spellings of a phrase outside the checked shortlist, are not blocked.",
        "",
        "## Forget set",
        "",
        f"- rows: {forget.get('num_rows', len(guard.answers))}; SHA-256: `{forget.get('sha256', 'n/a')}`",
        "",
        "## Configuration",
        "",
        "```json",
        redact(json.dumps(cfg, indent=2)),
        "```",
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in library_versions().items()),
        "",
        "## Citation",
        "",
        "```bibtex",
        paper.bibtex,
        "```",
    ]
    return ModelCard("\n".join(lines))
