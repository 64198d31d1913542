"""Vision-language models (LLaVA-style ``*ForConditionalGeneration``) on image + question + answer rows.

Each row goes through the model's processor: the prompt (the processor's chat template with one image
and the question as a user turn, or the plain ``"<image>\\nQuestion: {q}\\nAnswer:"``) is processed with
the image, so its image placeholder tokens are expanded as the model expects; the answer tokens and EOS
follow. Labels are ``-100`` on the whole prompt (image tokens included) and on padding, so every loss is
on answer tokens only, as for text-only causal LMs. Every processor output (``pixel_values``,
``image_sizes``, ...) is kept and passed to the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from transformers.models.auto import modeling_auto as auto

from ..data.qa import IGNORE_INDEX, check_qa_columns
from .base import TaskAdapter, unwrap_peft
from .causal_lm import check_tokenizer, check_vocabulary

PLAIN_VL_TEMPLATE = "{image_token}\nQuestion: {question}\nAnswer:"
TEXT_KEYS = ("input_ids", "attention_mask", "labels")


def build_vl_prompt(processor, question: str) -> tuple[str, bool]:
    """(prompt text, whether it came from a chat template) for one image and one question."""
    if getattr(processor, "chat_template", None):
        turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False), True
    token = getattr(processor, "image_token", None) or "<image>"
    return PLAIN_VL_TEMPLATE.format(image_token=token, question=question), False


def encode_vl(processor, image, question: str, answer: str, max_length: int) -> dict:
    """One image/question/answer row → ``input_ids``, ``attention_mask``, ``labels`` (prompt = -100)
    and the processor's image tensors (``pixel_values`` etc., without the batch dimension)."""
    prompt, chat = build_vl_prompt(processor, question)
    try:
        enc = processor(images=image, text=prompt, return_tensors="np", add_special_tokens=not chat)
    except (OSError, TypeError, ValueError) as err:  # an unreadable file, a wrong type, a bad array
        raise ValueError(
            f"the processor cannot read the image ({type(image).__name__}): {type(err).__name__}: {err}"
        ) from None
    prompt_ids = [int(t) for t in enc["input_ids"][0]]
    tokenizer = processor.tokenizer
    answer_ids = tokenizer(answer if chat else " " + answer, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    if len(prompt_ids) >= max_length:
        raise ValueError(
            f"the answer is truncated away entirely: the prompt (with its image tokens) has {len(prompt_ids)} "
            f"tokens and max_length={max_length}; raise max_length"
        )
    input_ids = (prompt_ids + answer_ids)[:max_length]
    row = {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids) :],
    }
    for key, value in enc.items():
        if key not in TEXT_KEYS:
            row[key] = np.asarray(value)[0]
    return row


LM_LORA_TARGETS = (
    r".*language_model\.(model\.)?layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
)


def reference_lora_config(r: int = 32, alpha: int = 256, dropout: float = 0.05, train_projector: bool = True):
    """SafeEraser's configuration (``config/forget_lora.yaml``) as a ``peft.LoraConfig``: LoRA on the
    language model's q/k/v/o/gate/up/down projections, the multimodal projector fully trainable
    (``modules_to_save``), the vision tower and the rest of the language model frozen. Pass it as a
    trainer's ``peft_config``; the adapter-disabled model (original projector included) is the reference."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=LM_LORA_TARGETS,
        modules_to_save=["multi_modal_projector"] if train_projector else None,
    )


@dataclass
class VisionLanguageCollator:
    """Right-pads the token columns and stacks every other (image) column."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        out = {
            k: torch.tensor([list(r[k]) + [v] * (width - len(r[k])) for r in rows], dtype=torch.long)
            for k, v in fill.items()
        }
        for key in rows[0]:
            if key not in fill:
                out[key] = torch.stack([torch.as_tensor(np.asarray(r[key])) for r in rows])
        return out


class VisionLanguageTask(TaskAdapter):
    name = "vision_language"
    description = "a vision-language model (AutoModelForImageTextToText, e.g. LlavaForConditionalGeneration)"
    pipeline_tag = "image-text-to-text"
    auto_class = "AutoModelForImageTextToText"

    @classmethod
    def matches(cls, model) -> bool:
        names = set(auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.values())
        encoder_decoder = getattr(getattr(model, "config", None), "is_encoder_decoder", False)
        return type(model).__name__ in names and not encoder_decoder

    @property
    def tokenizer(self):
        return getattr(self.processing_class, "tokenizer", None)

    def check(self, model) -> None:
        p = self.processing_class
        if p is None or self.tokenizer is None or getattr(p, "image_processor", None) is None:
            raise ValueError(
                f"{type(unwrap_peft(model)).__name__} needs its processor as processing_class (an image "
                f"processor and a tokenizer, e.g. AutoProcessor.from_pretrained(...)); got {type(p).__name__}"
            )
        check_tokenizer(self.tokenizer, "image/question/answer data")
        check_vocabulary(model, self.tokenizer)

    def prepare(self, dataset, name, answers=None):
        a = self.args
        check_qa_columns(dataset, name, a.question_column, a.answer_column)
        if a.image_column not in dataset.column_names:
            raise ValueError(
                f"{name} has no image column {a.image_column!r}; it has {dataset.column_names}. Set image_column."
            )
        rows = []
        for i in range(len(dataset)):
            try:
                row = dataset[i]  # decodes an Image feature
            except (OSError, ValueError) as err:
                raise ValueError(f"{name} row {i}: the image cannot be decoded: {err}") from None
            answer = answers[i] if answers is not None else row[a.answer_column]
            if row[a.image_column] is None:
                raise ValueError(f"{name} row {i}: the image is missing")
            try:
                rows.append(
                    encode_vl(
                        self.processing_class,
                        row[a.image_column],
                        row[a.question_column],
                        answer,
                        a.max_length,
                    )
                )
            except ValueError as err:
                raise ValueError(f"{name} row {i}: {err}") from None
        images = [k for k in rows[0] if k not in TEXT_KEYS]
        return Dataset.from_list(rows).with_format("numpy", columns=images, output_all_columns=True)

    def collator(self):
        return VisionLanguageCollator(self.pad_token_id)
