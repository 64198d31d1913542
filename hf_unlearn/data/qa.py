"""Question-answer formatting: prompt + answer token ids with the prompt masked out of the labels.

Every LLM method in hf_unlearn scores or trains on *answer tokens only*: the labels are ``-100`` on
the prompt and on padding. A tokenizer with a chat template gets the question as a single user turn
(``add_generation_prompt=True``); one without gets the plain template ``"Question: {q}\\nAnswer:"``.
Prompt and answer are tokenized separately and concatenated, so the boundary is exact whatever the
tokenizer merges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from datasets import Dataset

IGNORE_INDEX = -100
PLAIN_PROMPT_TEMPLATE = "Question: {question}\nAnswer:"


def build_prompt(tokenizer, question: str) -> str:
    """The text placed before the answer: the chat template's user turn, or the plain template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return PLAIN_PROMPT_TEMPLATE.format(question=question)


def encode_prompt(tokenizer, question: str) -> list[int]:
    """Token ids of the prompt alone (what `generate()` is given)."""
    return encode_prompts(tokenizer, [question])[0]


def encode_prompts(tokenizer, questions: Sequence[str]) -> list[list[int]]:
    """:func:`encode_prompt` of each question, in one batched tokenizer call."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    # A chat template already writes the BOS token; the plain template relies on the tokenizer's.
    prompts = [build_prompt(tokenizer, q) for q in questions]
    return tokenizer(prompts, add_special_tokens=not chat)["input_ids"]


def encode_qa(tokenizer, question: str, answer: str, max_length: int) -> dict[str, list[int]]:
    """Tokenize one QA pair: ``input_ids``, ``attention_mask`` and ``labels`` (prompt = -100).

    The answer gets a leading space under the plain template and the EOS token at the end; the
    sequence is cut at ``max_length`` from the right. Raises ``ValueError`` when no answer token
    survives the cut, because such a row would contribute nothing (or NaN) to any answer loss.
    """
    return encode_qa_pairs(tokenizer, [question], [answer], max_length)[0]


def encode_qa_pairs(
    tokenizer, questions: Sequence[str], answers: Sequence[str], max_length: int
) -> list[dict[str, list[int]]]:
    """:func:`encode_qa` of each pair, with two batched tokenizer calls (prompts, answers) in all.

    A ``ValueError`` of row i is raised with its message and ``err.row = i``.
    """
    chat = bool(getattr(tokenizer, "chat_template", None))
    prompts = encode_prompts(tokenizer, questions)
    answer_ids = tokenizer([a if chat else " " + a for a in answers], add_special_tokens=False)["input_ids"]
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    rows = []
    for i, (question, answer, prompt_ids, ids) in enumerate(
        zip(questions, answers, prompts, answer_ids, strict=True)
    ):
        input_ids = (prompt_ids + ids + eos)[:max_length]
        n_answer = len(input_ids) - len(prompt_ids)
        if n_answer <= 0 or not answer.strip():
            err = ValueError(
                f"the answer is truncated away entirely: the prompt has {len(prompt_ids)} tokens and "
                f"max_length={max_length}; raise max_length or shorten the question {question[:60]!r}"
            )
            err.row = i
            raise err
        labels = [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids) :]
        rows.append({"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels})
    return rows


def check_qa_columns(dataset, name: str, question_column: str = "question", answer_column: str = "answer"):
    """Raise a ``ValueError`` naming the problem if ``dataset`` is not a non-empty QA dataset."""
    if dataset is None:
        raise ValueError(
            f"{name} is None; pass a datasets.Dataset with '{question_column}' and '{answer_column}'"
        )
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{name} must be a datasets.Dataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty: there is nothing to unlearn or evaluate")
    if "input_ids" in dataset.column_names:
        return  # already tokenized
    missing = [c for c in (question_column, answer_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{name} is missing column(s) {missing}; it has {dataset.column_names}. Rename them or set "
            "question_column / answer_column."
        )
    columns = (question_column, answer_column)
    values = read_columns(dataset, columns)
    for i, row in enumerate(zip(*(values[c] for c in columns), strict=True)):
        for col, value in zip(columns, row, strict=True):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} row {i}: '{col}' must be a non-empty string, got {value!r}")


def read_columns(dataset: Dataset, columns: Sequence[str]) -> dict[str, list]:
    """``{column: values}`` of ``dataset`` in one read (iterating a ``Column`` reads row by row)."""
    return dict(dataset.select_columns(list(dict.fromkeys(columns)))[:])


def tokenize_qa_dataset(
    dataset: Dataset,
    tokenizer,
    max_length: int,
    name: str = "dataset",
    question_column: str = "question",
    answer_column: str = "answer",
    answers: Sequence[str] | None = None,
) -> Dataset:
    """Tokenize a QA dataset (or pass through one that already has ``input_ids``).

    ``answers`` replaces the answer column (e.g. FLAT's template answers for the same questions).
    Errors name the dataset and the row.
    """
    check_qa_columns(dataset, name, question_column, answer_column)
    if "input_ids" in dataset.column_names and answers is None:
        if "labels" not in dataset.column_names:
            dataset = dataset.map(lambda r: {"labels": list(r["input_ids"])})
        keep = [c for c in ("input_ids", "attention_mask", "labels") if c in dataset.column_names]
        return dataset.select_columns(keep)
    columns = read_columns(
        dataset, [question_column] if answers is not None else [question_column, answer_column]
    )
    questions = columns[question_column]
    answers = list(answers) if answers is not None else columns[answer_column]
    if len(answers) != len(questions):
        raise ValueError(f"{name}: {len(answers)} answers given for {len(questions)} rows")
    try:
        rows = encode_qa_pairs(tokenizer, questions, answers, max_length)
    except ValueError as err:
        if not hasattr(err, "row"):
            raise
        raise ValueError(f"{name} row {err.row}: {err}") from None
    return Dataset.from_dict({k: [r[k] for r in rows] for k in ("input_ids", "attention_mask", "labels")})


@dataclass
class QACollator:
    """Right-pads ``input_ids`` / ``attention_mask`` / ``labels`` of a list of tokenized rows."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for r in rows:
            pad = width - len(r["input_ids"])
            out["input_ids"].append(list(r["input_ids"]) + [self.pad_token_id] * pad)
            mask = r.get("attention_mask") or [1] * len(r["input_ids"])
            out["attention_mask"].append(list(mask) + [0] * pad)
            out["labels"].append(list(r["labels"]) + [IGNORE_INDEX] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
