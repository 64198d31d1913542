"""Task adapters: detection and the error for a model of the wrong kind."""

import pytest
from classif_utils import tiny_resnet
from transformers import LlamaConfig, LlamaModel
from utils import demo_world

from hf_unlearn import GAConfig, GATrainer, NPOConfig, NPOTrainer
from hf_unlearn.tasks import CausalLMTask, ClassificationTask, VisionLanguageTask, detect_task, task_for
from hf_unlearn.tiny import tiny_llava


def test_each_kind_of_model_gets_its_adapter():
    _, _, llama = demo_world()
    assert detect_task(llama) is CausalLMTask
    assert detect_task(tiny_resnet()) is ClassificationTask
    assert detect_task(tiny_llava(["a b c"])[0]) is VisionLanguageTask
    assert (
        detect_task(LlamaModel(LlamaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2)))
        is None
    )


def test_a_model_of_the_wrong_kind_is_named_with_what_is_needed(tmp_path):
    headless = LlamaModel(
        LlamaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, vocab_size=32)
    )
    with pytest.raises(TypeError, match=r"LlamaModel is not a causal language model .*GATrainer needs"):
        task_for(headless, ("causal_lm",), "GATrainer")
    with pytest.raises(
        TypeError, match=r"ResNetForImageClassification is not .* but an image/text classifier"
    ):
        NPOTrainer(model=tiny_resnet(), args=NPOConfig(str(tmp_path), report_to=[], use_cpu=True))
    with pytest.raises(TypeError, match="expected a transformers PreTrainedModel"):
        GATrainer(model=object(), args=GAConfig(str(tmp_path), report_to=[], use_cpu=True))
