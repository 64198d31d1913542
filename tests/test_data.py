import pytest
from datasets import Dataset
from utils import SHARED_TOFU, demo_world

from hf_unlearn.data.demo import make_demo_dataset
from hf_unlearn.data.paired import PairedViews
from hf_unlearn.data.qa import IGNORE_INDEX, build_prompt, encode_prompt, encode_qa
from hf_unlearn.data.templates import REFUSALS, sample_templates
from hf_unlearn.data.tofu import load_tofu


def test_plain_template_masks_the_prompt_and_ends_with_eos():
    _, tok, _ = demo_world()
    row = encode_qa(tok, "Where was Ardel Ashcombe born?", "In Valdora.", max_length=64)
    prompt = encode_prompt(tok, "Where was Ardel Ashcombe born?")
    assert row["input_ids"][: len(prompt)] == prompt
    assert row["labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    answer = row["labels"][len(prompt) :]
    assert answer[-1] == tok.eos_token_id
    assert tok.decode(answer, skip_special_tokens=True).strip() == "In Valdora."
    assert len(row["input_ids"]) == len(row["labels"]) == len(row["attention_mask"])


def test_chat_template_is_used_when_the_tokenizer_has_one():
    _, tok, _ = demo_world()
    tok = tok.__class__(tokenizer_object=tok.backend_tokenizer, **tok.special_tokens_map)
    tok.chat_template = "{% for m in messages %}<s>[INST] {{ m['content'] }} [/INST]{% endfor %}"
    assert build_prompt(tok, "Who?") == "<s>[INST] Who? [/INST]"
    row = encode_qa(tok, "Who?", "Me.", max_length=64)
    n_prompt = len(encode_prompt(tok, "Who?"))
    assert row["input_ids"][0] == tok.bos_token_id and row["input_ids"][1] != tok.bos_token_id  # one BOS only
    assert all(label == IGNORE_INDEX for label in row["labels"][:n_prompt])


def test_truncation_keeps_partial_answers_but_rejects_empty_ones():
    _, tok, _ = demo_world()
    n_prompt = len(encode_prompt(tok, "Who?"))
    row = encode_qa(tok, "Who?", "A rather long answer with many words.", max_length=n_prompt + 2)
    assert sum(label != IGNORE_INDEX for label in row["labels"]) == 2
    with pytest.raises(ValueError, match="truncated away"):
        encode_qa(tok, "Who?", "Me.", max_length=n_prompt)


def test_demo_dataset_is_deterministic_and_disjoint():
    a, b = make_demo_dataset(seed=3), make_demo_dataset(seed=3)
    assert a["forget"].to_list() == b["forget"].to_list()
    people = {split: set(a[split]["person"]) for split in a}
    assert not (people["forget"] & people["retain"]) and not (people["holdout"] & people["retain"])
    assert make_demo_dataset(seed=4)["forget"].to_list() != a["forget"].to_list()
    with pytest.raises(ValueError):
        make_demo_dataset(n_people=3, n_forget=2, n_holdout=1)


def test_template_sampling_is_seeded():
    assert sample_templates(5, seed=1) == sample_templates(5, seed=1)
    assert set(sample_templates(50, seed=1)) <= set(REFUSALS)
    with pytest.raises(ValueError):
        sample_templates(3, templates=["", "ok"])


def test_retain_pairing_is_seeded_and_changes_with_the_epoch():
    forget = Dataset.from_dict({"x": list(range(4))})
    retain = Dataset.from_dict({"x": list(range(10, 20))})
    views = PairedViews({"forget": forget, "retain": retain}, seed=0)
    e0 = [views[i]["retain"]["x"] for i in range(4)]
    assert [views[i]["forget"]["x"] for i in range(4)] == [0, 1, 2, 3]
    assert e0 == [
        PairedViews({"forget": forget, "retain": retain}, seed=0)[i]["retain"]["x"] for i in range(4)
    ]
    views.set_epoch(1)
    assert [views[i]["retain"]["x"] for i in range(4)] != e0
    assert len(set(e0)) == 4  # drawn without replacement within an epoch


@pytest.mark.skipif(not SHARED_TOFU.is_dir(), reason="../shared/data/tofu is absent")
def test_load_tofu_reads_the_real_local_files():
    forget = load_tofu("forget01", SHARED_TOFU)
    assert len(forget) == 40 and {"question", "answer"} <= set(forget.column_names)
    assert len(load_tofu("world_facts", SHARED_TOFU)[0]["perturbed_answer"]) == 3
    with pytest.raises(ValueError, match="unknown TOFU split"):
        load_tofu("forget02", SHARED_TOFU)
    with pytest.raises(FileNotFoundError):
        load_tofu("forget01", SHARED_TOFU.parent)
