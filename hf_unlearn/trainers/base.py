"""The base every hf_unlearn trainer shares: ``UnlearnConfig`` and :class:`MethodTrainer`.

``MethodTrainer`` is a ``transformers.Trainer`` with what every method needs and nothing about data:
class metadata (``_name``, ``_paper``, ``_tag_names``) for the card and the CLI, the method's loss as
``(loss, {term: value})`` with each term logged, guards against non-finite losses, gradients and weights
(never written over a good checkpoint), and the model card (``save_model``/``push_to_hub``).

On it stand (one file each): :class:`~hf_unlearn.trainers.forget_retain.UnlearnTrainer`, the
forget/retain trainer of the fine-tuning methods (GA, GradDiff, NPO, IDK, FLAT, SalUn);
:class:`~hf_unlearn.trainers.one_shot.OneShotTrainer`, whose ``train()`` performs one edit (SSD,
IAU); and trainers without a forget set (continual tuning) can subclass ``MethodTrainer`` directly.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from ..model_cards import config_diff, is_secret_name
from ..tasks import detect_task, unwrap_peft


class NonFiniteLossError(FloatingPointError):
    """Raised when an unlearning loss or its gradients stop being finite (training diverged)."""


@dataclass
class UnlearnConfig(TrainingArguments):
    """``TrainingArguments`` plus the data and safety settings shared by all unlearning trainers."""

    max_length: int = field(default=256, metadata={"help": "Maximum tokens of prompt + answer."})
    question_column: str = field(default="question", metadata={"help": "Column holding the prompt/question."})
    answer_column: str = field(
        default="answer", metadata={"help": "Column holding the answer to forget or keep."}
    )
    label_column: str = field(
        default="labels",
        metadata={
            "help": "Classification only: the label column ('label' is accepted when 'labels' is absent)."
        },
    )
    image_column: str = field(
        default="image",
        metadata={"help": "Vision-language models only: the column holding each row's image."},
    )
    retain_weight: float = field(
        default=1.0, metadata={"help": "Weight of the retain loss, for methods that use a retain set."}
    )
    pd_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of SafeEraser's Prompt-Decouple term when a pd_dataset is given; None: the "
            "method's reference weight (0.5 for GA and GradDiff, 1.0 otherwise)."
        },
    )
    check_finite: bool = field(
        default=True,
        metadata={
            "help": "Stop with NonFiniteLossError (before the optimizer step) when the loss or a gradient is NaN/inf."
        },
    )
    # Trainer defaults that do not fit unlearning: the paired batches are built here, not from columns,
    # and the reference recipes (TOFU, FLAT, NPO) unlearn with a small learning rate.
    learning_rate: float = field(
        default=1e-5, metadata={"help": "Learning rate (TOFU/FLAT/NPO reference: 1e-5)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: batches are built by the trainer."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})

    def __getstate__(self):
        """Pickled (``training_args.bin`` in every checkpoint and Hub push) without ``hub_token``."""
        return {k: None if is_secret_name(k) else v for k, v in self.__dict__.items()}

    def __post_init__(self):
        super().__post_init__()
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if self.retain_weight < 0 or not math.isfinite(self.retain_weight):
            raise ValueError(f"retain_weight must be a finite number >= 0, got {self.retain_weight}")
        if self.pd_weight is not None and not (self.pd_weight >= 0 and math.isfinite(self.pd_weight)):
            raise ValueError(f"pd_weight must be a finite number >= 0, got {self.pd_weight}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")

    # ----------------------------------------------------------------------------------- loss


class MethodTrainer(Trainer):
    """``Trainer`` + class metadata, logged loss terms, finite-value guards and the unlearning card.

    Subclasses set ``_name``, ``_paper``, ``_tag_names`` and ``config_class`` and implement
    :meth:`unlearning_loss`.
    """

    _name: str = ""
    _paper = None
    _tag_names: list[str] = []
    config_class = UnlearnConfig
    one_shot: bool = False  # SSD / IAU: train() edits the weights once, no optimizer loop
    _card_kind = "trainer"  # the model-card template (hf_unlearn.model_cards.CARD_TEMPLATES)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # the loss is computed here, not by the model
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.unlearning_metrics: dict[str, dict[str, float]] = {}
        model = unwrap_peft(self.accelerator.unwrap_model(self.model))
        if hasattr(model, "add_model_tags"):  # tags of the Hub repo a later push_to_hub creates (as TRL)
            model.add_model_tags(["hf_unlearn", "unlearning", *self._tag_names])

    @classmethod
    def checked_args(cls, args):
        """``args``, or the default config of the method; ``TypeError`` for a config of another kind."""
        if args is None:
            args = cls.config_class(output_dir=f"{cls._name or 'unlearn'}-unlearned")
        if not isinstance(args, cls.config_class):
            raise TypeError(
                f"{cls.__name__} needs args of type {cls.config_class.__name__}, got {type(args).__name__}"
            )
        return args

    # ----------------------------------------------------------------------------------- loss
    def unlearning_loss(self, model, inputs: dict[str, dict[str, torch.Tensor]]) -> tuple[torch.Tensor, dict]:
        """Return (loss, {name: detached scalar to log}). Implemented by each method."""
        raise NotImplementedError

    def composed_loss(self, model, inputs) -> tuple[torch.Tensor, dict]:
        """The method's loss plus any composable terms (SafeEraser's PD in the forget/retain trainers)."""
        return self.unlearning_loss(model, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, logs = self.composed_loss(model, inputs)
        for k, v in logs.items():
            self._metrics[k].append(float(v))
        if self.args.check_finite and not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{type(self).__name__}: the unlearning loss is {loss.item()} at step {self.state.global_step} "
                f"(terms: { {k: float(v) for k, v in logs.items()} }); no optimizer step was taken on it. "
                f"{self._where_is_the_last_finite_state(model)} Lower the learning rate or check the data."
            )
        return (loss, None) if return_outputs else loss

    def _where_is_the_last_finite_state(self, model) -> str:
        """A true sentence saying where the last finite weights are: in memory, or in a checkpoint."""
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if not bad:
            return "The model in memory still holds finite weights (the last finite state)."
        from transformers.trainer_utils import get_last_checkpoint

        folder = Path(self.args.output_dir)
        last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
        where = f"the last checkpoint, {last}" if last else "no checkpoint (none was saved)"
        return (
            f"The model's weights are already NaN/inf (e.g. {bad[0]}: an earlier optimizer step diverged); "
            f"the last finite state is in {where}."
        )

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.args.check_finite and not _gradients_look_finite(model):
            bad = [
                n
                for n, p in model.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()
            ]
            if bad:
                model.zero_grad(set_to_none=True)
                raise NonFiniteLossError(
                    f"{type(self).__name__}: non-finite gradients at step {self.state.global_step} in {bad[:3]}"
                    f"{' ...' if len(bad) > 3 else ''}; no optimizer step was taken on them. "
                    f"{self._where_is_the_last_finite_state(model)} Lower the learning rate."
                )
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metrics:  # a training log: add the mean of each loss term
            for k, vals in self._metrics.items():
                mean = torch.tensor(sum(vals) / len(vals), device=self.args.device)
                logs[k] = round(self.accelerator.reduce(mean, reduction="mean").item(), 6)
            self._metrics.clear()
        super().log(logs, start_time)

    # --------------------------------------------------------------------------------- saving
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        check_output_dir(self.model, output_dir or self.args.output_dir)
        check_finite_parameters(self.model, "saving the model")
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.create_model_card(output_dir=output_dir)

    def _save_checkpoint(self, model, trial) -> None:
        check_finite_parameters(model, f"saving checkpoint-{self.state.global_step}")
        super()._save_checkpoint(model, trial)

    def create_model_card(
        self,
        model_name: str | None = None,
        tags=None,
        output_dir: str | None = None,
        license: str | None = None,
        finetuned_from: str | None = None,
        dataset_tags: str | list[str] | None = None,
        language: str | list[str] | None = None,
        **kwargs,
    ):
        """Write the unlearning model card (README.md) into ``output_dir`` (default ``args.output_dir``).

        ``save_model()`` and ``push_to_hub()`` call this; the metrics given to :meth:`record_metrics` are
        in it. ``license`` (default: the base model's license when its card is at hand, else omitted),
        ``finetuned_from`` (the base model's Hub id, default ``config._name_or_path``), ``dataset_tags``
        (Hub dataset ids added to those of Hub-loaded forget/retain sets) and ``language`` are card
        metadata, as in ``Trainer.create_model_card``; ``push_to_hub(license=...)`` passes them here. A
        value given once is kept for later cards of this trainer (``save_model``, ``record_metrics``).
        """
        if not self.is_world_process_zero():
            return
        from ..model_cards import build_model_card, dataset_fingerprint, dataset_source

        given = {
            "model_name": model_name,
            "tags": tags,
            "license": license,
            "finetuned_from": finetuned_from,
            "dataset_tags": dataset_tags,
            "language": language,
        }
        remembered = getattr(self, "_card_options", {})
        opts = {k: v if v is not None else remembered.get(k) for k, v in given.items()}
        base = self.accelerator.unwrap_model(self.model)
        plain = _base_model(base)
        base_name = opts["finetuned_from"] or getattr(getattr(plain, "config", None), "_name_or_path", None)
        pipeline_tag, auto_class = self.card_task(base)
        forget_raw, retain_raw = getattr(self, "forget_raw", None), getattr(self, "retain_raw", None)
        forget_src = dataset_source(forget_raw) if forget_raw is not None else None
        retain_src = dataset_source(retain_raw) if retain_raw is not None else None
        extra = opts["dataset_tags"]
        datasets = [s["hub_id"] for s in (forget_src, retain_src) if s and s.get("hub_id")]
        datasets += [extra] if isinstance(extra, str) else list(extra or [])
        tags = opts["tags"]
        # one-shot methods (SSD, IAU: `one_shot`, no per-batch loss) edit the weights: no training steps
        edit = getattr(self, "one_shot", False) or type(self).unlearning_loss is MethodTrainer.unlearning_loss
        kind = "edit" if edit else "fine-tune"
        card = build_model_card(
            method_id=self._name,
            method_name=type(self).__name__.removesuffix("Trainer"),
            paper=self._paper,
            base_model=base_name or None,
            base_architecture=type(plain).__name__,
            config=config_diff(self.args),
            forget=dataset_fingerprint(forget_raw) if forget_raw is not None else None,
            retain=dataset_fingerprint(retain_raw) if retain_raw is not None else None,
            forget_source=forget_src,
            retain_source=retain_src,
            datasets=datasets,
            license=opts["license"],
            language=opts["language"],
            metrics=self.unlearning_metrics or None,
            model_name=opts["model_name"] or (self.args.hub_model_id or Path(self.args.output_dir).name),
            repo_id=self.args.hub_model_id,
            extra_tags=[*(self._tag_names or []), *([tags] if isinstance(tags, str) else (tags or []))],
            notes=self.card_notes(),
            pipeline_tag=pipeline_tag,
            auto_class=auto_class,
            method_kind=kind,
            card_kind=self._card_kind,
        )
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        card.save(out / "README.md")
        self._card_options = {k: v for k, v in opts.items() if v is not None}
        if out.resolve() == Path(self.args.output_dir).resolve():
            self._card_written = True  # record_metrics() refreshes this card

    def card_task(self, model) -> tuple[str, str]:
        """(pipeline_tag, auto class) of the card: the task adapter's (text generation if unknown)."""
        adapter = getattr(self, "adapter", None) or detect_task(model)
        return (
            (adapter.pipeline_tag, adapter.auto_class)
            if adapter
            else ("text-generation", "AutoModelForCausalLM")
        )

    def card_notes(self) -> str | None:
        """Method-specific Markdown for the card (SSD's dampening counts, SalUn's mask); default none."""
        return None

    def record_metrics(self, stage: str, metrics: dict) -> None:
        """Put evaluation results on the model card: ``stage`` is 'before', 'after' or 'retain_model'.

        ``metrics`` is an evaluation result as it is: ``evaluate_tofu(...)`` (nested per split: recorded
        as ``forget/probability``, ``retain/truth_ratio``, ..., ``forget_quality``), ``evaluate_unlearning(...)``
        (``UA``, ``RA``, ``TA``, ``MIA``, ...) or any dict of numbers, possibly nested; numpy/torch scalars
        are converted, per-sample lists skipped (:func:`hf_unlearn.model_cards.flatten_metrics`). Values
        add to (and overwrite) those already recorded for the stage. ``ValueError`` when no number is in
        ``metrics``. The next ``save_model()`` / ``push_to_hub()`` writes them into the card; a card this
        trainer already wrote into ``args.output_dir`` is rewritten at once.
        """
        if stage not in ("before", "after", "retain_model"):
            raise ValueError(f"stage must be 'before', 'after' or 'retain_model', got {stage!r}")
        from ..model_cards import flatten_metrics

        values = flatten_metrics(metrics, what=f"record_metrics({stage!r}, ...)")
        self.unlearning_metrics.setdefault(stage, {}).update(values)
        if getattr(self, "_card_written", False):
            self.create_model_card()


# -------------------------------------------------------------------------------------- checks
def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


_base_model = unwrap_peft


def _gradients_look_finite(model) -> bool:
    """One reduction and one host sync for all gradients: their total norm is finite. (A finite norm
    means every gradient is finite; an overflowing norm is followed by the per-tensor check.)"""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return True
    norms = torch.stack([torch.linalg.vector_norm(g.detach(), dtype=torch.float32) for g in grads])
    return bool(torch.isfinite(torch.linalg.vector_norm(norms)))


def check_finite_parameters(model, action: str) -> None:
    """Raise ``NonFiniteLossError`` instead of writing NaN/inf weights over a good checkpoint."""
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteLossError(
            f"refusing {action}: parameters {bad[:3]}{' ...' if len(bad) > 3 else ''} hold NaN/inf "
            "(training diverged); earlier checkpoints are left untouched"
        )


def check_output_dir(model, output_dir: str | os.PathLike | None) -> None:
    """Refuse to write into the folder the input model was loaded from (it would be overwritten)."""
    if output_dir is None:
        return
    base = model.get_base_model() if is_peft_model(model) else model
    source = getattr(getattr(base, "config", None), "_name_or_path", "") or ""
    if source and Path(source).is_dir() and Path(source).resolve() == Path(output_dir).resolve():
        raise ValueError(
            f"output_dir {output_dir!r} is the folder the input model was loaded from; "
            "choose another output_dir so the original weights are not overwritten"
        )
