"""Template ("good") answers: refusals that FLAT learns and the IDK baseline fine-tunes on.

Written for hf_unlearn (not copied from TOFU's idk file); users can pass their own list or a dataset
column instead. Sampling is reproducible: template ``i`` depends only on the seed and the row index.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

REFUSALS = (
    "I don't know the answer to that.",
    "I'm not sure about that.",
    "I have no information about that.",
    "That is not something I can answer.",
    "I cannot recall anything about that.",
    "I'm afraid I don't have those details.",
    "Sorry, I don't know.",
    "I have no knowledge of that.",
    "That is outside what I know.",
    "I can't say; I don't have that information.",
    "I'm unable to answer that question.",
    "I don't have any details on that.",
    "Unfortunately, I don't know that.",
    "I'm not aware of that.",
    "I really couldn't tell you.",
    "I don't remember anything about that.",
    "I'm not able to provide that information.",
    "That's beyond what I know.",
    "I can't help with that; I don't know.",
    "I have no idea, sorry.",
)


def sample_templates(n: int, templates: Sequence[str] | None = None, seed: int = 42) -> list[str]:
    """``n`` template answers drawn uniformly (with replacement) from ``templates``, seeded."""
    templates = list(templates) if templates is not None else list(REFUSALS)
    if not templates or not all(isinstance(t, str) and t.strip() for t in templates):
        raise ValueError("template answers must be a non-empty list of non-empty strings")
    rng = random.Random(seed)
    return [rng.choice(templates) for _ in range(n)]
