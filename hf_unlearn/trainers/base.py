"""The base of every fine-tuning unlearning method: ``UnlearnConfig`` and ``UnlearnTrainer``.

``UnlearnTrainer`` is a ``transformers.Trainer`` whose train set is built from a *forget* dataset
and an optional *retain* dataset. For a causal LM (task ``"causal_lm"``) both are ``datasets.Dataset``
of question/answer rows, or already tokenized rows with ``input_ids``/``labels``; for an image or text
classifier (task ``"classification"``, methods that list it in ``supported_tasks``) they are rows of
model inputs (``pixel_values`` or ``input_ids``) and a label. Each training example is a dict of aligned *views*,
``{"forget": row_i, "retain": row_j, ...}``; methods add their own views (FLAT's template answers,
IDK's refusals) and implement :meth:`UnlearnTrainer.unlearning_loss` on the collated batch
``{"forget": {"input_ids", "attention_mask", "labels"}, "retain": {...}}``.

Everything else is ``Trainer``: ``train()`` (also under ``torchrun``/accelerate), checkpoints and
resume, ``save_model()``, ``push_to_hub()`` (which writes an unlearning model card).
"""

from __future__ import annotations

import copy
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel, Trainer, TrainingArguments

from ..data.classification import ClassificationCollator, prepare_classification_dataset
from ..data.qa import QACollator, tokenize_qa_dataset
from ..data.templates import sample_templates
from ..losses.common import per_sample_loss, sequence_nll
from ..model_cards import config_diff, is_secret_name


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
    retain_weight: float = field(
        default=1.0, metadata={"help": "Weight of the retain loss, for methods that use a retain set."}
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


@dataclass
class TemplateAnswerArgs:
    """Where template answers y_e come from (FLAT's "good" answers, IDK's refusals)."""

    template_column: str | None = field(
        default=None,
        metadata={
            "help": "Forget-dataset column holding the template answer; default: a refusal sampled by seed."
        },
    )
    templates: list[str] | None = field(
        default=None, metadata={"help": "Template answers to sample from (default: the built-in refusals)."}
    )


class PairedViews(torch.utils.data.Dataset):
    """Index i → {view: row}. Views with ``len == len(primary)`` are aligned with it by index;
    others (the retain set) are drawn through a seeded permutation that changes with the epoch.
    """

    def __init__(self, views: dict[str, Dataset], primary: str = "forget", seed: int = 42):
        self.views, self.primary, self.seed, self.epoch = views, primary, seed, 0
        self.n = len(views[primary])
        self._maps: dict[str, np.ndarray] = {}
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Called by accelerate's data loader at each epoch (also when resuming)."""
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        for name, ds in self.views.items():
            if name != self.primary and len(ds) != self.n:
                reps = -(-self.n // len(ds))
                self._maps[name] = np.concatenate([rng.permutation(len(ds)) for _ in range(reps)])[: self.n]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, dict]:
        return {
            name: ds[int(self._maps[name][i]) if name in self._maps else i] for name, ds in self.views.items()
        }


@dataclass
class PairedCollator:
    """Pads each view of a list of :class:`PairedViews` items separately."""

    pad_token_id: int | None
    task: str = "causal_lm"

    def __call__(self, items: list[dict[str, dict]]) -> dict[str, dict[str, torch.Tensor]]:
        pad = self.view_collator()
        return {name: pad([it[name] for it in items]) for name in items[0]}

    def view_collator(self):
        """The collator of one view (QA rows or classification rows)."""
        if self.task == "classification":
            return ClassificationCollator(self.pad_token_id)
        return QACollator(self.pad_token_id)


class UnlearnTrainer(Trainer):
    """Base class: builds the paired forget/retain batches, logs each loss term, guards against
    divergence, and writes the unlearning model card. Subclasses set the class metadata and
    implement :meth:`unlearning_loss` (and :meth:`extra_views` to add aligned views).
    """

    _name: str = ""
    _paper = None
    _tag_names: list[str] = []
    config_class = UnlearnConfig
    supported_tasks: tuple[str, ...] = ("causal_lm",)  # and/or "classification"
    requires_retain: bool = False  # GradDiff / IDK need a retain set
    uses_retain: bool = True  # whether a given retain set is used at all
    needs_ref_model: bool = False  # NPO

    def __init__(
        self,
        model: PreTrainedModel | str,
        args: UnlearnConfig | None = None,
        forget_dataset: Dataset | None = None,
        retain_dataset: Dataset | None = None,
        processing_class=None,
        peft_config=None,
        ref_model: PreTrainedModel | None = None,
        callbacks=None,
        optimizers=(None, None),
        **kwargs,
    ):
        if args is None:
            args = self.config_class(output_dir=f"{self._name or 'unlearn'}-unlearned")
        if not isinstance(args, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs args of type {self.config_class.__name__}, got {type(args).__name__}"
            )
        if isinstance(model, str):
            model = self._load_model(model)
        self.task = model_task(model, self.supported_tasks, type(self).__name__)
        check_output_dir(model, args.output_dir)
        if self.task == "causal_lm" and processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required to format question/answer data")
        pad_id = getattr(processing_class, "pad_token_id", None)
        if self.task == "causal_lm" and pad_id is None:
            raise ValueError(
                "the tokenizer has no pad token; set one first, e.g. `tokenizer.pad_token = tokenizer.eos_token`"
            )
        if self.requires_retain and retain_dataset is None:
            raise ValueError(
                f"{type(self).__name__} needs a retain_dataset (the data whose knowledge must be kept)"
            )
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)

        self.forget_raw, self.retain_raw = forget_dataset, retain_dataset
        self.num_labels = num_model_labels(model) if self.task == "classification" else None
        views = self._build_views(forget_dataset, retain_dataset, processing_class, args)
        train = PairedViews(views, primary=next(iter(views)), seed=args.data_seed or args.seed)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=PairedCollator(pad_id, self.task),
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            **kwargs,
        )
        self.model_accepts_loss_kwargs = False  # the loss is computed here, not by the model
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.unlearning_metrics: dict[str, dict[str, float]] = {}
        self.ref_model = None
        if self.needs_ref_model:
            self.ref_model = self._make_ref_model(self.model, ref_model)

    # ----------------------------------------------------------------------------------- data
    def prepare_dataset(self, ds, name: str, tokenizer, args, answers=None) -> Dataset:
        """Check and encode one dataset: tokenized QA rows (causal LM) or classification rows."""
        if self.task == "classification":
            return prepare_classification_dataset(ds, name, self.num_labels, args.label_column)
        return tokenize_qa_dataset(
            ds, tokenizer, args.max_length, name, args.question_column, args.answer_column, answers
        )

    def _build_views(self, forget, retain, tokenizer, args) -> dict[str, Dataset]:
        def tok(ds, name, answers=None):
            return self.prepare_dataset(ds, name, tokenizer, args, answers)

        views = {"forget": tok(forget, "forget_dataset")}
        views.update(self.extra_views(forget, tok, args))
        if retain is not None and self.uses_retain:
            views["retain"] = tok(retain, "retain_dataset")
        return views

    def extra_views(self, forget: Dataset, tokenize, args) -> dict[str, Dataset]:
        """Further views aligned with the forget rows (default: none). ``tokenize(ds, name, answers)``."""
        return {}

    def template_answers(self, forget: Dataset, column: str | None, templates, seed: int) -> list[str]:
        """Template answers y_e for each forget row: a dataset column, or refusals sampled by seed."""
        if column is not None:
            if column not in forget.column_names:
                raise ValueError(
                    f"forget_dataset has no template column {column!r}; it has {forget.column_names}"
                )
            return list(forget[column])
        if "input_ids" in forget.column_names:
            raise ValueError("template answers need question/answer rows, not pre-tokenized input_ids")
        return sample_templates(len(forget), templates, seed)

    # ---------------------------------------------------------------------------------- model
    @staticmethod
    def _load_model(name_or_path: str) -> PreTrainedModel:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(name_or_path, use_safetensors=True)

    def _make_ref_model(self, model, ref_model):
        """A frozen reference: the adapter-disabled base for PEFT models, else one frozen copy."""
        if is_peft_model(model):
            return None  # use `with model.disable_adapter():`
        ref = ref_model if ref_model is not None else copy.deepcopy(self.accelerator.unwrap_model(model))
        ref.eval().requires_grad_(False)
        return self.accelerator.prepare_model(ref, evaluation_mode=True)

    def ref_forward(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the reference model on ``batch`` (no gradient)."""
        with torch.no_grad():
            if self.ref_model is not None:
                return self.ref_model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
            with self.accelerator.unwrap_model(model).disable_adapter():
                return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    @staticmethod
    def forward(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    @staticmethod
    def logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of any model on a collated view (every input but ``labels``)."""
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits

    def sample_losses(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample loss, (B,): cross-entropy for a classifier, mean answer-token NLL for a causal LM."""
        return per_sample_loss(self.logits(model, batch), batch["labels"])

    def rank_batches(self, dataset, batch_size: int, desc: str | None = None):
        """This process's share of ``dataset`` in fixed batches, for one-shot passes (importances, masks).

        Batches are consecutive rows ``[0:b], [b:2b], ...`` in dataset order; process r of W takes
        batches r, r+W, ... So the union over processes is the single-process batching, and sums over
        batches reduced across processes equal the single-process sums exactly. With ``desc``, the main
        process shows a progress bar (unless ``disable_tqdm``).
        """
        from tqdm.auto import tqdm

        n = len(dataset)
        batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        mine = batches[self.accelerator.process_index :: self.accelerator.num_processes]
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=mine, collate_fn=self.data_collator.view_collator()
        )
        quiet = desc is None or self.args.disable_tqdm or not self.is_local_process_zero()
        for batch in tqdm(loader, desc=desc, disable=quiet, leave=False):
            yield {k: v.to(self.args.device) for k, v in batch.items()}

    def mean_nll(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch mean of the per-sample mean answer-token NLL (the "NLL" of GA/GradDiff/NPO+RT/IDK)."""
        return sequence_nll(self.forward(model, batch), batch["labels"]).mean()

    # ----------------------------------------------------------------------------------- loss
    def unlearning_loss(self, model, inputs: dict[str, dict[str, torch.Tensor]]) -> tuple[torch.Tensor, dict]:
        """Return (loss, {name: detached scalar to log}). Implemented by each method."""
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, logs = self.unlearning_loss(model, inputs)
        for k, v in logs.items():
            self._metrics[k].append(float(v))
        if self.args.check_finite and not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{type(self).__name__}: the unlearning loss is {loss.item()} at step {self.state.global_step} "
                f"(terms: { {k: float(v) for k, v in logs.items()} }); no optimizer step was taken, so the model "
                "and saved checkpoints hold the last finite state. Lower the learning rate or check the data."
            )
        return (loss, None) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.args.check_finite:
            bad = [
                n
                for n, p in model.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()
            ]
            if bad:
                model.zero_grad(set_to_none=True)
                raise NonFiniteLossError(
                    f"{type(self).__name__}: non-finite gradients at step {self.state.global_step} in {bad[:3]}"
                    f"{' ...' if len(bad) > 3 else ''}; no optimizer step was taken. Lower the learning rate."
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
        self, model_name: str | None = None, tags=None, output_dir: str | None = None, **kwargs
    ):
        """Write the unlearning model card (README.md) into ``output_dir`` (default ``args.output_dir``)."""
        if not self.is_world_process_zero():
            return
        from ..model_cards import build_model_card, dataset_fingerprint

        base = self.accelerator.unwrap_model(self.model)
        base_name = getattr(getattr(base, "config", None), "_name_or_path", None) or None
        pipeline_tag, auto_class = card_task(base)
        card = build_model_card(
            method_id=self._name,
            method_name=type(self).__name__.removesuffix("Trainer"),
            paper=self._paper,
            base_model=base_name,
            config=config_diff(self.args),
            forget=dataset_fingerprint(self.forget_raw),
            retain=dataset_fingerprint(self.retain_raw) if self.retain_raw is not None else None,
            metrics=self.unlearning_metrics or None,
            model_name=model_name or (self.args.hub_model_id or Path(self.args.output_dir).name),
            repo_id=self.args.hub_model_id,
            extra_tags=[*(self._tag_names or []), *([tags] if isinstance(tags, str) else (tags or []))],
            notes=self.card_notes(),
            pipeline_tag=pipeline_tag,
            auto_class=auto_class,
        )
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        card.save(out / "README.md")

    def card_notes(self) -> str | None:
        """Method-specific Markdown for the card (SSD's dampening counts, SalUn's mask); default none."""
        return None

    def record_metrics(self, stage: str, metrics: dict[str, float]) -> None:
        """Store evaluation results for the card: stage is 'before', 'after' or 'retain_model'."""
        if stage not in ("before", "after", "retain_model"):
            raise ValueError(f"stage must be 'before', 'after' or 'retain_model', got {stage!r}")
        self.unlearning_metrics[stage] = {
            k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))
        }


# -------------------------------------------------------------------------------------- checks
def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _base_model(model):
    return model.get_base_model() if is_peft_model(model) else model


def model_task(model, supported: tuple[str, ...] = ("causal_lm",), who: str = "this trainer") -> str:
    """``"causal_lm"`` or ``"classification"`` for a (PEFT-wrapped) transformers model, checked against
    what the trainer supports; ``TypeError`` naming the model class otherwise."""
    base = _base_model(model)
    if not isinstance(base, PreTrainedModel):
        raise TypeError(f"expected a transformers PreTrainedModel, got {type(base).__name__}")
    from transformers.models.auto import modeling_auto as auto

    name = type(base).__name__
    classifiers = {
        *auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.values(),
        *auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values(),
    }
    if name in set(auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) or name.endswith("ForCausalLM"):
        task = "causal_lm"
    elif name in classifiers or name.endswith(("ForImageClassification", "ForSequenceClassification")):
        task = "classification"
    else:
        task = None
    if task not in supported:
        wanted = " or ".join(
            {
                "causal_lm": "a causal language model (AutoModelForCausalLM)",
                "classification": "an image/text classifier (AutoModelFor{Image,Sequence}Classification)",
            }[t]
            for t in supported
        )
        kind = {"causal_lm": "a causal language model", "classification": "a classifier"}.get(task, "")
        raise TypeError(f"{name} is not {wanted}{f' but {kind}' if kind else ''}; {who} needs {wanted}")
    return task


def num_model_labels(model) -> int:
    return int(_base_model(model).config.num_labels)


def card_task(model) -> tuple[str, str]:
    """(pipeline_tag, auto class) of the model card."""
    name = type(_base_model(model)).__name__
    if name.endswith("ForImageClassification"):
        return "image-classification", "AutoModelForImageClassification"
    if name.endswith("ForSequenceClassification"):
        return "text-classification", "AutoModelForSequenceClassification"
    return "text-generation", "AutoModelForCausalLM"


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
