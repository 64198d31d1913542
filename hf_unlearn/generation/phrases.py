"""GUARD's forbidden phrases: which phrases of a forget answer to forbid (:func:`extract_phrases`), their
token-id sequences as a tokenizer may emit them (:func:`phrase_token_sequences`), and the trie that finds
the next tokens completing one (:class:`TokenTrie`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

PHRASE_MODES = ("ngrams", "entities")

STOPWORDS = frozenset(
    """a an the and or but if then than so of in on at to for from by with without about as into onto
    over under after before during between through up down out off is are was were be been being am do
    does did done has have had having it its it's this that these those there here he she they them his
    her their theirs him i me my we us our you your yours who whom whose which what when where why how
    not no nor also very just can could would should will shall may might must such some any all each
    both more most other another same own only one two s t""".split()
)


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9][\w'’\-]*", text)


def extract_phrases(text: str, mode: str = "ngrams", max_ngram: int = 3) -> list[str]:
    """Phrases of ``text`` to forbid, in order of first appearance, without duplicates.

    - ``"ngrams"``: every run of 1..N consecutive words whose first and last words are content words
      (not in :data:`STOPWORDS`), e.g. "born in Santiago" and "Santiago" but not "in";
    - ``"entities"``: maximal runs of capitalised words (a sentence-initial stopword such as "The" is
      dropped) and numbers, e.g. "Jaime Vasquez", "1958".
    """
    words = _words(text)
    out: dict[str, None] = {}
    if mode == "ngrams":
        for n in range(1, max_ngram + 1):
            for i in range(len(words) - n + 1):
                span = words[i : i + n]
                if span[0].lower() not in STOPWORDS and span[-1].lower() not in STOPWORDS:
                    out[" ".join(span)] = None
    elif mode == "entities":
        run: list[str] = []
        for w in [*words, ""]:
            if w and (w[0].isupper() or w[0].isdigit()) and not (not run and w.lower() in STOPWORDS):
                run.append(w)
            elif run:
                out[" ".join(run)] = None
                run = []
    else:
        raise ValueError(f"phrase mode must be one of {PHRASE_MODES}, got {mode!r}")
    return list(out)


def phrase_token_sequences(tokenizer, phrases: Iterable[str]) -> list[list[int]]:
    """Token ids of each phrase as a tokenizer may emit it: with and without a leading space, and with
    its first letter upper-cased (sentence start); duplicates removed."""
    texts = list(dict.fromkeys(t for p in phrases for v in (p, p[:1].upper() + p[1:]) for t in (v, " " + v)))
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]  # one batched call
    return [list(s) for s in dict.fromkeys(tuple(ids) for ids in encoded if ids)]


class TokenTrie:
    """A trie of forbidden token-id sequences.

    :meth:`blocked_next` returns the tokens that would *complete* a sequence given the tokens generated so
    far: token c is blocked when some suffix of ``generated`` followed by c is a whole sequence (a
    one-token sequence is always blocked). Prefixes alone never block.
    """

    def __init__(self, sequences: Iterable[Sequence[int]] = ()):
        self.root: dict = {}
        self.max_len = 0
        self.size = 0
        for s in sequences:
            self.add(s)

    def add(self, seq: Sequence[int]) -> None:
        if not seq:
            return
        node = self.root
        for t in seq:
            node = node.setdefault(int(t), {})
        if None not in node:
            node[None] = True  # end of a sequence
            self.size += 1
        self.max_len = max(self.max_len, len(seq))

    def __len__(self) -> int:
        return self.size

    def blocked_next(self, generated: Sequence[int]) -> set[int]:
        blocked: set[int] = set()
        start = max(0, len(generated) - self.max_len + 1)
        for i in range(start, len(generated) + 1):  # i = len(generated): the empty suffix (root)
            node = self.root
            for t in generated[i:]:
                node = node.get(int(t))
                if node is None:
                    break
            else:
                blocked.update(t for t, child in node.items() if t is not None and None in child)
        return blocked
