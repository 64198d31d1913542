"""Task adapters: one per kind of model (causal LM, classifier, vision-language model).

Each owns detection, dataset preparation, collation, forward (every model input), per-sample loss and
card metadata, so trainers ask their adapter instead of branching on a task name.
"""

from __future__ import annotations

from .base import TaskAdapter, unwrap_peft
from .causal_lm import CausalLMTask, check_vocabulary
from .classification import ClassificationTask
from .vision_language import VisionLanguageCollator, VisionLanguageTask, reference_lora_config

TASKS: dict[str, type[TaskAdapter]] = {
    t.name: t for t in (VisionLanguageTask, CausalLMTask, ClassificationTask)
}


def detect_task(model) -> type[TaskAdapter] | None:
    """The adapter class of a (PEFT-wrapped) transformers model, or None."""
    base = unwrap_peft(model)
    return next((t for t in TASKS.values() if t.matches(base)), None)


def task_for(model, supported=("causal_lm",), who: str = "this trainer") -> type[TaskAdapter]:
    """The adapter class of ``model`` if ``who`` supports it; ``TypeError`` naming the model class and
    what is needed otherwise."""
    from transformers import PreTrainedModel

    base = unwrap_peft(model)
    if not isinstance(base, PreTrainedModel):
        raise TypeError(f"expected a transformers PreTrainedModel, got {type(base).__name__}")
    task = detect_task(base)
    if task is None or task.name not in supported:
        wanted = " or ".join(TASKS[t].description for t in supported)
        kind = f" but {task.description.split(' (')[0]}" if task is not None else ""
        raise TypeError(f"{type(base).__name__} is not {wanted}{kind}; {who} needs {wanted}")
    return task


__all__ = [
    "TASKS",
    "CausalLMTask",
    "ClassificationTask",
    "TaskAdapter",
    "VisionLanguageCollator",
    "VisionLanguageTask",
    "check_vocabulary",
    "detect_task",
    "reference_lora_config",
    "task_for",
    "unwrap_peft",
]
