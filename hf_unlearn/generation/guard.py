"""GUARD: generation-time unlearning (Deng, Liu, Pang, He, Feng, Xuan, Zhu & Wei, 2025, "GUARD:
Generation-time LLM Unlearning via Adaptive Restriction and Detection", arXiv 2505.13312).

No weight changes. At decoding time:

1. **Detection** (:mod:`.classifier`): a prompt is a *target* when an MLP on the frozen model's mean-pooled
   hidden states (or on a sentence embedding of the prompt) gives p(forget) > ``threshold``. Non-target
   prompts are decoded untouched: their outputs are bit-identical to plain ``generate()``.
2. **Forbidden phrases**: for a target prompt, the ``retrieve_top_n`` forget *answers* closest to the
   prompt (sentence-embedding cosine; all answer embeddings are computed once) give the phrases to forbid
   (:func:`.phrases.extract_phrases`: n-grams of content words, or capitalised entity spans).
3. **Constrained decoding** (:class:`.processor.GUARDLogitsProcessor`, a ``transformers.LogitsProcessor``):
   a token trie over the phrases' token ids (with and without a leading space, and with the first letter
   upper-cased) removes every candidate that would complete a forbidden sequence in the *generated*
   continuation (never the prompt); on a top-k shortlist, a candidate whose text would complete a phrase
   (any tokenisation) is removed too, and the word being formed is compared with the phrases by
   sentence-embedding cosine s: removed when s ≥ ``semantic_threshold`` (δ), else its score is lowered by
   ``semantic_weight``·s (λ). Greedy, sampling and beam search all call it.

The paper's exact penalty formulas were not available; the reference points are a third-party
re-implementation (beam 7, δ = 0.5, trie + SBERT) and the public ICLR 2026 reviews of the paper. This
implementation blocks only *complete* phrase matches (the third-party trie blocked every prefix).

Where things are: :mod:`.phrases` (phrase extraction, token trie), :mod:`.embedders` (sentence
embeddings), :mod:`.processor` (the logits processor), :mod:`.config` (:class:`GUARDConfig`), this module
(the :class:`GUARD` object: building, detection, retrieval, generation, storage).

Privacy: GUARD keeps the forget set's answers in its index; saving or pushing a GUARD folder publishes
them (the model card says so).

    guard = GUARD.from_forget_set(model, tokenizer, forget, negatives=[retain, general])
    out = guard.generate(**tokenizer(prompts, return_tensors="pt", padding=True), max_new_tokens=64)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from datasets import Dataset
from safetensors.torch import save_file
from transformers import LogitsProcessorList

from ..data.qa import PLAIN_PROMPT_TEMPLATE, encode_prompt
from ..importance.io import load_safetensors_checked
from ..papers import GUARD_PAPER
from ..registry import register_method
from .checks import check_causal_lm
from .classifier import PromptClassifier, masked_mean, mean_pooled_hidden_states
from .config import GUARDConfig
from .embedders import SentenceEmbedder, StaticWordEmbedder, load_sentence_model
from .phrases import TokenTrie, extract_phrases, phrase_token_sequences
from .processor import GUARDLogitsProcessor, RowConstraint

CONFIG_FILE = "guard_config.json"
INDEX_FILE = "forget_index.json"
EMBEDDINGS_FILE = "answer_embeddings.safetensors"


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
    _card_kind = "logits_processor"  # the model-card template (hf_unlearn.model_cards.CARD_TEMPLATES)

    def __init__(
        self,
        model,
        tokenizer,
        config: GUARDConfig,
        classifier: PromptClassifier,
        answers: list[str],
        answer_embeddings: torch.Tensor,
        sentence_model=None,
        fingerprint: str | None = None,
        forget_fingerprint: dict | None = None,
    ):
        check_causal_lm(model, "GUARD")
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

        check_causal_lm(model, "GUARD.from_forget_set")
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
        guard = cls(
            model,
            tokenizer,
            config,
            clf,
            answers,
            answer_emb,
            embedder.model,
            forget_fingerprint=dataset_fingerprint(forget),
        )
        labels = torch.tensor([1] * len(positives) + [0] * len(neg))
        clf.fit(
            guard.question_features(positives + neg),
            labels,
            config.classifier_epochs,
            config.classifier_learning_rate,
            seed=config.seed,
        )
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
            processor = GUARDLogitsProcessor(
                input_ids.shape[1],
                resolve,
                self.tokenizer,
                self.word_embedder,
                self.config,
                self.tokenizer.eos_token_id,
            )
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
        check_causal_lm(model, "GUARD.from_pretrained")
        folder = Path(folder)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(folder)))
        meta = json.loads((folder / CONFIG_FILE).read_text())
        config = GUARDConfig(**meta["config"])
        answers = json.loads((folder / INDEX_FILE).read_text())["answers"]
        emb = load_safetensors_checked(folder / EMBEDDINGS_FILE, "GUARD answer embeddings")[0][
            "answer_embeddings"
        ]
        clf = PromptClassifier.from_pretrained(folder)
        return cls(
            model,
            tokenizer,
            config,
            clf,
            answers,
            emb,
            sentence_model,
            meta["tokenizer_fingerprint"],
            meta.get("forget_fingerprint"),
        )

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str = "Upload GUARD artefacts",
    ) -> str:
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
