"""SalUn: weight-saliency unlearning (Fan, Liu, Zhang, Wong, Wei & Liu, ICLR 2024, arXiv 2310.12508).

Only the *salient* weights may change: a mask m_S keeps the top r fraction of |∇_θ ℓ_f(θ_o; D_f)| over
all parameters (:mod:`hf_unlearn.importance.saliency`), and the unlearned model is
θ_u = m_S ⊙ (θ_o + Δθ) + (1 − m_S) ⊙ θ_o (paper Eq. 7). The forget objective is

- classifiers: random labels (paper Eq. 8): CE(θ_u; x_f, y') with y' ≠ y, plus α·CE(θ_u; D_r);
- causal LMs: gradient ascent (−NLL) or NPO on the forget answers, plus α·NLL(D_r).

Enforcement: gradients are masked right after the backward pass (before clipping), and after every
optimizer step the non-salient weights are restored to θ_o and their optimizer state (momentum, Adam
moments) is zeroed, so weight decay and momentum cannot move them. The reference code only masked
gradients until 2026 (OPTML-Group/Unlearn-Saliency issue #32, fixed in PR #33:
``Classification/unlearn/RL.py``); ``restore_unmasked=False`` reproduces
that older behaviour for comparison with published numbers. The enforcement is a
:class:`~hf_unlearn.importance.saliency.SaliencyMask` attached to the model and the optimizer.

Recipe (defaults of :class:`SalUnConfig`): every SalUn reference trains with a constant learning rate, so
``lr_scheduler_type="constant"``. For classifiers the defaults follow ``Classification/unlearn/impl.py``
and ``RL.py`` (CIFAR-10): no gradient clipping (``max_grad_norm=0``), weight decay on every parameter,
biases included (``decay_all_parameters``, as ``torch.optim.SGD(model.parameters(), weight_decay=...)``),
and ``retain_schedule="full_pass"``: each epoch one pass over the forget set (random-label steps), then
one pass over the whole retain set (plain cross-entropy steps). For causal LMs there is no SalUn
reference; the defaults are those of the LLM unlearning references this library follows (TOFU, NPO,
both on ``transformers.Trainer``): clipping at 1.0, no decay on biases and norm weights, one retain batch
paired with each forget batch. Each field given explicitly wins.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SchedulerType, get_last_checkpoint, seed_worker

from ..data.paired import HOLD_MAX_BYTES, PairingEpochCallback, hold_in_memory, read_rows
from ..importance.saliency import SaliencyMask, accumulate_gradients, saliency_mask
from ..losses.common import sequence_logprob
from ..losses.npo import npo_loss
from ..papers import SALUN_PAPER
from ..registry import register_method
from .base import UnlearnConfig
from .forget_retain import UnlearnTrainer

MASK_FILE = "salun_mask.safetensors"
FORGET_LOSSES = ("auto", "random_label", "ga", "npo")
RETAIN_SCHEDULES = ("auto", "paired", "full_pass")


@dataclass
class SalUnConfig(UnlearnConfig):
    """SalUn's hyper-parameters. ``retain_weight`` is the paper's α (weight of the retain loss).

    ``max_grad_norm=None``, ``decay_all_parameters=None`` and ``retain_schedule="auto"`` mean "the
    recipe for the model's task" (module docstring; :meth:`task_defaults`): the trainer fills them in
    on its own copy of the config, so ``trainer.args`` shows the values used and the caller's config is
    unchanged. The learning-rate schedule defaults to constant for every task.
    """

    mask_ratio: float = field(
        default=0.5, metadata={"help": "r: fraction of all weights that are salient (may change), in (0, 1]."}
    )
    forget_loss: str = field(
        default="auto",
        metadata={
            "help": "'random_label' (classifiers), 'ga' or 'npo' (causal LMs); 'auto' = random_label for "
            "classifiers, npo for causal LMs."
        },
    )
    npo_beta: float = field(default=0.1, metadata={"help": "β of the NPO forget loss."})
    random_label_excludes_true: bool = field(
        default=True,
        metadata={
            "help": "Draw y' uniformly from the K−1 wrong classes (paper: y' ≠ y); False = uniform over all "
            "K classes as in the reference code (Classification/unlearn/RL.py)."
        },
    )
    restore_unmasked: bool = field(
        default=True,
        metadata={
            "help": "After each step restore non-salient weights and zero their optimizer state (True), or "
            "only mask gradients as the reference code did before its 2026 fix (False)."
        },
    )
    mask_path: str | None = field(
        default=None, metadata={"help": "A saved mask (safetensors) to use instead of computing one."}
    )
    retain_schedule: str = field(
        default="auto",
        metadata={
            "help": "'paired': each step = one forget batch + retain_weight × one retain batch; 'full_pass': "
            "each epoch one pass over the forget set, then one over the whole retain set (retain_weight × "
            "CE steps), every step one kind (reference, CIFAR-10); 'auto' = full_pass for classifiers, "
            "paired for causal LMs.",
            "choices": list(RETAIN_SCHEDULES),
        },
    )
    decay_all_parameters: bool | None = field(
        default=None,
        metadata={
            "help": "Apply weight_decay to every parameter, biases and norm weights included (reference: "
            "torch SGD on model.parameters()), instead of Trainer's exclusions. Default: true for "
            "classifiers, false for causal LMs."
        },
    )
    # Trainer defaults that do not fit SalUn's recipe (module docstring): constant lr, clipping by task.
    lr_scheduler_type: SchedulerType | str = field(
        default="constant",
        metadata={"help": "Learning-rate schedule (every SalUn reference: constant)."},
    )
    max_grad_norm: float | None = field(
        default=None,
        metadata={
            "help": "Gradient clipping norm, 0 = none. Default: 0 for classifiers (reference classification "
            "code), 1.0 for causal LMs (Trainer, as the TOFU/NPO references)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if self.forget_loss not in FORGET_LOSSES:
            raise ValueError(f"forget_loss must be one of {FORGET_LOSSES}, got {self.forget_loss!r}")
        if not self.npo_beta > 0:
            raise ValueError(f"npo_beta must be > 0, got {self.npo_beta}")
        if self.retain_schedule not in RETAIN_SCHEDULES:
            raise ValueError(
                f"retain_schedule must be one of {RETAIN_SCHEDULES}, got {self.retain_schedule!r}"
            )
        if self.max_grad_norm is not None and not (
            self.max_grad_norm >= 0 and math.isfinite(self.max_grad_norm)
        ):
            raise ValueError(
                f"max_grad_norm must be a finite number >= 0 (0 = no clipping), got {self.max_grad_norm}"
            )

    def task_defaults(self, task: str) -> dict:
        """The values that ``None`` / ``"auto"`` fields take for a model of ``task``: SalUn's reference
        recipe for classifiers, the LLM unlearning references' for causal LMs (module docstring)."""
        classifier = task == "classification"
        wanted = {
            "max_grad_norm": 0.0 if classifier else 1.0,
            "decay_all_parameters": classifier,
            "retain_schedule": "full_pass" if classifier else "paired",
        }
        unset = {"max_grad_norm": None, "decay_all_parameters": None, "retain_schedule": "auto"}
        return {k: v for k, v in wanted.items() if getattr(self, k) == unset[k]}


@register_method("trainer", SalUnConfig)
class SalUnTrainer(UnlearnTrainer):
    """Saliency unlearning: the method's forget loss, applied to the salient weights only."""

    _name = "salun"
    _paper = SALUN_PAPER
    _tag_names = ["salun", "weight-saliency"]
    config_class = SalUnConfig
    supported_tasks = ("causal_lm", "classification")

    def __init__(
        self,
        model,
        args: SalUnConfig | None = None,
        *rest,
        mask: dict[str, torch.Tensor] | None = None,
        **kwargs,
    ):
        self.mask = None if mask is None else SaliencyMask(mask)
        if isinstance(args, SalUnConfig):
            # the task's defaults are filled in (check_inputs) on a copy: the caller's config is not changed
            copied = object.__new__(type(args))
            copied.__dict__.update(args.__dict__)
            args = copied
        super().__init__(model, args, *rest, **kwargs)

    def check_inputs(self, model, args, peft_config) -> None:
        loss = resolve_forget_loss(args.forget_loss, self.task)
        if (self.task == "classification") != (loss == "random_label"):
            raise ValueError(
                f"forget_loss={loss!r} does not fit a {'classifier' if self.task == 'classification' else 'causal LM'}:"
                " use 'random_label' for classifiers and 'ga' or 'npo' for causal LMs"
            )
        for key, value in args.task_defaults(self.task).items():
            setattr(args, key, value)

    def setup(self) -> None:
        if self.mask is None and self.args.mask_path:
            self.mask = SaliencyMask.load(self.args.mask_path, self.model, self.args.mask_ratio)
        self.full_pass_steps = None
        if self.args.retain_schedule == "full_pass":
            a = self.args
            self.full_pass_steps = FullPassSteps(
                self.train_dataset.views,
                a.per_device_train_batch_size,
                parts=self.accelerator.num_processes * a.gradient_accumulation_steps,
                seed=a.data_seed or a.seed,
                drop_last=a.dataloader_drop_last,
            )
            self.add_callback(StepsEpochCallback(self.full_pass_steps))

    @property
    def forget_loss(self) -> str:
        return resolve_forget_loss(self.args.forget_loss, self.task)

    @property
    def needs_ref_model(self) -> bool:  # read by the base class once args exist
        return self.forget_loss == "npo"

    # ----------------------------------------------------------------------------------- mask
    def compute_mask(self) -> dict[str, torch.Tensor]:
        """m_S from the forget gradient at the current (original) weights: whole tensors, equal to the
        single-process mask (also for FSDP2-sharded parameters: :meth:`pass_sums`)."""

        def forget_loss(model, batch):
            return self.sample_losses(model, batch).mean()

        sums, _ = self.pass_sums(
            self.train_dataset.views["forget"],
            self.args.per_device_train_batch_size,
            lambda batches: accumulate_gradients(self.model, batches, forget_loss),
            "SalUn: saliency mask",
        )
        return saliency_mask(sums, self.args.mask_ratio)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Compute (or load) the mask, then ``Trainer.train()`` with the mask enforced."""
        if self.is_deepspeed_enabled:
            raise ValueError(
                "SalUnTrainer does not support DeepSpeed: ZeRO keeps the weights, gradients and optimizer "
                "state in its own partitioned buffers (empty parameters outside a gather, fp32 master copies), "
                "where the saliency mask's gradient masking and restoring of non-salient weights cannot reach; "
                "use DDP or FSDP2 (accelerate_configs/fsdp.yaml) instead"
            )
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        if resume_from_checkpoint and (Path(resume_from_checkpoint) / MASK_FILE).is_file():
            self.mask = SaliencyMask.load(
                Path(resume_from_checkpoint) / MASK_FILE, self.model, self.args.mask_ratio
            )
        elif self.mask is None:
            self.mask = SaliencyMask(self.compute_mask())
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def create_optimizer(self, model=None):
        """The usual optimizer with the saliency mask attached: gradients masked before each step and,
        with ``restore_unmasked``, the non-salient weights restored (optimizer state zeroed) after it."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        self.mask.attach(self.model, optimizer, restore=self.args.restore_unmasked)
        self._mask_optimizer = optimizer  # re-attached to at the first step if FSDP2 swaps the parameters
        return optimizer

    def get_decay_parameter_names(self, model) -> list[str]:
        """Every parameter with ``decay_all_parameters`` (the reference's ``torch.optim.SGD(
        model.parameters(), weight_decay=...)``), else Trainer's (no biases, no norm weights)."""
        if self.args.decay_all_parameters:
            return [n for n, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    def training_step(self, model, inputs, num_items_in_batch=None):
        optimizer = getattr(self, "_mask_optimizer", None)
        if optimizer is not None and not self.mask.is_attached_to(self.model):
            # FSDP2 (fully_shard) replaced the parameters after create_optimizer, and accelerate pointed the
            # optimizer at the new, sharded ones: attach to those (no step yet, so they still hold θ_o)
            self.mask.attach(self.model, optimizer, restore=self.args.restore_unmasked)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.mask.mask_gradients()  # before clipping and the optimizer step: only salient gradients remain
        return loss

    def get_train_dataloader(self):
        """Trainer's loader for the paired schedule; for ``full_pass`` a loader over
        :class:`FullPassSteps`, one item per process and micro-batch (accelerate gives process r the items
        r, r + W, ...), so every optimizer step sees batches of one kind on every process."""
        if self.full_pass_steps is None:
            return super().get_train_dataloader()
        a = self.args
        self.full_pass_steps.resize(self._train_batch_size)
        loader = torch.utils.data.DataLoader(
            self.full_pass_steps,
            batch_size=1,
            collate_fn=StepCollator(self.data_collator.view_collator()),
            num_workers=a.dataloader_num_workers,
            pin_memory=a.dataloader_pin_memory,
            persistent_workers=a.dataloader_persistent_workers,
            prefetch_factor=a.dataloader_prefetch_factor,
            worker_init_fn=partial(seed_worker, num_workers=a.dataloader_num_workers, rank=a.process_index),
        )
        return self.accelerator.prepare(loader)

    # ----------------------------------------------------------------------------------- loss
    def unlearning_loss(self, model, inputs):
        """The forget term on a forget batch plus retain_weight × the retain term on a retain batch; a
        ``full_pass`` step has only one of the two batches."""
        loss, logs = None, {}
        if "forget" in inputs:
            loss, logs = self.forget_term(model, inputs["forget"])
        if "retain" in inputs:
            retain = self.sample_losses(model, inputs["retain"]).mean()
            weighted = self.args.retain_weight * retain
            loss = weighted if loss is None else loss + weighted
            logs["retain_loss"] = retain.detach()
        return loss, logs

    def forget_term(self, model, f) -> tuple[torch.Tensor, dict]:
        """(forget loss on the forget batch ``f``, its logs): random labels, GA or NPO."""
        logs = {}
        if self.forget_loss == "random_label":
            logits = self.logits(model, f)
            wrong = random_labels(
                f["labels"], logits.shape[-1], self._label_generator(), self.args.random_label_excludes_true
            )
            loss = F.cross_entropy(logits.float(), wrong)
            logs["forget_ce_random"] = loss.detach()
            logs["forget_acc"] = (logits.argmax(-1) == f["labels"]).float().mean().detach()
        elif self.forget_loss == "ga":
            nll = self.mean_nll(model, f)
            loss, logs["forget_nll"] = -nll, nll.detach()
        else:
            logp = sequence_logprob(self.forward(model, f), f["labels"])
            ref = sequence_logprob(self.ref_forward(model, f), f["labels"])
            loss = npo_loss(logp, ref, self.args.npo_beta)
            logs["npo_loss"] = loss.detach()
        return loss, logs

    def _label_generator(self) -> torch.Generator:
        """Seeded by (seed, step, process, micro-batch), so resumed runs draw the same labels."""
        step = self.state.global_step
        self._draws = self._draws + 1 if getattr(self, "_draw_step", None) == step else 0
        self._draw_step = step
        seed = hash((self.args.seed, step, self.args.process_index, self._draws)) % 2**63
        return torch.Generator().manual_seed(seed)

    # -------------------------------------------------------------------------------- saving
    def _save_mask(self, folder) -> None:
        if self.mask is not None and self.args.should_save:
            self.mask.save(
                Path(folder) / MASK_FILE,
                self.accelerator.unwrap_model(self.model),
                mask_ratio=self.args.mask_ratio,
            )

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        self._save_mask(
            os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        self._save_mask(output_dir or self.args.output_dir)

    def card_notes(self) -> str | None:
        a = self.args
        lines = [
            "### SalUn",
            f"- mask ratio r = {a.mask_ratio} (global top-r of |∇ forget loss|), forget loss: {self.forget_loss}"
            f", retain weight α = {a.retain_weight}",
            f"- non-salient weights {'restored after every step (optimizer state zeroed)' if a.restore_unmasked else 'protected by gradient masking only'}",
            f"- retain schedule: {SCHEDULE_NOTES[a.retain_schedule]}; lr schedule {_value(a.lr_scheduler_type)}, "
            f"gradient clipping {a.max_grad_norm if a.max_grad_norm else 'off'}, weight decay {a.weight_decay}"
            f" on {'every parameter' if a.decay_all_parameters else 'all but biases and norm weights'}",
        ]
        if self.mask is None:
            return "\n".join(lines)
        per_module = defaultdict(lambda: [0, 0])
        for name, m in self.mask.items():
            layer = name.rsplit(".", 1)[0]
            per_module[layer][0] += int(m.sum())
            per_module[layer][1] += m.numel()
        total, size = sum(v[0] for v in per_module.values()), sum(v[1] for v in per_module.values())
        lines += [
            f"- salient weights: {total:,} of {size:,}",
            "",
            "| module | salient | of |",
            "|---|---|---|",
        ]
        rows = list(per_module.items())
        lines += [f"| `{m}` | {s:,} | {t:,} |" for m, (s, t) in rows[:80]]
        if len(rows) > 80:
            lines.append(f"| … {len(rows) - 80} more modules | | |")
        return "\n".join(lines)


SCHEDULE_NOTES = {
    "paired": "each step one forget batch + α × one retain batch",
    "full_pass": "each epoch a pass over the forget set, then one over the whole retain set",
    "auto": "by task",
}


def _value(x) -> str:
    return getattr(x, "value", x)


class FullPassSteps(torch.utils.data.Dataset):
    """SalUn's reference retain schedule (``Classification/unlearn/RL.py``, CIFAR-10/SVHN branch) as a
    dataset of steps: each epoch one pass over the shuffled forget set, then one pass over the whole
    shuffled retain set, every step a batch of one view only (``{"forget": rows}`` or ``{"retain": rows}``).

    A step holds up to ``batch_size × parts`` rows, ``parts`` = processes × gradient-accumulation steps; it
    is split into ``parts`` consecutive items (one per micro-batch and process, near-equal sizes), so item
    ``(step·g + micro)·W + rank`` is that process's share and the loader gives process r the items r,
    r + W, ... (accelerate's sharding). The pass's last step may be shorter (no ``drop_last``, as the
    reference); if it has fewer rows than ``parts`` it is topped up from the start of the pass, as
    accelerate's ``even_batches``. The order is a permutation seeded by (seed, epoch, view): the same
    again after a resume (:class:`~hf_unlearn.data.paired.PairingEpochCallback` calls :meth:`set_epoch`).
    """

    def __init__(self, views: dict, batch_size: int, parts: int = 1, seed: int = 42, drop_last: bool = False):
        self.passes = [(name, views[name]) for name in ("forget", "retain") if name in views]
        self.batch_size, self.parts, self.seed, self.drop_last = batch_size, parts, seed, drop_last
        self._held: dict[str, dict | None] = {}  # view -> its columns in memory (None: read from Arrow)
        self.set_epoch(0)

    def resize(self, batch_size: int) -> None:
        """Use another per-device batch size (Trainer's ``auto_find_batch_size``) from now on."""
        if batch_size != self.batch_size:
            self.batch_size = batch_size
            self.set_epoch(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        rows_per_step = self.batch_size * self.parts
        self.items: list[tuple[str, np.ndarray]] = []
        for k, (name, ds) in enumerate(self.passes):
            order = np.random.default_rng([self.seed, epoch, k]).permutation(len(ds))
            for start in range(0, len(order), rows_per_step):
                rows = order[start : start + rows_per_step]
                if self.drop_last and len(rows) < rows_per_step:
                    break
                if len(rows) < self.parts:
                    rows = np.concatenate([rows, np.resize(order, self.parts - len(rows))])
                self.items += [(name, part) for part in np.array_split(rows, self.parts)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list]:
        """``{view: its rows of step-part i}``, read in one call (small tensor views held in memory, as
        :class:`~hf_unlearn.data.paired.PairedViews` does)."""
        name, rows = self.items[i]
        ds = dict(self.passes)[name]
        if name not in self._held:
            self._held[name] = hold_in_memory(ds, HOLD_MAX_BYTES)
        return {name: read_rows(ds, rows.tolist(), self._held[name])}


class StepsEpochCallback(PairingEpochCallback):
    """Keeps :class:`FullPassSteps` on the trainer's epoch, also for a run resumed mid-epoch (its own
    class, so Trainer does not take it for a second copy of the pairing callback)."""


class StepCollator:
    """Collates a :class:`FullPassSteps` item (a loader batch of one) with the view collator."""

    def __init__(self, view_collator):
        self.view_collator = view_collator

    def __call__(self, items: list[dict[str, list]]) -> dict[str, dict[str, torch.Tensor]]:
        (item,) = items
        return {name: self.view_collator(rows) for name, rows in item.items()}


def resolve_forget_loss(forget_loss: str, task: str) -> str:
    """The forget loss that ``forget_loss="auto"`` means for ``task`` (random labels / NPO)."""
    if forget_loss != "auto":
        return forget_loss
    return "random_label" if task == "classification" else "npo"


def random_labels(
    labels: torch.Tensor, num_classes: int, generator: torch.Generator, exclude_true: bool = True
):
    """Random labels y' for the forget samples: uniform over the K−1 other classes (y' ≠ y) when
    ``exclude_true``, else uniform over all K (reference code). labels: (B,) → (B,)."""
    if exclude_true:
        shift = torch.randint(1, num_classes, labels.shape, generator=generator)
        return ((labels.cpu() + shift) % num_classes).to(labels.device)
    return torch.randint(0, num_classes, labels.shape, generator=generator).to(labels.device)
