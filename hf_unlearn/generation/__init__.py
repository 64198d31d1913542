"""Generation-time unlearning: GUARD (prompt detection, forbidden phrases, constrained decoding)."""

from .classifier import PromptClassifier, mean_pooled_hidden_states
from .guard import GUARD, GUARDConfig, GUARDLogitsProcessor, TokenTrie, extract_phrases

__all__ = [
    "GUARD",
    "GUARDConfig",
    "GUARDLogitsProcessor",
    "PromptClassifier",
    "TokenTrie",
    "extract_phrases",
    "mean_pooled_hidden_states",
]
