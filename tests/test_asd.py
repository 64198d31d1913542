"""Answer Style Diversification: exact proportions and styles on a fixed seed, kept rows unchanged, the rules
of each style, a user generator, DatasetDict, bad input."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from datasets import Dataset, DatasetDict

from hf_unlearn.data.asd import RESPONSE_FORMAT_PROMPTS, STYLES, assign_styles, diversify_answer_styles

COLOURS = ["red", "green", "blue", "yellow", "black", "white", "gray", "brown"]


def task(n=40):
    return Dataset.from_dict(
        {
            "question": [f"What colour is shape {i}?" for i in range(n)],
            "answer": [COLOURS[i % len(COLOURS)] for i in range(n)],
            "image_id": list(range(n)),
        }
    )


def test_assign_styles_exact_shares_and_seeded():
    styles = assign_styles(100, "short_answer", 0.2, seed=3)
    counts = Counter(styles)
    assert counts["short_answer"] == 80 and all(counts[s] == 5 for s in STYLES if s != "short_answer")
    assert styles == assign_styles(100, "short_answer", 0.2, seed=3)
    assert styles != assign_styles(100, "short_answer", 0.2, seed=4)
    odd = Counter(assign_styles(10, "yes_no", 0.3))  # 3 converted: one each to the first three other styles
    assert odd == {"yes_no": 7, "multiple_choice": 1, "short_answer": 1, "brief": 1}
    assert assign_styles(5, "brief", 0.0) == ["brief"] * 5


def test_diversify_rules_and_kept_rows():
    original = task()
    out = diversify_answer_styles(original, "short_answer", proportion=0.5, seed=0)
    assert Counter(out["style"]) == {
        "short_answer": 20,
        "yes_no": 5,
        "multiple_choice": 5,
        "brief": 5,
        "detailed": 5,
    }
    for before, after in zip(original, out, strict=True):
        style = after["style"]
        assert after["image_id"] == before["image_id"]
        if style == "short_answer":
            assert after["question"] == before["question"] and after["answer"] == before["answer"]
            continue
        assert after["question"].startswith(before["question"])
        assert RESPONSE_FORMAT_PROMPTS[style] in after["question"]
        if style == "yes_no":
            asked = re.search(r'Is the answer "([^"]+)"', after["question"]).group(1)
            assert after["answer"] == ("yes" if asked == before["answer"] else "no")
        elif style == "multiple_choice":
            options = dict(re.findall(r"^([A-D])\. (.+)$", after["question"], re.M))
            assert options[after["answer"]] == before["answer"] and len(options) == 4
            assert len(set(options.values())) == 4
        else:
            assert before["answer"] in after["answer"]
    assert (
        out.to_dict() == diversify_answer_styles(original, "short_answer", proportion=0.5, seed=0).to_dict()
    )


def test_generator_writes_explanations_and_datasetdict():
    prompts_seen = []

    def generator(prompts):
        prompts_seen.extend(prompts)
        return [f"EXPLANATION {i}" for i in range(len(prompts))]

    out = diversify_answer_styles(task(), "short_answer", proportion=0.5, generator=generator)
    explained = [r for r in out if r["style"] in ("brief", "detailed")]
    assert len(explained) == 10 and all(r["answer"].startswith("EXPLANATION") for r in explained)
    assert len(prompts_seen) == 10 and all("Correct answer:" in p for p in prompts_seen)
    both = diversify_answer_styles(DatasetDict(train=task(), test=task(8)), "short_answer", proportion=0.5)
    assert len(both["train"]) == 40 and len(both["test"]) == 8 and "style" in both["test"].column_names


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"proportion": -0.1}, r"\[0, 1\]"),
        ({"proportion": 1.5}, r"\[0, 1\]"),
        ({"own_style": "essay"}, "own_style must be one of"),
        ({"answer_column": "label"}, "no 'label' column"),
    ],
)
def test_bad_input(kwargs, message):
    args = {"own_style": "short_answer", **kwargs}
    with pytest.raises(ValueError, match=message):
        diversify_answer_styles(task(), **args)


def test_empty_task_and_task_without_answers():
    with pytest.raises(ValueError, match="empty"):
        diversify_answer_styles(task().select([]), "short_answer")
    blank = Dataset.from_dict({"question": ["q1", "q2"], "answer": ["", " "]})
    with pytest.raises(ValueError, match="no answers"):
        diversify_answer_styles(blank, "short_answer")
