"""GUARD's constrained decoding: :class:`GUARDLogitsProcessor`, a ``transformers.LogitsProcessor`` that
removes the candidates completing a forbidden phrase of a target prompt (:class:`RowConstraint`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from .config import GUARDConfig
from .phrases import STOPWORDS, TokenTrie


@dataclass
class RowConstraint:
    """What one *target* prompt may not produce: the trie, the phrases and their embeddings."""

    trie: TokenTrie
    phrases: list[str]
    embeddings: torch.Tensor | None  # (n_phrases, d) normalised, or None without semantic matching

    def __post_init__(self):
        self.lowered = [p.lower() for p in self.phrases]


class GUARDLogitsProcessor(LogitsProcessor):
    """Blocks forbidden phrases in the generated continuation of target rows; other rows are untouched.

    Args:
        prompt_length: length of the (padded) prompt; only tokens after it are matched.
        rows: one entry per prompt of the batch: a :class:`RowConstraint` for a target, ``None`` otherwise.
            Rows of ``input_ids`` are mapped to prompts as ``row // (num_rows // len(rows))`` (beams and
            ``num_return_sequences`` are contiguous in ``generate``).
        tokenizer / embedder / config: for the shortlist's text and semantic matching (optional: without
            them only the trie is used).
    """

    def __init__(
        self,
        prompt_length: int,
        rows,
        tokenizer=None,
        embedder=None,
        config: GUARDConfig | None = None,
        eos_token_id: int | None = None,
    ):
        # ``rows`` may also be a callable (input_ids, scores) -> rows, resolved at the first step (GUARD
        # classifies from generate's own prefill that way, see GUARD.generate)
        self.prompt_length = prompt_length
        self.rows, self._resolve = (None, rows) if callable(rows) else (list(rows), None)
        self.tokenizer, self.embedder = tokenizer, embedder
        self.config = config or GUARDConfig()
        self.eos_token_id = eos_token_id
        self._pieces: dict[int, str] = {}

    @property
    def has_targets(self) -> bool:
        return any(r is not None for r in self.rows)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.rows is None:
            self.rows = list(self._resolve(input_ids, scores))
        if not self.has_targets:
            return scores
        n, k = input_ids.shape[0], len(self.rows)
        if n % k:
            raise ValueError(f"{n} rows of input_ids do not map onto {k} prompts")
        out = scores.clone()
        pending: list[tuple[int, int, str, RowConstraint]] = []  # (row, candidate, word, constraint)
        for r in range(n):
            row = self.rows[r // (n // k)]
            if row is None:
                continue
            generated = input_ids[r, self.prompt_length :].tolist()
            blocked = row.trie.blocked_next(generated)
            if blocked:
                out[r, list(blocked)] = -math.inf
            if self.tokenizer is not None and self.config.semantic_top_k > 0:
                pending += [(r, c, w, row) for c, w in self._shortlist(out, r, generated, row)]
        if pending and self.embedder is not None:  # one embedding call for every row's words
            emb = self.embedder([w for _, _, w, _ in pending])  # (n_words, d)
            cfg = self.config
            for (r, c, _, row), e in zip(pending, emb, strict=True):
                s = float((row.embeddings @ e).max())
                out[r, c] = -math.inf if s >= cfg.semantic_threshold else out[r, c] - cfg.semantic_weight * s
        if self.eos_token_id is not None:
            for r in range(n):
                if not torch.isfinite(out[r]).any():
                    out[r, self.eos_token_id] = 0.0  # everything is forbidden: stop rather than fail
        return out

    def _piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self.tokenizer.decode([token])
        return self._pieces[token]

    def _shortlist(self, out: torch.Tensor, r: int, generated: list[int], row: RowConstraint):
        """Top-k candidates of row ``r``: a candidate whose text completes a phrase (any tokenisation) is
        removed in place; returns the (candidate, word being formed) pairs to compare semantically."""
        cfg = self.config
        finite = torch.isfinite(out[r])
        k = min(cfg.semantic_top_k, int(finite.sum()))
        if k == 0:
            return []
        cands = torch.topk(out[r].masked_fill(~finite, -math.inf), k).indices.tolist()
        text = self.tokenizer.decode(generated[-16:]) if generated else ""
        partial = re.split(r"\s", text)[-1] if text and not text[-1].isspace() else ""
        words = []
        for c in cands:
            piece = self._piece(c)
            tail = (text + piece).lower()
            if any(
                tail.endswith(p) and (len(tail) == len(p) or not tail[-len(p) - 1].isalnum())
                for p in row.lowered
            ):
                out[r, c] = -math.inf
                continue
            word = re.sub(r"\W+$", "", piece.strip() if piece[:1].isspace() else partial + piece)
            if (
                row.embeddings is not None
                and len(word) >= cfg.min_word_chars
                and word.lower() not in STOPWORDS
            ):
                words.append((c, word))
        return words
