"""GUARD's settings (:class:`GUARDConfig`), shared by the :class:`~.guard.GUARD` object and the logits
processor."""

from __future__ import annotations

from dataclasses import dataclass, field

from .embedders import DEFAULT_SENTENCE_MODEL
from .phrases import PHRASE_MODES

FEATURE_SOURCES = ("hidden_states", "sentence_embedding")
WORD_ENCODERS = ("sentence", "static")


@dataclass
class GUARDConfig:
    """GUARD's settings (``HfArgumentParser``-friendly): τ the classifier threshold (Sec. 3.1), δ and λ
    the semantic threshold and penalty weight of constrained decoding (the paper's step 3)."""

    feature_source: str = field(
        default="hidden_states",
        metadata={"help": "Classifier features: 'hidden_states' (paper Eq. 3) or 'sentence_embedding'."},
    )
    layer: int = field(
        default=-2, metadata={"help": "Hidden-state layer l to mean-pool (-2 = penultimate, the default)."}
    )
    threshold: float = field(
        default=0.5, metadata={"help": "τ: a prompt is a target when p(forget) > τ (in [0, 1])."}
    )
    classifier_hidden_size: int = field(default=256, metadata={"help": "Width of the classifier MLP."})
    classifier_epochs: int = field(default=300, metadata={"help": "Full-batch training epochs of the MLP."})
    classifier_learning_rate: float = field(
        default=1e-3, metadata={"help": "AdamW learning rate of the MLP."}
    )
    sentence_model: str = field(
        default=DEFAULT_SENTENCE_MODEL,
        metadata={"help": "sentence-transformers model for retrieval and semantic matching (name or path)."},
    )
    retrieve_top_n: int = field(
        default=1,
        metadata={"help": "Forget answers retrieved per target prompt (their phrases are forbidden)."},
    )
    phrase_mode: str = field(
        default="ngrams",
        metadata={
            "help": "'ngrams': word n-grams (up to max_ngram) that start and end with a content word; "
            "'entities': capitalised spans and numbers."
        },
    )
    max_ngram: int = field(default=3, metadata={"help": "N of the n-gram phrases."})
    word_encoder: str = field(
        default="sentence",
        metadata={
            "help": "How candidate words and phrases are embedded for semantic matching: 'sentence' (the "
            "full sentence model, as in the paper) or 'static' (mean of the sentence model's input "
            "word-piece embeddings: no transformer pass, far faster, coarser)."
        },
    )
    semantic_top_k: int = field(
        default=5,
        metadata={"help": "Candidates per row checked by text and semantic matching (0 = trie only)."},
    )
    semantic_threshold: float = field(
        default=0.7,
        metadata={"help": "δ: block a candidate whose word has cosine ≥ δ to a phrase (in [0, 1])."},
    )
    semantic_weight: float = field(
        default=1.0, metadata={"help": "λ: otherwise subtract λ·cosine from the candidate's score."}
    )
    min_word_chars: int = field(
        default=3, metadata={"help": "Words shorter than this are not compared semantically."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the classifier's training."})

    def __post_init__(self):
        for name in ("threshold", "semantic_threshold"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.feature_source not in FEATURE_SOURCES:
            raise ValueError(f"feature_source must be one of {FEATURE_SOURCES}, got {self.feature_source!r}")
        if self.word_encoder not in WORD_ENCODERS:
            raise ValueError(f"word_encoder must be one of {WORD_ENCODERS}, got {self.word_encoder!r}")
        if self.phrase_mode not in PHRASE_MODES:
            raise ValueError(f"phrase_mode must be one of {PHRASE_MODES}, got {self.phrase_mode!r}")
        for name in ("retrieve_top_n", "max_ngram", "classifier_hidden_size", "classifier_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.semantic_top_k < 0 or self.semantic_weight < 0:
            raise ValueError("semantic_top_k and semantic_weight must be >= 0")
