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
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedModel, Trainer, TrainingArguments

from ..data.classification import prepare_classification_dataset
from ..data.paired import PairedCollator, PairedViews, PairingEpochCallback
from ..data.qa import tokenize_qa_dataset
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
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")


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
    one_shot: bool = False  # SSD / IAU: train() edits the weights once, no optimizer loop

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
        if self.task == "causal_lm":
            check_vocabulary(model, processing_class)

        # Every check on the caller's inputs runs before the model is wrapped: a refused call must leave
        # the caller's model as it was (get_peft_model injects LoRA layers into it in place).
        self.forget_raw, self.retain_raw = forget_dataset, retain_dataset
        self.num_labels = num_model_labels(model) if self.task == "classification" else None
        views = self._build_views(forget_dataset, retain_dataset, processing_class, args)
        self.check_inputs(model, args, peft_config)
        train = PairedViews(views, primary=next(iter(views)), seed=args.data_seed or args.seed)
        injected = peft_config is not None
        if injected:
            from peft import get_peft_model

            trainable = {n: p.requires_grad for n, p in model.named_parameters()}
            model = get_peft_model(model, peft_config)
        try:
            super().__init__(
                model=model,
                args=args,
                train_dataset=train,
                data_collator=PairedCollator(pad_id, self.task),
                processing_class=processing_class,
                callbacks=[*(callbacks or []), PairingEpochCallback(train)],
                optimizers=optimizers,
                **kwargs,
            )
            self.model_accepts_loss_kwargs = False  # the loss is computed here, not by the model
            self._metrics: dict[str, list[float]] = defaultdict(list)
            self.unlearning_metrics: dict[str, dict[str, float]] = {}
            self.ref_model, self.ref_adapter = None, None
            if self.needs_ref_model:
                self._make_reference(model, ref_model, adapter_is_new=injected)
            self.setup()
        except BaseException:
            if injected:  # take the injected LoRA layers out again: the caller's model is as it was
                for n, p in model.unload().named_parameters():
                    p.requires_grad_(trainable[n])
            raise

    def check_inputs(self, model, args, peft_config) -> None:
        """Method-specific checks of the caller's inputs, run before anything is modified (default: none).

        ``model`` is the caller's model, not yet wrapped by ``peft_config``; ``self.task`` and the
        prepared views (``self.forget_raw``, ...) are available.
        """

    def setup(self) -> None:
        """Method-specific set-up once ``Trainer.__init__`` has run (default: none). If it raises, a LoRA
        adapter injected from ``peft_config`` is taken out again, so the caller's model is unchanged."""

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

    def _make_reference(self, model, ref_model, adapter_is_new: bool) -> None:
        """The frozen reference π_ref: the model as it was before unlearning.

        - ``ref_model`` given: that model, frozen (also when ``model`` is a PEFT model).
        - a LoRA adapter injected here from ``peft_config`` (still the identity): the adapter-disabled
          base, no weight copy.
        - a ``PeftModel`` passed in (its adapter may be trained already, so the base model is *not* the
          model before unlearning): a frozen copy of the active adapter, ``REF_ADAPTER``, swapped in for
          the reference pass (TRL's ``ref_adapter_name``), unless every LoRA ``B`` matrix is zero.
        - otherwise one frozen copy of the model.
        """
        if ref_model is None and is_peft_model(model):
            if not adapter_is_new and not _adapter_is_identity(model):
                self.ref_adapter = _copy_active_adapter(model, REF_ADAPTER)
            return  # the adapter-disabled base (or the frozen adapter copy) is the reference
        ref = ref_model if ref_model is not None else copy.deepcopy(self.accelerator.unwrap_model(model))
        ref.eval().requires_grad_(False)
        self.ref_model = self.accelerator.prepare_model(ref, evaluation_mode=True)

    def ref_forward(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the reference model on ``batch`` (no gradient)."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            if self.ref_model is not None:
                return self.ref_model(**inputs).logits
            peft_model = self.accelerator.unwrap_model(model)
            if self.ref_adapter is None:
                with peft_model.disable_adapter():
                    return model(**inputs).logits
            trained = peft_model.active_adapter
            peft_model.set_adapter(self.ref_adapter)
            try:
                return model(**inputs).logits
            finally:
                peft_model.set_adapter(trained)  # makes the trained adapter trainable again, ref frozen

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
        pipeline_tag, auto_class = card_task(base)
        forget_src = dataset_source(self.forget_raw)
        retain_src = dataset_source(self.retain_raw) if self.retain_raw is not None else None
        extra = opts["dataset_tags"]
        datasets = [s["hub_id"] for s in (forget_src, retain_src) if s and s.get("hub_id")]
        datasets += [extra] if isinstance(extra, str) else list(extra or [])
        tags = opts["tags"]
        # one-shot methods (SSD, IAU: `one_shot`, no per-batch loss) edit the weights: no training steps
        edit = (
            getattr(self, "one_shot", False) or type(self).unlearning_loss is UnlearnTrainer.unlearning_loss
        )
        kind = "edit" if edit else "fine-tune"
        card = build_model_card(
            method_id=self._name,
            method_name=type(self).__name__.removesuffix("Trainer"),
            paper=self._paper,
            base_model=base_name or None,
            base_architecture=type(plain).__name__,
            config=config_diff(self.args),
            forget=dataset_fingerprint(self.forget_raw),
            retain=dataset_fingerprint(self.retain_raw) if self.retain_raw is not None else None,
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
        )
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        card.save(out / "README.md")
        self._card_options = {k: v for k, v in opts.items() if v is not None}
        if out.resolve() == Path(self.args.output_dir).resolve():
            self._card_written = True  # record_metrics() refreshes this card

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


REF_ADAPTER = "hf_unlearn_reference"


def _adapter_is_identity(model) -> bool:
    """True when the active LoRA adapter adds nothing yet (every ``lora_B`` is zero, as at init)."""
    name = model.active_adapter
    b = [p for n, p in model.named_parameters() if "lora_B" in n and f".{name}." in n]
    return bool(b) and all(not p.detach().any() for p in b)


def _copy_active_adapter(model, copy_name: str) -> str:
    """Add a frozen copy of ``model``'s active adapter under ``copy_name``; the active adapter stays active."""
    name = model.active_adapter
    model.add_adapter(copy_name, copy.deepcopy(model.peft_config[name]))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, p in params.items():
            if f".{name}." in n:
                params[n.replace(f".{name}.", f".{copy_name}.")].copy_(p)
    model.set_adapter(name)
    for n, p in model.named_parameters():
        if f".{copy_name}." in n:
            p.requires_grad_(False)
    return copy_name


def check_vocabulary(model, tokenizer) -> None:
    """Refuse a tokenizer with more tokens than the model's embedding matrix (its ids would index past
    it mid-training); warn when it has far fewer (a tokenizer of another model). Models often pad
    their embedding matrix beyond the tokenizer, so a small gap is normal."""
    embeddings = _base_model(model).get_input_embeddings()
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None or tokenizer is None:
        return
    n = len(tokenizer)
    if n > rows:
        raise ValueError(
            f"the tokenizer has {n} tokens but {type(_base_model(model)).__name__}'s embedding matrix has "
            f"{rows} rows: is it this model's tokenizer? If you added tokens, call "
            f"model.resize_token_embeddings(len(tokenizer)) first"
        )
    if n < 0.9 * rows:
        warnings.warn(
            f"the tokenizer has {n} tokens but the model's embedding matrix has {rows} rows; "
            "check that processing_class is this model's tokenizer",
            stacklevel=3,
        )


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
