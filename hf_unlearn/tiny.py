"""Tiny models for demos, tests and CPU benchmarks, built entirely in memory (no downloads).

``train_tokenizer`` trains a byte-level BPE tokenizer on the given texts with the ``tokenizers``
library; ``tiny_llama`` builds a small ``LlamaForCausalLM`` from a config; ``tiny_llava`` builds a
small ``LlavaForConditionalGeneration`` and its processor (CLIP image processor + such a tokenizer
with an ``<image>`` token); ``finetune_qa`` teaches
such a model a QA dataset with a plain ``transformers.Trainer`` (how the demo and the TOFU benchmark
make their "target" and "retain" models).
"""

from __future__ import annotations

from collections.abc import Iterable

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)

from .data.qa import QACollator, tokenize_qa_dataset

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``; adds BOS, pads with ``<pad>``, no chat template."""
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos = tok.token_to_id(SPECIAL_TOKENS["bos_token"])
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def tiny_llama(
    tokenizer,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 256,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised ``LlamaForCausalLM`` sized for CPU work, matching ``tokenizer``'s ids."""
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


IMAGE_TOKEN = "<image>"


def tiny_llava(
    texts: Iterable[str],
    image_size: int = 16,
    patch_size: int = 8,
    hidden_size: int = 32,
    vocab_size: int = 300,
    seed: int = 0,
    num_hidden_layers: int = 1,
    vision_hidden_size: int | None = None,
    vision_layers: int = 1,
    num_attention_heads: int = 2,
):
    """(``LlavaForConditionalGeneration``, ``LlavaProcessor``) sized for CPU work, built from configs.

    The processor pairs a CLIP image processor (``image_size`` square crops) with a tokenizer trained on
    ``texts`` plus the ``<image>`` token; each image becomes (image_size / patch_size)² image tokens (CLIP's
    class token is dropped: ``num_additional_image_tokens=1``). The language model is a Llama of
    ``num_hidden_layers`` layers of width ``hidden_size``; the CLIP tower has ``vision_layers`` layers of
    width ``vision_hidden_size`` (default ``hidden_size // 2``).
    """
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
        image_token=IMAGE_TOKEN,
    )
    torch.manual_seed(seed)
    vision_width = vision_hidden_size or hidden_size // 2
    vision = CLIPVisionConfig(
        hidden_size=vision_width,
        intermediate_size=2 * vision_width,
        num_hidden_layers=vision_layers,
        num_attention_heads=num_attention_heads,
        image_size=image_size,
        patch_size=patch_size,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    return LlavaForConditionalGeneration(config), processor


def finetune_qa(
    model,
    tokenizer,
    dataset: Dataset,
    output_dir: str,
    epochs: float = 20,
    learning_rate: float = 3e-3,
    batch_size: int = 16,
    max_length: int = 128,
    seed: int = 0,
    disable_tqdm: bool = True,
    use_cpu: bool = True,
):
    """Fine-tune ``model`` on QA pairs (answer tokens only) with a plain ``Trainer``; returns the model.

    Only parameters with ``requires_grad`` train (freeze the rest first to fine-tune a subset)."""
    train = tokenize_qa_dataset(dataset, tokenizer, max_length, name="finetune dataset")
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.0,
        logging_steps=50,
        save_strategy="no",
        report_to=[],
        seed=seed,
        disable_tqdm=disable_tqdm,
        use_cpu=use_cpu,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train, data_collator=QACollator(tokenizer.pad_token_id)
    )
    if disable_tqdm:  # quiet: without a progress bar, Trainer would print every log dict instead
        trainer.remove_callback(PrinterCallback)
    trainer.train()
    return model.eval()
