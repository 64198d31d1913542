import functools
import json
import re

import pytest
import torch
from hub_server import hub_server, use_hub
from utils import demo_world

from hf_unlearn.data.qa import encode_prompt
from hf_unlearn.generation import GUARD, GUARDConfig, GUARDLogitsProcessor, TokenTrie, extract_phrases
from hf_unlearn.generation.embedders import load_sentence_model
from hf_unlearn.generation.phrases import phrase_token_sequences
from hf_unlearn.generation.processor import RowConstraint
from hf_unlearn.tiny import train_tokenizer

pytest.importorskip("sentence_transformers")
TOKEN = "hf_fake_token_for_tests_0123456789abcdefXYZ"


@functools.lru_cache(maxsize=1)
def _built():
    data, tok, model = demo_world()
    guard = GUARD.from_forget_set(model, tok, data["forget"], negatives=[data["retain"], data["holdout"]])
    return data, tok, model, guard


def batch(tok, questions):
    prompts = [encode_prompt(tok, q) for q in questions]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def continuation(tok, row, width):
    return tok.decode(row[width:], skip_special_tokens=True)


def contains(text, phrase):
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, flags=re.IGNORECASE) is not None


# ------------------------------------------------------------------------------ phrases and trie
def test_extract_phrases_by_hand():
    text = "Xanthe Juniper was born in 1991 in Lindqvist Harbour."
    ngrams = extract_phrases(text, "ngrams", 2)
    assert ngrams[:6] == ["Xanthe", "Juniper", "born", "1991", "Lindqvist", "Harbour"]
    assert "Xanthe Juniper" in ngrams and "Lindqvist Harbour" in ngrams
    assert "in" not in ngrams and "was born" not in ngrams and "born in" not in ngrams  # stopword ends
    assert extract_phrases(text, "entities") == ["Xanthe Juniper", "1991", "Lindqvist Harbour"]
    assert extract_phrases("The Wandering Ember sold well.", "entities") == ["Wandering Ember"]


def test_trie_blocks_only_completions():
    trie = TokenTrie([[5, 6, 7], [9], [6, 8]])
    assert trie.blocked_next([]) == {9}  # a one-token phrase is always blocked
    assert trie.blocked_next([5]) == {9}  # a prefix alone never blocks
    assert trie.blocked_next([5, 6]) == {7, 8, 9}  # completes [5,6,7] and, from the suffix [6], [6,8]
    assert trie.blocked_next([1, 2, 6]) == {8, 9}
    assert len(trie) == 3 and trie.max_len == 3


def test_phrase_token_sequences_include_leading_space_variants():
    _, tok, _ = demo_world()
    seqs = phrase_token_sequences(tok, ["Xanthe Juniper"])
    bare = tok("Xanthe Juniper", add_special_tokens=False)["input_ids"]
    spaced = tok(" Xanthe Juniper", add_special_tokens=False)["input_ids"]
    assert bare != spaced and bare in seqs and spaced in seqs
    trie = TokenTrie(seqs)
    assert spaced[-1] in trie.blocked_next(spaced[:-1]) and bare[-1] in trie.blocked_next(bare[:-1])


# ---------------------------------------------------------------------------------- the processor
def test_processor_ignores_the_prompt_and_leaves_other_rows_alone():
    trie = TokenTrie([[5, 6, 7]])
    prompt = torch.tensor([[1, 5, 6], [1, 5, 6]])  # the prompt ends with the phrase's prefix
    proc = GUARDLogitsProcessor(3, [None, RowConstraint(trie, [], None)])
    scores = torch.randn(2, 10)
    before = scores.clone()
    out = proc(prompt, scores)
    assert torch.equal(out, scores) and torch.isfinite(out).all()  # nothing generated yet: 7 allowed
    out = proc(torch.cat([prompt, torch.tensor([[5], [5]])], 1), scores)
    assert torch.isfinite(out).all()
    out = proc(torch.cat([prompt, torch.tensor([[5, 6], [5, 6]])], 1), scores)
    assert out is not scores and torch.equal(scores, before)  # a new tensor; the input is untouched
    assert torch.equal(out[0], scores[0])  # non-target row: bit-identical
    assert out[1, 7] == -torch.inf and torch.isfinite(out[1, :7]).all()
    beams = torch.cat([prompt.repeat_interleave(2, 0), torch.tensor([[5, 6]] * 4)], 1)  # 2 beams per prompt
    out = proc(beams, torch.zeros(4, 10))
    assert torch.isfinite(out[:2]).all() and (out[2:, 7] == -torch.inf).all()


def test_guard_detects_forget_prompts():
    data, tok, model, guard = _built()
    ids, mask = batch(tok, list(data["forget"]["question"]) + list(data["holdout"]["question"]))
    p = guard.target_probability(ids, mask)
    n = len(data["forget"])
    assert (p[:n] > 0.5).all() and (p[n:] < 0.5).all(), p  # holdout people were negatives too


def test_forbidden_phrases_cannot_be_generated_greedy_or_beam():
    data, tok, model, guard = _built()
    questions = list(data["forget"]["question"])
    ids, mask = batch(tok, questions)
    width = ids.shape[1]
    plain = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id
    )
    hits = 0
    for strategy in (dict(do_sample=False), dict(num_beams=3, do_sample=False)):
        out = guard.generate(ids, mask, max_new_tokens=24, **strategy)
        for i, q in enumerate(questions):
            phrases = guard.forbidden_phrases(q)
            said = continuation(tok, plain[i], width)
            hits += any(contains(said, p) for p in phrases)  # the model's own answer uses them
            text = continuation(tok, out[i], width)
            assert not [p for p in phrases if contains(text, p)], (q, text)
    assert hits == 2 * len(questions)


def test_non_target_prompts_are_bit_identical_to_plain_generate():
    data, tok, model, guard = _built()
    ids, mask = batch(tok, list(data["retain"]["question"][:6]))
    kw = dict(max_new_tokens=20, pad_token_id=tok.pad_token_id)
    for strategy in (dict(do_sample=False), dict(num_beams=3, do_sample=False)):
        plain = model.generate(input_ids=ids, attention_mask=mask, **strategy, **kw)
        assert torch.equal(guard.generate(ids, mask, **strategy, **kw), plain)
    torch.manual_seed(0)
    plain = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=5, **kw)
    torch.manual_seed(0)
    assert torch.equal(guard.generate(ids, mask, do_sample=True, top_k=5, **kw), plain)


def test_mixed_batch_changes_only_target_rows():
    data, tok, model, guard = _built()
    questions = [data["retain"]["question"][0], data["forget"]["question"][0], data["retain"]["question"][1]]
    ids, mask = batch(tok, questions)
    width = ids.shape[1]
    plain = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id
    )
    out = guard.generate(ids, mask, max_new_tokens=20, do_sample=False)
    texts = [continuation(tok, r, width) for r in out]
    assert texts[0] == continuation(tok, plain[0], width) and texts[2] == continuation(tok, plain[2], width)
    assert texts[1] != continuation(tok, plain[1], width)


def test_sentence_embedding_features_also_work():
    data, tok, model, guard = _built()
    g = GUARD.from_forget_set(
        model,
        tok,
        data["forget"],
        negatives=data["retain"],
        config=GUARDConfig(feature_source="sentence_embedding"),
        sentence_model=guard.embedder.model,
    )
    ids, mask = batch(tok, [data["forget"]["question"][0], data["retain"]["question"][0]])
    p = g.target_probability(ids, mask)
    assert p[0] > 0.5 > p[1]


# ------------------------------------------------------------------------------------ storage
def test_save_and_load_round_trip(tmp_path):
    data, tok, model, guard = _built()
    guard.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "weights are unchanged" in card and "answers are stored in plain text" in card
    assert "2505.13312" in card
    loaded = GUARD.from_pretrained(tmp_path, model, tok, sentence_model=guard.embedder.model)
    ids, mask = batch(tok, list(data["forget"]["question"][:3]) + list(data["retain"]["question"][:3]))
    assert torch.allclose(loaded.target_probability(ids, mask), guard.target_probability(ids, mask))
    a = guard.generate(ids, mask, max_new_tokens=16, do_sample=False)
    assert torch.equal(loaded.generate(ids, mask, max_new_tokens=16, do_sample=False), a)
    assert json.loads((tmp_path / "forget_index.json").read_text())["answers"] == list(
        data["forget"]["answer"]
    )


def test_push_to_hub_uploads_the_folder_without_the_token(tmp_path):
    data, tok, model, guard = _built()
    with hub_server() as hub, use_hub(hub.endpoint):
        guard.push_to_hub("user/guard-demo", token=TOKEN)
        files = hub.files("user/guard-demo")
        assert TOKEN in hub.tokens_seen()
        pulled = GUARD.from_pretrained("user/guard-demo", model, tok, sentence_model=guard.embedder.model)
        assert pulled.answers == guard.answers
    assert {"README.md", "guard_config.json", "forget_index.json", "prompt_classifier.safetensors"} <= set(
        files
    )
    assert all(TOKEN.encode() not in content for content in files.values())


# ---------------------------------------------------------------------------------- bad input
def test_bad_input():
    data, tok, model, guard = _built()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="threshold must be in"):
            GUARDConfig(threshold=bad)
        with pytest.raises(ValueError, match="semantic_threshold must be in"):
            GUARDConfig(semantic_threshold=bad)
    with pytest.raises(ValueError, match="forget set is empty"):
        GUARD.from_forget_set(model, tok, data["forget"].select([]), negatives=data["retain"])
    with pytest.raises(ValueError, match="negative prompts"):
        GUARD.from_forget_set(model, tok, data["forget"], negatives=[], sentence_model=guard.embedder.model)
    with pytest.raises(ValueError, match="no column 'answer'"):
        GUARD.from_forget_set(model, tok, data["forget"].remove_columns("answer"), negatives=data["retain"])


def test_index_built_with_another_tokenizer_is_refused(tmp_path):
    data, tok, model, guard = _built()
    guard.save_pretrained(tmp_path)
    other = train_tokenizer(["completely different text for another vocabulary"] * 4, vocab_size=300)
    with pytest.raises(ValueError, match="different tokenizer"):
        GUARD.from_pretrained(tmp_path, model, other, sentence_model=guard.embedder.model)


@pytest.mark.parametrize("name", ["prompt_classifier.safetensors", "answer_embeddings.safetensors"])
def test_a_corrupt_safetensors_file_in_a_guard_folder_is_named(tmp_path, name):
    data, tok, model, guard = _built()
    guard.save_pretrained(tmp_path)
    (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:40])  # truncated
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(tmp_path / name))} is not a valid safetensors file"
    ):
        GUARD.from_pretrained(tmp_path, model, tok, sentence_model=guard.embedder.model)


def test_names_used_by_the_benchmarks_still_import_from_generation_guard():
    from hf_unlearn.generation import guard as module

    for name in (
        "GUARD",
        "GUARDConfig",
        "GUARDLogitsProcessor",
        "TokenTrie",
        "extract_phrases",
        "RowConstraint",
        "load_sentence_model",
        "phrase_token_sequences",
        "PromptClassifier",
    ):
        assert hasattr(module, name), name


def test_default_sentence_model_loads_offline():
    model = load_sentence_model("sentence-transformers/all-MiniLM-L6-v2")
    assert model.encode(["x"]).shape[-1] == 384


def test_prefill_classification_matches_a_separate_forward():
    data, tok, model, guard = _built()
    questions = [data["retain"]["question"][0], data["forget"]["question"][1], data["holdout"]["question"][0]]
    ids, mask = batch(tok, questions)
    for strategy in (dict(do_sample=False), dict(num_beams=2, do_sample=False)):
        eager = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=16,
            pad_token_id=tok.pad_token_id,
            logits_processor=[guard.logits_processor(ids, mask)],
            **strategy,
        )
        assert torch.equal(guard.generate(ids, mask, max_new_tokens=16, **strategy), eager)


def test_features_do_not_depend_on_the_padding_of_the_batch():
    data, tok, model, guard = _built()
    short, long = data["forget"]["question"][0], data["retain"]["question"][0] + " and more words here"
    alone = guard.question_features([short])
    padded = guard.question_features([short, long])[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_classifier_training_is_seeded_and_leaves_the_global_rng_alone():
    from hf_unlearn.generation import PromptClassifier

    feats, labels = torch.randn(20, 6), torch.tensor([0, 1] * 10)
    state = torch.random.get_rng_state()
    a, b = PromptClassifier.seeded(6, 8, seed=3), PromptClassifier.seeded(6, 8, seed=3)
    a.fit(feats, labels, epochs=5, seed=1)
    b.fit(feats, labels, epochs=5, seed=1)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert torch.equal(torch.random.get_rng_state(), state)
