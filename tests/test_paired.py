"""PairedViews' batched fetch (``__getitems__``) returns exactly the items and batches of the row-by-row path;
batched QA tokenization returns exactly the rows of ``encode_qa``."""

import copy

import datasets
import pytest
import torch
from accelerate import Accelerator
from classif_utils import blobs
from utils import demo_world

from hf_unlearn.data.classification import prepare_classification_dataset
from hf_unlearn.data.paired import PairedCollator, PairedViews, hold_in_memory
from hf_unlearn.data.qa import encode_qa, tokenize_qa_dataset
from hf_unlearn.data.templates import sample_templates

BATCHES = [[0, 1, 2, 3], [5, 2, 7], [3], [1, 1, 6, 0]]  # shuffled, repeated and single indices


def assert_same(a, b):
    """Equal nested dicts/lists; tensors equal in value, dtype and shape."""
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif torch.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    else:
        assert a == b


def qa_views():
    data, tok, _ = demo_world()
    forget = tokenize_qa_dataset(data["forget"], tok, 64, "forget")
    template = tokenize_qa_dataset(
        data["forget"], tok, 64, "template", answers=sample_templates(len(data["forget"]), None, 0)
    )
    retain = tokenize_qa_dataset(data["retain"].select(range(5)), tok, 64, "retain")  # shorter: repeated
    return {"forget": forget, "template": template, "retain": retain}, tok.pad_token_id


def classification_views():
    train = blobs(40, num_labels=3)
    forget = prepare_classification_dataset(train.select(range(0, 40, 4)), "forget", 3)  # indices mapping
    retain = prepare_classification_dataset(train.select(range(1, 40, 2)), "retain", 3)  # longer
    return {"forget": forget, "retain": retain}, None


def text_classification_views():
    ids = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14], [3, 4], [2, 2, 2], [7, 1], [9, 9, 9, 9, 9]]
    ds = datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})
    ds = ds.add_column("labels", [i % 2 for i in range(len(ids))])
    return {"forget": prepare_classification_dataset(ds, "forget", 2)}, 0


CASES = {
    "qa": (qa_views, "causal_lm"),
    "image classification": (classification_views, "classification"),
    "text classification": (text_classification_views, "classification"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("held", [True, False], ids=["in-memory", "arrow"])
def test_getitems_equals_getitem_and_collates_identically(case, held):
    make, task = CASES[case]
    views, pad = make()
    pv = PairedViews(views, seed=3)
    if not held:
        pv.hold_max_bytes = 0  # every view read from Arrow, one call per batch
    collate = PairedCollator(pad, task)
    for epoch in (0, 1):  # the retain pairing changes with the epoch
        pv.set_epoch(epoch)
        for batch in BATCHES:
            items = pv.__getitems__(batch)
            expected = [pv[i] for i in batch]
            assert_same(items, expected)
            assert_same(collate(items), collate(expected))


def test_small_tensor_views_are_held_in_memory_and_qa_views_are_not():
    views, _ = classification_views()
    held = hold_in_memory(views["forget"])
    assert set(held) == {"pixel_values", "labels"} and held["pixel_values"].shape == (10, 1, 8, 8)
    assert hold_in_memory(views["forget"], max_bytes=0) is None
    qa, _ = qa_views()
    assert hold_in_memory(qa["forget"]) is None  # plain lists: read per batch from Arrow


def test_dataloaders_fetch_whole_batches():
    """torch's DataLoader and accelerate's prepared loader call __getitems__ once per batch, and give the
    batches of the row-by-row path."""
    views, pad = qa_views()
    calls = []

    class Counting(PairedViews):
        def __getitems__(self, indices):
            calls.append(list(indices))
            return super().__getitems__(indices)

    class RowByRow(PairedViews):
        __getitems__ = None

    def loader(cls):
        torch.manual_seed(0)
        dl = torch.utils.data.DataLoader(
            cls(views, seed=1), batch_size=4, shuffle=True, collate_fn=PairedCollator(pad)
        )
        return Accelerator(cpu=True).prepare_data_loader(dl)

    batched, row_by_row = list(loader(Counting)), list(loader(RowByRow))
    assert len(calls) == len(batched) == len(row_by_row) > 1 and all(len(c) <= 4 for c in calls)
    for a, b in zip(batched, row_by_row, strict=True):
        assert_same(a, b)


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_batched_qa_tokenization_equals_encoding_row_by_row(chat):
    data, tok, _ = demo_world()
    if chat:
        tok = copy.deepcopy(tok)
        tok.chat_template = "{% for m in messages %}<s>User: {{ m['content'] }}\n{% endfor %}Assistant:"
    rows = data["forget"]
    answers = sample_templates(len(rows), None, 0)
    for given in (None, answers):
        got = tokenize_qa_dataset(rows, tok, 24, "forget", answers=given).to_list()
        want = [
            encode_qa(tok, r["question"], given[i] if given else r["answer"], 24) for i, r in enumerate(rows)
        ]
        assert got == want


def test_batched_qa_tokenization_names_the_row_that_fails():
    data, tok, _ = demo_world()
    rows = data["forget"].select(range(3))
    answers = ["A fine answer.", "Another one.", " "]
    with pytest.raises(ValueError, match=r"^forget row 2: the answer is truncated away entirely"):
        tokenize_qa_dataset(rows, tok, 64, "forget", answers=answers)
    with pytest.raises(ValueError, match="2 answers given for 3 rows"):
        tokenize_qa_dataset(rows, tok, 64, "forget", answers=answers[:2])
