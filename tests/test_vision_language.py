"""The vision-language task adapter on a tiny LLaVA built from configs (in-memory tokenizer and CLIP
image processor): image + question + answer rows, prompt and image tokens masked, every model input
(``pixel_values`` too) passed through, GA and NPO train on it."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from hf_unlearn import GAConfig, GATrainer, NPOConfig, NPOTrainer
from hf_unlearn.data.qa import IGNORE_INDEX
from hf_unlearn.losses import sequence_mean_prob
from hf_unlearn.tasks import VisionLanguageCollator, VisionLanguageTask, detect_task
from hf_unlearn.tiny import tiny_llava

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
COMMON = dict(
    report_to=[], use_cpu=True, disable_tqdm=True, per_device_train_batch_size=2, save_strategy="no"
)


def _image(colour, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (20, 20, 3)).astype("uint8")
    img[4:16, 4:16] = COLOURS[colour]
    return Image.fromarray(img)


def _rows(n=4, offset=0):
    names = list(COLOURS)
    rows = [
        {
            "image": _image(names[i % 4], i + offset),
            "question": "What colour is the square?",
            "answer": f"It is {names[i % 4]}.",
        }
        for i in range(n)
    ]
    return Dataset.from_list(rows)


@pytest.fixture(scope="module")
def world():
    texts = [f"What colour is the square? It is {c}." for c in COLOURS] + ["Question: Answer:"]
    model, processor = tiny_llava(texts)
    return model, processor


def _fresh(world):
    import copy

    model, processor = world
    return copy.deepcopy(model), processor


def _batch(trainer, ds):
    view = trainer.prepare_dataset(ds, "rows")
    return trainer.adapter.collator()([view[i] for i in range(len(view))])


def test_detects_llava_as_vision_language(world):
    assert detect_task(world[0]) is VisionLanguageTask


def test_rows_mask_the_prompt_and_image_tokens_and_keep_pixel_values(world, tmp_path):
    model, processor = _fresh(world)
    t = GATrainer(
        model=model,
        args=GAConfig(str(tmp_path), **COMMON),
        forget_dataset=_rows(),
        processing_class=processor,
    )
    view = t.train_dataset.views["forget"]
    row = view[0]
    image_id = model.config.image_token_id
    ids, labels = list(row["input_ids"]), list(row["labels"])
    n_image = ids.count(image_id)
    assert n_image == (16 // 8) ** 2  # one token per patch, CLIP's class token dropped
    answer = processor.tokenizer(" It is red.", add_special_tokens=False)["input_ids"]
    expected = [IGNORE_INDEX] * (len(ids) - len(answer) - 1) + answer + [processor.tokenizer.eos_token_id]
    assert labels == expected  # only the answer and EOS are scored; image tokens are -100
    assert np.asarray(row["pixel_values"]).shape == (3, 16, 16)
    batch = VisionLanguageCollator(processor.tokenizer.pad_token_id)([view[0], view[1]])
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and batch["input_ids"].shape == batch["labels"].shape


def test_forward_passes_the_images(world, tmp_path):
    model, processor = _fresh(world)
    t = GATrainer(
        model=model,
        args=GAConfig(str(tmp_path), **COMMON),
        forget_dataset=_rows(),
        processing_class=processor,
    )
    batch = _batch(t, _rows(2))
    model.eval()
    with torch.no_grad():
        a = t.forward(model, batch)
        b = t.forward(model, {**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])})
    assert not torch.allclose(a, b)  # a forward without the images would ignore them


def test_ga_unlearns_through_the_vision_tower(world, tmp_path):
    model, processor = _fresh(world)
    forget = _rows(4)
    vision_before = {n: p.detach().clone() for n, p in model.named_parameters() if "vision_tower" in n}
    args = GAConfig(str(tmp_path), max_steps=4, learning_rate=5e-3, **COMMON)
    t = GATrainer(model=model, args=args, forget_dataset=forget, processing_class=processor)
    batch = _batch(t, forget)
    model.eval()
    with torch.no_grad():
        before = sequence_mean_prob(t.forward(model, batch), batch["labels"]).mean().item()
    t.train()
    model.eval()
    with torch.no_grad():
        after = sequence_mean_prob(t.forward(model, batch), batch["labels"]).mean().item()
    assert after < before
    moved = [
        n for n, p in model.named_parameters() if n in vision_before and not torch.equal(p, vision_before[n])
    ]
    assert moved  # gradients reached the image encoder: pixel_values went into the model


def test_npo_reference_sees_the_images_and_stays_the_original(world, tmp_path):
    model, processor = _fresh(world)
    forget, retain = _rows(4), _rows(4, offset=100)
    args = NPOConfig(str(tmp_path), max_steps=3, learning_rate=5e-3, **COMMON)
    t = NPOTrainer(
        model=model, args=args, forget_dataset=forget, retain_dataset=retain, processing_class=processor
    )
    batch = _batch(t, forget)
    model.eval()
    with torch.no_grad():
        original = t.forward(model, batch)
    t.train()
    ref = t.ref_forward(model, batch)
    assert torch.allclose(ref, original, atol=1e-6)
    no_image = t.ref_forward(model, {**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])})
    assert not torch.allclose(ref, no_image)
    model.eval()
    with torch.no_grad():
        after = sequence_mean_prob(t.forward(model, batch), batch["labels"]).mean()
    assert after < sequence_mean_prob(original, batch["labels"]).mean()


def test_vision_language_bad_input_is_named(world, tmp_path):
    model, processor = _fresh(world)
    args = GAConfig(str(tmp_path), **COMMON)
    with pytest.raises(ValueError, match="no image column 'image'"):
        GATrainer(
            model=model, args=args, forget_dataset=_rows().remove_columns("image"), processing_class=processor
        )
    with pytest.raises(ValueError, match="needs its processor"):
        GATrainer(model=model, args=args, forget_dataset=_rows(), processing_class=processor.tokenizer)
    with pytest.raises(ValueError, match="truncated away"):
        GATrainer(
            model=model,
            args=GAConfig(str(tmp_path), max_length=5, **COMMON),
            forget_dataset=_rows(),
            processing_class=processor,
        )


def test_an_image_the_processor_cannot_read_is_named(world, tmp_path):
    from datasets import Image as ImageFeature

    model, processor = _fresh(world)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = GAConfig(str(tmp_path), **COMMON)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is not a PNG")
    good = _rows(2)
    cases = {
        "a missing file": (["no/such/file.png"] * 2, "cannot read the image \\(str\\)"),
        "a text file": ([str(not_an_image)] * 2, "cannot read the image \\(str\\)"),
    }
    for paths, message in cases.values():
        bad = Dataset.from_dict({"image": paths, "question": good["question"], "answer": good["answer"]})
        with pytest.raises(ValueError, match=f"forget_dataset row 0: the processor {message}"):
            GATrainer(model=model, args=args, forget_dataset=bad, processing_class=processor)
    decoded = Dataset.from_dict(
        {"image": [str(not_an_image)] * 2, "question": good["question"], "answer": good["answer"]}
    ).cast_column("image", ImageFeature())
    with pytest.raises(ValueError, match="forget_dataset row 0: the image cannot be decoded"):
        GATrainer(model=model, args=args, forget_dataset=decoded, processing_class=processor)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
