"""The forget/retain trainer of the fine-tuning unlearning methods: :class:`UnlearnTrainer`.

Its train set is built from a *forget* dataset and an optional *retain* dataset through the model's
task adapter (:mod:`hf_unlearn.tasks`): question/answer rows for a causal LM, rows of model inputs and
a label for an image/text classifier, image + question + answer rows for a vision-language model. Each
training example is a dict of aligned *views*, ``{"forget": row_i, "retain": row_j, ...}``
(:mod:`hf_unlearn.data.paired`); methods add their own views (FLAT's template answers, IDK's refusals)
and implement :meth:`UnlearnTrainer.unlearning_loss` on the collated batch
``{"forget": {"input_ids", "attention_mask", "labels", ...}, "retain": {...}}``.

Everything else is ``Trainer``: ``train()`` (also under ``torchrun``/accelerate), checkpoints and
resume, ``save_model()``, ``push_to_hub()`` (which writes an unlearning model card).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from ..data.paired import PairedCollator, PairedViews, PairingEpochCallback
from ..data.templates import sample_templates
from ..losses.common import sequence_nll
from ..losses.prompt_decouple import prompt_decouple_loss
from ..tasks import task_for
from .base import MethodTrainer, UnlearnConfig, check_output_dir, is_peft_model


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


class UnlearnTrainer(MethodTrainer):
    """The forget/retain trainer: builds the paired forget/retain batches through the model's task
    adapter, wraps the model with ``peft_config`` only once every input is checked, and keeps the
    frozen reference model. Subclasses set the class metadata and implement :meth:`unlearning_loss`
    (and :meth:`extra_views` to add aligned views).
    """

    supported_tasks: tuple[str, ...] = ("causal_lm",)  # and/or "classification", "vision_language"
    requires_retain: bool = False  # GradDiff / IDK need a retain set
    uses_retain: bool = True  # whether a given retain set is used at all
    needs_ref_model: bool = False  # NPO
    pd_default_weight: float = 1.0  # SafeEraser's PD weight in the reference code (0.5 for GA / GradDiff)

    def __init__(
        self,
        model: PreTrainedModel | str,
        args: UnlearnConfig | None = None,
        forget_dataset: Dataset | None = None,
        retain_dataset: Dataset | None = None,
        processing_class=None,
        pd_dataset: Dataset | None = None,
        peft_config=None,
        ref_model: PreTrainedModel | None = None,
        callbacks=None,
        optimizers=(None, None),
        **kwargs,
    ):
        args = self.checked_args(args)
        if isinstance(model, str):
            model = self._load_model(model)
        self.adapter = task_for(model, self.supported_tasks, type(self).__name__)(
            model, processing_class, args
        )
        self.task = self.adapter.name
        check_output_dir(model, args.output_dir)
        self.adapter.check(model)
        if self.requires_retain and retain_dataset is None:
            raise ValueError(
                f"{type(self).__name__} needs a retain_dataset (the data whose knowledge must be kept)"
            )

        # Every check on the caller's inputs runs before the model is wrapped: a refused call must leave
        # the caller's model as it was (get_peft_model injects LoRA layers into it in place).
        self.forget_raw, self.retain_raw = forget_dataset, retain_dataset
        views = self._build_views(forget_dataset, retain_dataset, processing_class, args)
        if pd_dataset is not None:
            if self.one_shot:
                raise ValueError(
                    f"{type(self).__name__} edits the weights once, without a training loss to add the "
                    "Prompt-Decouple term to: pd_dataset is for the fine-tuning methods (GA, GradDiff, KL, IDK, NPO)"
                )
            views["pd"] = self._pd_view(forget_dataset, pd_dataset)
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
                data_collator=PairedCollator(self.adapter.pad_token_id, self.task, self.adapter.collator()),
                processing_class=processing_class,
                callbacks=[*(callbacks or []), PairingEpochCallback(train)],
                optimizers=optimizers,
                **kwargs,
            )
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
    def prepare_dataset(self, ds, name: str, tokenizer=None, args=None, answers=None) -> Dataset:
        """Check and encode one dataset through the task adapter (QA rows, classification rows, or
        image + question + answer rows); ``tokenizer`` and ``args`` are the trainer's."""
        return self.adapter.prepare(ds, name, answers)

    def _build_views(self, forget, retain, tokenizer, args) -> dict[str, Dataset]:
        def tok(ds, name, answers=None):
            return self.prepare_dataset(ds, name, tokenizer, args, answers)

        views = {"forget": tok(forget, "forget_dataset")}
        views.update(self.extra_views(forget, tok, args))
        if retain is not None and self.uses_retain:
            views["retain"] = tok(retain, "retain_dataset")
        return views

    def _pd_view(self, forget: Dataset, pd: Dataset) -> Dataset:
        """SafeEraser's decoupled rows (benign image + the same question → a normal answer), one per forget
        row and aligned with it by index."""
        if forget is None or len(pd) != len(forget):
            raise ValueError(
                f"pd_dataset has {len(pd)} rows but forget_dataset has {len(forget) if forget is not None else 0}: "
                "the Prompt-Decouple rows must be aligned with the forget rows (one decoupled row per forget row)"
            )
        return self.prepare_dataset(pd, "pd_dataset")

    @property
    def pd_weight(self) -> float:
        """The PD term's weight: ``args.pd_weight``, or the method's reference weight."""
        return self.pd_default_weight if self.args.pd_weight is None else self.args.pd_weight

    def card_notes(self) -> str | None:
        """The Prompt-Decouple choice, when a ``pd_dataset`` was given."""
        pd = getattr(self.train_dataset, "views", {}).get("pd")
        if pd is None:
            return None
        return (
            f"Trained with SafeEraser's Prompt-Decouple term ([arXiv 2502.12520](https://arxiv.org/abs/2502.12520)): "
            f"{len(pd)} decoupled rows (a benign image with the same question and a normal answer), "
            f"weight {self.pd_weight:g} ({'the reference weight of this method' if self.args.pd_weight is None else 'set by the user'})."
        )

    def composed_loss(self, model, inputs):
        """The method's loss + ``pd_weight`` · L_PD on the decoupled rows when a ``pd_dataset`` was given
        (:func:`hf_unlearn.losses.prompt_decouple_loss`)."""
        loss, logs = self.unlearning_loss(model, inputs)
        if "pd" in inputs:
            pd = prompt_decouple_loss(self.forward(model, inputs["pd"]), inputs["pd"]["labels"])
            loss = loss + self.pd_weight * pd
            logs = {**logs, "pd_nll": pd.detach()}
        return loss, logs

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
        if ref_model is None:
            from torch.distributed.tensor import DTensor

            if any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in model.parameters()):
                raise ValueError(
                    f"{type(self).__name__}: the model's parameters are already sharded (FSDP2 DTensors or "
                    "DeepSpeed ZeRO-3 partitions), so no whole copy of it can be made for the frozen reference "
                    "model: load the reference yourself, unsharded, and pass it as `ref_model=`"
                )
        ref = ref_model if ref_model is not None else copy.deepcopy(self.accelerator.unwrap_model(model))
        ref.eval().requires_grad_(False)
        self.ref_model = self.accelerator.prepare_model(ref, evaluation_mode=True)

    def ref_forward(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the reference model on ``batch`` (no gradient), given every model input."""
        with torch.no_grad():
            if self.ref_model is not None:
                return self.adapter.forward(self.ref_model, batch)
            peft_model = self.accelerator.unwrap_model(model)
            if self.ref_adapter is None:
                with peft_model.disable_adapter():
                    return self.adapter.forward(model, batch)
            trained = peft_model.active_adapter
            peft_model.set_adapter(self.ref_adapter)
            try:
                return self.adapter.forward(model, batch)
            finally:
                peft_model.set_adapter(trained)  # makes the trained adapter trainable again, ref frozen

    def forward(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of ``model`` on a collated view, given every model input (``pixel_values`` too)."""
        return self.adapter.forward(model, batch)

    logits = forward  # the name the classification methods use

    def sample_losses(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample loss, (B,): cross-entropy for a classifier, mean answer-token NLL otherwise."""
        return self.adapter.per_sample_loss(self.forward(model, batch), batch)

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

    def pass_sums(self, dataset, batch_size: int, accumulate, desc: str | None = None):
        """``accumulate(batches) -> (sums, count)`` over all of ``dataset``, as whole tensors on every
        process, equal to the single-process result (SSD's importances, SalUn's mask).

        - Whole parameters (one process, DDP, and FSDP/ZeRO before the model is wrapped, which is where
          one-shot passes run): this process's share of the batches (:meth:`rank_batches`); sums and
          counts reduced across processes.
        - Parameters already sharded by FSDP2 (``DTensor``): FSDP averages every backward's gradient over
          the processes, so every process runs *every* batch and the shards of the sums are gathered
          into whole tensors (``full_tensor``).
        - Parameters partitioned by DeepSpeed ZeRO-3 (``zero.Init``) are refused: no gradient is whole.
        """
        from torch.distributed.tensor import DTensor

        params = list(self.model.parameters())
        if any(hasattr(p, "ds_id") for p in params):
            raise ValueError(
                f"{type(self).__name__}: the model's parameters are partitioned by DeepSpeed ZeRO-3 (zero.Init, "
                "which from_pretrained uses while a ZeRO-3 config is alive); load the model before creating the "
                "config (and keep `zero3_init_flag: false`) so this pass sees whole gradients"
            )
        if any(isinstance(p, DTensor) for p in params):
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=batch_size, collate_fn=self.data_collator.view_collator()
            )
            sums, count = accumulate({k: v.to(self.args.device) for k, v in b.items()} for b in loader)
            return {n: s.full_tensor() if isinstance(s, DTensor) else s for n, s in sums.items()}, count
        sums, count = accumulate(self.rank_batches(dataset, batch_size, desc))
        count = self.accelerator.reduce(torch.tensor(float(count), device=self.args.device), reduction="sum")
        return {n: self.accelerator.reduce(s, reduction="sum") for n, s in sums.items()}, count.item()

    def mean_nll(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch mean of the per-sample mean answer-token NLL (the "NLL" of GA/GradDiff/NPO+RT/IDK)."""
        return sequence_nll(self.forward(model, batch), batch["labels"]).mean()


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
