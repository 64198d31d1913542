"""Generation-time unlearning: GUARD (prompt detection, forbidden phrases, constrained decoding).

Modules: :mod:`.guard` (the ``GUARD`` object), :mod:`.config` (``GUARDConfig``), :mod:`.classifier` (the
prompt classifier), :mod:`.phrases` (phrase extraction, ``TokenTrie``), :mod:`.embedders` (sentence
embeddings), :mod:`.processor` (``GUARDLogitsProcessor``), :mod:`.checks` (input checks).
"""

from .classifier import PromptClassifier, mean_pooled_hidden_states
from .config import GUARDConfig
from .guard import GUARD
from .phrases import TokenTrie, extract_phrases
from .processor import GUARDLogitsProcessor

__all__ = [
    "GUARD",
    "GUARDConfig",
    "GUARDLogitsProcessor",
    "PromptClassifier",
    "TokenTrie",
    "extract_phrases",
    "mean_pooled_hidden_states",
]
