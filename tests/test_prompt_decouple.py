"""SafeEraser's Prompt-Decouple term: the loss by hand, the reference code's combination with GA / GradDiff /
IDK on a tiny LLaVA (weights included, the images reaching the model), and bad input."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from hf_unlearn import (
    GAConfig,
    GATrainer,
    GradDiffConfig,
    GradDiffTrainer,
    IDKConfig,
    IDKTrainer,
    KLConfig,
    KLTrainer,
    NPOConfig,
    NPOTrainer,
)
from hf_unlearn.losses import prompt_decouple_loss, retain_kl
from hf_unlearn.tiny import tiny_llava

COMMON = dict(
    report_to=[], use_cpu=True, disable_tqdm=True, per_device_train_batch_size=2, save_strategy="no"
)
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def test_prompt_decouple_loss_by_hand():
    # one row, vocabulary 2; position t predicts token t+1; labels: prompt -100, answer tokens 1 then 0
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    labels = torch.tensor([[-100, -100, 1, 0]])
    # answer token 1 from position 1 (logits [2, 0]): −log(e^0 / (e^2 + 1)); token 0 from position 2 ([0, 1])
    expected = (math.log(math.exp(2) + 1) + math.log(1 + math.e)) / 2
    assert prompt_decouple_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # a token mean over the batch, not a mean of per-row means: rows with 2 and 1 answer tokens
    two = torch.cat([logits, logits])
    labels2 = torch.tensor([[-100, -100, 1, 0], [-100, -100, -100, 0]])
    one_token = math.log(1 + math.e)
    assert prompt_decouple_loss(two, labels2).item() == pytest.approx(
        (2 * expected + one_token) / 3, rel=1e-6
    )


def _image(colour, seed):
    img = np.random.default_rng(seed).integers(0, 40, (16, 16, 3)).astype("uint8")
    img[3:13, 3:13] = COLOURS[colour]
    return Image.fromarray(img)


def _rows(colours, answer, offset=0):
    q = "What is in the image?"
    return Dataset.from_list(
        [
            {"image": _image(c, i + offset), "question": q, "answer": answer.format(c)}
            for i, c in enumerate(colours)
        ]
    )


@pytest.fixture(scope="module")
def world():
    texts = [f"What is in the image? A {c} square. I cannot help with that." for c in COLOURS] + [
        "Question: Answer:"
    ]
    return tiny_llava(texts)


def _batches(trainer):
    rows = [trainer.train_dataset[i] for i in range(2)]
    return trainer.data_collator(rows)


@pytest.mark.parametrize(
    "cls,config,weight",
    [
        (GATrainer, GAConfig, 0.5),
        (GradDiffTrainer, GradDiffConfig, 0.5),
        (KLTrainer, KLConfig, 1.0),
        (IDKTrainer, IDKConfig, 1.0),
    ],
)
def test_pd_combination_equals_the_reference_code(world, tmp_path, cls, config, weight):
    model, processor = copy.deepcopy(world[0]), world[1]
    forget = _rows(["red", "red"], "A {} square.")
    pd = _rows(["blue", "green"], "A {} square.", offset=10)  # benign images, same question, normal answers
    retain = _rows(["yellow", "green"], "A {} square.", offset=20)
    kwargs = {} if cls is GATrainer else {"retain_dataset": retain}
    t = cls(model=model, args=config(str(tmp_path), **COMMON), forget_dataset=forget, pd_dataset=pd,
            processing_class=processor, **kwargs)  # fmt: skip
    assert t.pd_weight == weight
    batch = _batches(t)
    model.eval()
    with torch.no_grad():
        loss, logs = t.composed_loss(model, batch)
        base, _ = t.unlearning_loss(model, batch)
        hf_pd = model(**batch["pd"]).loss  # the reference: outputs.loss of the PD batch
        no_image = t.composed_loss(
            model,
            {**batch, "pd": {**batch["pd"], "pixel_values": torch.zeros_like(batch["pd"]["pixel_values"])}},
        )[1]
    assert loss.item() == pytest.approx(base.item() + weight * hf_pd.item(), rel=1e-5)
    assert logs["pd_nll"].item() == pytest.approx(hf_pd.item(), rel=1e-5)
    assert no_image["pd_nll"].item() != pytest.approx(logs["pd_nll"].item(), rel=1e-6)  # the images count
    custom = cls(model=model, args=config(str(tmp_path), pd_weight=2.0, **COMMON), forget_dataset=forget,
                 pd_dataset=pd, processing_class=processor, **kwargs)  # fmt: skip
    with torch.no_grad():
        assert custom.composed_loss(model, batch)[0].item() == pytest.approx(
            base.item() + 2.0 * hf_pd.item(), rel=1e-5
        )


def test_pd_trains_and_logs_its_term(world, tmp_path):
    model, processor = copy.deepcopy(world[0]), world[1]
    forget, pd = _rows(["red"] * 4, "A {} square."), _rows(["blue"] * 4, "A {} square.", offset=10)
    t = GATrainer(model=model, args=GAConfig(str(tmp_path), max_steps=2, logging_steps=1, **COMMON),
                  forget_dataset=forget, pd_dataset=pd, processing_class=processor)  # fmt: skip
    t.train()
    assert any("pd_nll" in h for h in t.state.log_history)


def test_pd_bad_input(world, tmp_path):
    model, processor = copy.deepcopy(world[0]), world[1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    forget = _rows(["red"] * 3, "A {} square.")
    with pytest.raises(ValueError, match="aligned with the forget rows"):
        GATrainer(model=model, args=GAConfig(str(tmp_path), **COMMON), forget_dataset=forget,
                  pd_dataset=_rows(["blue"] * 2, "A {} square."), processing_class=processor)  # fmt: skip
    with pytest.raises(ValueError, match="pd_weight"):
        GAConfig(str(tmp_path), pd_weight=-1.0, **COMMON)
    no_images = Dataset.from_list([{"question": "What is in the image?", "answer": "A blue square."}] * 3)
    with pytest.raises(ValueError, match="image column"):
        GATrainer(model=model, args=GAConfig(str(tmp_path), **COMMON), forget_dataset=forget,
                  pd_dataset=no_images, processing_class=processor)  # fmt: skip
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_graddiff_with_pd_halves_the_retain_term_as_the_reference(world, tmp_path):
    model, processor = copy.deepcopy(world[0]), world[1]
    forget, pd = _rows(["red", "red"], "A {} square."), _rows(["blue", "green"], "A {} square.", offset=10)
    retain = _rows(["yellow", "green"], "A {} square.", offset=20)
    t = GradDiffTrainer(model=model, args=GradDiffConfig(str(tmp_path), **COMMON), forget_dataset=forget,
                        retain_dataset=retain, pd_dataset=pd, processing_class=processor)  # fmt: skip
    batch = _batches(t)
    model.eval()
    with torch.no_grad():
        loss = t.composed_loss(model, batch)[0].item()
        nll_f, nll_r = t.mean_nll(model, batch["forget"]).item(), t.mean_nll(model, batch["retain"]).item()
        hf_pd = model(**batch["pd"]).loss.item()
    # SafeEraser's gdpd: −1.0·NLL(D_f) + 0.5·NLL(D_r) + 0.5·L_PD
    assert loss == pytest.approx(-nll_f + 0.5 * nll_r + 0.5 * hf_pd, rel=1e-5)


def test_retain_kl_by_hand():
    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]])
    ref = torch.tensor([[[0.0, 0.0], [0.0, 2.0], [3.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 0]])  # positions 0 and 1 predict answer tokens

    def kl(p_logits, q_logits):  # KL(softmax(q) ‖ softmax(p)) by hand
        p = [math.exp(x) / sum(math.exp(y) for y in p_logits) for x in p_logits]
        q = [math.exp(x) / sum(math.exp(y) for y in q_logits) for x in q_logits]
        return sum(qi * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))

    per = [kl(logits[0, t].tolist(), ref[0, t].tolist()) for t in range(3)]
    assert retain_kl(logits, ref, labels).item() == pytest.approx((per[0] + per[1]) / 2, rel=1e-6)
    assert retain_kl(logits, ref, labels, "reference").item() == pytest.approx(sum(per) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        retain_kl(logits, ref, labels, "mean")


def test_kl_trainer_moves_the_forget_and_holds_the_retain_reference(world, tmp_path):
    model, processor = copy.deepcopy(world[0]), world[1]
    forget, retain = _rows(["red"] * 4, "A {} square."), _rows(["blue"] * 4, "A {} square.", offset=20)
    t = KLTrainer(model=model, args=KLConfig(str(tmp_path), max_steps=2, learning_rate=1e-2, logging_steps=1, **COMMON),
                  forget_dataset=forget, retain_dataset=retain, processing_class=processor)  # fmt: skip
    batch = _batches(t)
    model.eval()
    with torch.no_grad():
        assert t.unlearning_loss(model, batch)[1]["retain_kl"].item() == pytest.approx(
            0.0, abs=1e-6
        )  # θ = θ_orig
    t.train()
    assert any("retain_kl" in h for h in t.state.log_history)
    with pytest.raises(ValueError, match="kl_reduction"):
        KLConfig(str(tmp_path), kl_reduction="sum", **COMMON)


def test_card_says_pd_was_used_and_one_shot_methods_refuse_it(world, tmp_path):
    from hf_unlearn import SSDConfig, SSDTrainer

    model, processor = copy.deepcopy(world[0]), world[1]
    forget, pd = _rows(["red"] * 2, "A {} square."), _rows(["blue"] * 2, "A {} square.", offset=10)
    t = GATrainer(model=model, args=GAConfig(str(tmp_path), **COMMON), forget_dataset=forget, pd_dataset=pd,
                  processing_class=processor)  # fmt: skip
    assert "Prompt-Decouple" in t.card_notes() and "weight 0.5" in t.card_notes()
    from utils import demo_world

    data, tok, lm = demo_world()
    with pytest.raises(ValueError, match="without a training loss to add the Prompt-Decouple term"):
        SSDTrainer(model=lm, args=SSDConfig(str(tmp_path), **COMMON), forget_dataset=data["forget"],
                   pd_dataset=data["forget"], processing_class=tok)  # fmt: skip


@pytest.mark.parametrize("cls,config", [(GATrainer, GAConfig), (GradDiffTrainer, GradDiffConfig),
                                        (KLTrainer, KLConfig), (IDKTrainer, IDKConfig), (NPOTrainer, NPOConfig)])  # fmt: skip
def test_pixel_values_reach_the_model_in_every_view_of_every_trainer(world, tmp_path, cls, config):
    model, processor = copy.deepcopy(world[0]), world[1]
    forget = _rows(["red", "red"], "A {} square.")
    pd = _rows(["blue", "green"], "A {} square.", offset=10)
    retain = _rows(["yellow", "green"], "A {} square.", offset=20)
    kwargs = {} if cls is GATrainer else {"retain_dataset": retain}
    t = cls(model=model, args=config(str(tmp_path), **COMMON), forget_dataset=forget, pd_dataset=pd,
            processing_class=processor, **kwargs)  # fmt: skip
    batch = _batches(t)
    views = {GATrainer: ["forget", "pd"], IDKTrainer: ["idk", "retain", "pd"]}.get(
        cls, ["forget", "retain", "pd"]
    )
    assert all("pixel_values" in batch[v] for v in views)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        for p in model.parameters():  # move the model off its reference copy, so that KL terms are not 0
            p.add_(0.05 * torch.randn_like(p))
        loss = t.composed_loss(model, batch)[0]
        for view in views:  # blanking one view's images changes the loss: no view drops them
            blank = {**batch[view], "pixel_values": torch.zeros_like(batch[view]["pixel_values"])}
            assert t.composed_loss(model, {**batch, view: blank})[0].item() != pytest.approx(
                loss.item(), rel=1e-6
            ), view


@pytest.mark.parametrize("cls,config", [(KLTrainer, KLConfig), (IDKTrainer, IDKConfig)])
def test_reference_lora_config_trains_lora_and_projector_only(world, tmp_path, cls, config):
    from hf_unlearn.tasks import reference_lora_config

    model, processor = copy.deepcopy(world[0]), world[1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    forget = _rows(["red"] * 4, "A {} square.")
    pd = _rows(["blue"] * 4, "A {} square.", offset=10)
    retain = _rows(["yellow"] * 4, "A {} square.", offset=20)
    t = cls(model=model, args=config(str(tmp_path), max_steps=3, learning_rate=1e-2, **COMMON),
            forget_dataset=forget, retain_dataset=retain, pd_dataset=pd, processing_class=processor,
            peft_config=reference_lora_config(r=4, alpha=8, dropout=0.0))  # fmt: skip
    trainable = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "multi_modal_projector" in n for n in trainable)
    assert any("language_model" in n and "lora_A" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    t.train()
    merged = t.model.merge_and_unload()
    after = dict(merged.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert any("multi_modal_projector" in n for n in changed)  # the projector is trained in full
    assert any("language_model" in n and "q_proj" in n for n in changed)  # the LoRA moved the LM
    assert not any("vision_tower" in n or "embed_tokens" in n for n in changed)  # frozen
