"""The base of retrain-free, one-shot methods (SSD, IAU): :class:`OneShotTrainer`.

Its ``train()`` takes no optimizer loop: it checks that the model is finite, calls the method's
:meth:`OneShotTrainer.edit` (which computes the whole edit before it writes any weight, and leaves the
model as it was when it refuses), logs the edit's figures with ``train_runtime`` and returns a
``TrainOutput`` as ``Trainer.train()`` does. Data, task adapters, PEFT handling and the card come from
:class:`~hf_unlearn.trainers.forget_retain.UnlearnTrainer`; there is nothing to resume.
"""

from __future__ import annotations

import time

from transformers.trainer_utils import TrainOutput

from .base import check_finite_parameters
from .forget_retain import UnlearnTrainer


class OneShotTrainer(UnlearnTrainer):
    """A forget/retain trainer whose ``train()`` applies :meth:`edit` once."""

    one_shot = True

    def edit(self) -> tuple[dict[str, float], float]:
        """Apply the edit in place: return (figures to log, training_loss). All-or-nothing: on any error
        the weights must be as before. May set ``self.state.global_step`` (IAU: its step count)."""
        raise NotImplementedError

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Apply the one-shot edit (:meth:`edit`). ``resume_from_checkpoint`` is accepted for ``Trainer``
        compatibility and ignored: a one-shot edit has no intermediate state to resume."""
        start = time.perf_counter()
        check_finite_parameters(self.model, type(self).__name__.removesuffix("Trainer"))
        self.state.global_step = 0
        figures, training_loss = self.edit()
        metrics = {"train_runtime": round(time.perf_counter() - start, 4), **figures}
        self.edit_metrics = dict(metrics)
        self.log(dict(metrics))
        return TrainOutput(global_step=self.state.global_step, training_loss=training_loss, metrics=metrics)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model``; under DeepSpeed, where a one-shot edit never wraps the model in an engine
        (no ``accelerator.prepare``: ``self.deepspeed`` is None) and its weights are whole, the plain
        ``save_pretrained`` path, on the main process."""
        whole = not any(hasattr(p, "ds_id") for p in self.model.parameters())
        if not (self.is_deepspeed_enabled and self.deepspeed is None and whole):
            return super().save_model(output_dir, _internal_call)
        self.is_deepspeed_enabled = False  # Trainer.save_model's DeepSpeed branch needs the engine
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            self.is_deepspeed_enabled = True
