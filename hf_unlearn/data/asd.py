"""Answer Style Diversification (ASD; SEFE, Chen et al., ICML 2025, arXiv 2505.02486, Sec. 4).

A task's training set answers in one style; a model tuned on task after task drifts to the latest task's
style and *looks* as if it forgot the earlier ones (superficial forgetting). ASD converts X % of each task's
rows (default 20 %), split equally among the four styles other than the task's own, so that every task
trains on a similar mix of styles. The five styles and their response-format prompts (RFP):

- ``yes_no``: "Is the answer 'c'?" about the true answer (yes) or a distractor (no), chosen at random;
- ``multiple_choice``: the true answer and up to three distractors, shuffled and lettered; the answer is
  the letter (LLaVA's RFP);
- ``short_answer``: the answer itself (LLaVA's "single word or phrase" RFP);
- ``brief`` / ``detailed``: an explanation of about 20 / 50 words that contains the answer, written by a
  ``generator`` the user passes (any ``transformers`` text-generation pipeline or a callable on a list of
  prompts) with :data:`EXPLANATION_PROMPTS`, or by templates when none is given.

Distractors are the task's other answers (or a user callable). :func:`diversify_answer_styles` is
deterministic by seed, works on a ``Dataset`` or a ``DatasetDict`` (each split), adds a ``style`` column
and never changes the kept rows.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from datasets import Dataset, DatasetDict

STYLES = ("yes_no", "multiple_choice", "short_answer", "brief", "detailed")
RESPONSE_FORMAT_PROMPTS = {
    "yes_no": "Answer the question with yes or no.",
    "multiple_choice": "Answer with the option's letter from the given choices directly.",
    "short_answer": "Answer the question using a single word or phrase.",
    "brief": "Answer the question and explain briefly, in about 20 words.",
    "detailed": "Answer the question and explain in detail, in about 50 words.",
}
EXPLANATION_PROMPTS = {
    "brief": "Question: {question}\nCorrect answer: {answer}\nWrite a brief explanation of about 20 words that "
    "gives the correct answer and why it is correct.\nExplanation:",
    "detailed": "Question: {question}\nCorrect answer: {answer}\nWrite a detailed explanation of about 50 words "
    "that gives the correct answer and describes the evidence for it.\nExplanation:",
}
TEMPLATES = {
    "brief": "The answer is {answer}: that is what the question asks about.",
    "detailed": 'The answer is {answer}. The question asks: "{question}" Looking at what it describes, the '
    "one that fits is {answer}; the other possible answers do not match what is shown, so the correct "
    "response is {answer}.",
}
LETTERS = "ABCD"


def assign_styles(n: int, own_style: str, proportion: float, seed: int = 0) -> list[str]:
    """The style of each of ``n`` rows: round(``proportion``·n) rows, at seeded random positions, get the
    four other styles in equal shares (the remainder to the first styles in :data:`STYLES` order); the rest
    keep ``own_style``."""
    _check(own_style, proportion)
    others = [s for s in STYLES if s != own_style]
    converted = round(proportion * n)
    counts = [converted // 4 + (1 if i < converted % 4 else 0) for i in range(4)]
    styles = [own_style] * n
    positions = random.Random(seed).sample(range(n), converted)
    labels = [style for style, count in zip(others, counts, strict=True) for _ in range(count)]
    for pos, style in zip(positions, labels, strict=True):
        styles[pos] = style
    return styles


def convert_row(
    question: str,
    answer: str,
    style: str,
    distractors: Sequence[str],
    rng: random.Random,
    explanation: str | None = None,
) -> tuple[str, str]:
    """(question, answer) of one row rewritten in ``style`` with its RFP (pure; ``rng`` draws the yes/no
    target and the option order)."""
    rfp = RESPONSE_FORMAT_PROMPTS[style]
    if style == "yes_no":
        if not distractors or rng.random() < 0.5:
            return f'{question} Is the answer "{answer}"? {rfp}', "yes"
        return f'{question} Is the answer "{distractors[0]}"? {rfp}', "no"
    if style == "multiple_choice":
        options = [answer, *distractors[:3]]
        rng.shuffle(options)
        lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
        return f"{question}\n{lines}\n{rfp}", LETTERS[options.index(answer)]
    if style == "short_answer":
        return f"{question}\n{rfp}", answer
    text = explanation or TEMPLATES[style].format(question=question, answer=answer)
    return f"{question}\n{rfp}", text


def diversify_answer_styles(
    dataset: Dataset | DatasetDict,
    own_style: str,
    proportion: float = 0.2,
    seed: int = 0,
    question_column: str = "question",
    answer_column: str = "answer",
    distractors: Callable[[str, str, list[str], random.Random], list[str]] | None = None,
    generator: Callable | None = None,
    max_new_tokens: int = 96,
    batch_size: int = 256,
):
    """ASD on one task's training set (or each split of a ``DatasetDict``): see the module docstring.

    ``distractors(question, answer, pool, rng)`` may replace the default (three of the task's other
    answers, drawn by ``rng``); ``generator`` writes the brief/detailed explanations. Rows keep every column;
    converted rows get a new question (with its RFP) and answer; a ``style`` column says each row's style.
    """
    if isinstance(dataset, DatasetDict):
        return DatasetDict(
            {
                name: diversify_answer_styles(
                    split,
                    own_style,
                    proportion,
                    seed,
                    question_column,
                    answer_column,
                    distractors,
                    generator,
                    max_new_tokens,
                    batch_size,
                )  # fmt: skip
                for name, split in dataset.items()
            }
        )
    _check(own_style, proportion)
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("the task's dataset is empty: there is nothing to diversify")
    for column in (question_column, answer_column):
        if column not in dataset.column_names:
            raise ValueError(f"the task's dataset has no {column!r} column; it has {dataset.column_names}")
    answers = [str(a) for a in dataset[answer_column]]
    if not any(a.strip() for a in answers):
        raise ValueError(f"the task has no answers: every {answer_column!r} value is empty")
    pool = sorted({a for a in answers if a.strip()})
    styles = assign_styles(len(dataset), own_style, proportion, seed)

    def convert(batch, indices):
        questions, new_answers, batch_styles = [], [], []
        wanted = [i for i, idx in enumerate(indices) if styles[idx] in ("brief", "detailed")]
        texts = _explanations(
            generator,
            [(batch[question_column][i], str(batch[answer_column][i]), styles[indices[i]]) for i in wanted],
            max_new_tokens,
        )
        explanation = dict(zip(wanted, texts, strict=True))
        for i, idx in enumerate(indices):
            question, answer, style = batch[question_column][i], str(batch[answer_column][i]), styles[idx]
            batch_styles.append(style)
            if style == own_style:
                questions.append(batch[question_column][i])
                new_answers.append(batch[answer_column][i])
                continue
            rng = random.Random(f"{seed}-{idx}")
            others = [a for a in pool if a != answer]
            picked = (
                distractors(question, answer, others, rng)
                if distractors
                else rng.sample(others, min(3, len(others)))
            )
            if style == "multiple_choice" and not picked:
                raise ValueError(
                    f"row {idx}: a multiple-choice question needs at least one distractor answer"
                )
            q, a = convert_row(question, answer, style, list(picked), rng, explanation.get(i))
            questions.append(q)
            new_answers.append(a)
        return {question_column: questions, answer_column: new_answers, "style": batch_styles}

    return dataset.map(convert, batched=True, batch_size=batch_size, with_indices=True, desc="ASD")


def _explanations(generator, items: list[tuple[str, str, str]], max_new_tokens: int) -> list[str | None]:
    """Explanations from ``generator`` (a text-generation pipeline or a callable on prompts) or None each."""
    if generator is None or not items:
        return [None] * len(items)
    prompts = [EXPLANATION_PROMPTS[style].format(question=q, answer=a) for q, a, style in items]
    try:
        outputs = generator(prompts, max_new_tokens=max_new_tokens, return_full_text=False)
    except TypeError:  # a plain callable on prompts
        outputs = generator(prompts)
    texts = []
    for out in outputs:
        if isinstance(out, list):
            out = out[0]
        if isinstance(out, dict):
            out = out.get("generated_text", "")
        texts.append(str(out).strip() or None)
    if len(texts) != len(items):
        raise ValueError(f"the generator returned {len(texts)} texts for {len(items)} prompts")
    return texts


def _check(own_style: str, proportion: float) -> None:
    if own_style not in STYLES:
        raise ValueError(f"own_style must be one of {STYLES}, got {own_style!r}")
    if not 0 <= proportion <= 1:
        raise ValueError(f"the ASD proportion must be in [0, 1], got {proportion}")
