"""SalUn: weight-saliency unlearning (Fan, Liu, Zhang, Wong, Wei & Liu, ICLR 2024, arXiv 2310.12508).

Only the *salient* weights may change: a mask m_S keeps the top r fraction of |∇_θ ℓ_f(θ_o; D_f)| over
all parameters (:mod:`hf_unlearn.importance.saliency`), and the unlearned model is
θ_u = m_S ⊙ (θ_o + Δθ) + (1 − m_S) ⊙ θ_o (paper Eq. 7). The forget objective is

- classifiers: random labels (paper Eq. 8): CE(θ_u; x_f, y') with y' ≠ y, plus α·CE(θ_u; D_r);
- causal LMs: gradient ascent (−NLL) or NPO on the forget answers, plus α·NLL(D_r).

Enforcement: gradients are masked right after the backward pass (before clipping), and after every
optimizer step the non-salient weights are restored to θ_o and their optimizer state (momentum, Adam
moments) is zeroed, so weight decay and momentum cannot move them. The reference code only masked
gradients until 2026 (salun.md pitfall 1, fixed in its PR #33); ``restore_unmasked=False`` reproduces
that older behaviour for comparison with published numbers.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..importance.saliency import accumulate_gradients, load_mask, saliency_mask, save_mask
from ..losses.common import sequence_logprob
from ..losses.npo import npo_loss
from ..registry import Paper, register_method
from .base import UnlearnConfig, UnlearnTrainer

SALUN_PAPER = Paper(
    title="SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image "
    "Classification and Generation",
    arxiv_id="2310.12508",
    bibtex="""@inproceedings{fan2024salun,
  title     = {{SalUn}: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image Classification and Generation},
  author    = {Fan, Chongyu and Liu, Jiancheng and Zhang, Yihua and Wong, Eric and Wei, Dennis and Liu, Sijia},
  booktitle = {International Conference on Learning Representations},
  year      = {2024}
}""",
)
MASK_FILE = "salun_mask.safetensors"
FORGET_LOSSES = ("auto", "random_label", "ga", "npo")


@dataclass
class SalUnConfig(UnlearnConfig):
    """SalUn's hyper-parameters. ``retain_weight`` is the paper's α (weight of the retain loss)."""

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
            "K classes as in the reference code (salun.md pitfall 4)."
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

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if self.forget_loss not in FORGET_LOSSES:
            raise ValueError(f"forget_loss must be one of {FORGET_LOSSES}, got {self.forget_loss!r}")
        if not self.npo_beta > 0:
            raise ValueError(f"npo_beta must be > 0, got {self.npo_beta}")


@register_method("trainer", SalUnConfig)
class SalUnTrainer(UnlearnTrainer):
    """Saliency unlearning: the method's forget loss, applied to the salient weights only."""

    _name = "salun"
    _paper = SALUN_PAPER
    _tag_names = ["salun", "weight-saliency"]
    config_class = SalUnConfig
    supported_tasks = ("causal_lm", "classification")

    def __init__(self, *args, mask: dict[str, torch.Tensor] | None = None, **kwargs):
        self.mask = mask
        self._frozen: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []
        super().__init__(*args, **kwargs)

    def check_inputs(self, model, args, peft_config) -> None:
        loss = resolve_forget_loss(args.forget_loss, self.task)
        if (self.task == "classification") != (loss == "random_label"):
            raise ValueError(
                f"forget_loss={loss!r} does not fit a {'classifier' if self.task == 'classification' else 'causal LM'}:"
                " use 'random_label' for classifiers and 'ga' or 'npo' for causal LMs"
            )

    def setup(self) -> None:
        if self.mask is None and self.args.mask_path:
            self.mask = load_mask(self.args.mask_path, self.model, self.args.mask_ratio)

    @property
    def forget_loss(self) -> str:
        return resolve_forget_loss(self.args.forget_loss, self.task)

    @property
    def needs_ref_model(self) -> bool:  # read by the base class once args exist
        return self.forget_loss == "npo"

    # ----------------------------------------------------------------------------------- mask
    def compute_mask(self) -> dict[str, torch.Tensor]:
        """m_S from the forget gradient at the current (original) weights, reduced across processes."""

        def forget_loss(model, batch):
            return self.sample_losses(model, batch).mean()

        batches = self.rank_batches(
            self.train_dataset.views["forget"], self.args.per_device_train_batch_size, "SalUn: saliency mask"
        )
        sums, _ = accumulate_gradients(self.model, batches, forget_loss)
        sums = {n: self.accelerator.reduce(g, reduction="sum") for n, g in sums.items()}
        return saliency_mask(sums, self.args.mask_ratio)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Compute (or load) the mask, then ``Trainer.train()`` with the mask enforced."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        if resume_from_checkpoint and (Path(resume_from_checkpoint) / MASK_FILE).is_file():
            self.mask = load_mask(Path(resume_from_checkpoint) / MASK_FILE, self.model, self.args.mask_ratio)
        elif self.mask is None:
            self.mask = self.compute_mask()
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def create_optimizer(self, model=None):
        """The usual optimizer, plus a post-step hook that restores the non-salient weights."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        named = dict(self.model.named_parameters())
        self._frozen = [
            (named[n], ~m.to(named[n].device), named[n].detach().clone()) for n, m in self.mask.items()
        ]
        if self.args.restore_unmasked:
            optimizer.register_step_post_hook(lambda opt, *_: self._restore_unmasked(opt))
        return optimizer

    @torch.no_grad()
    def _restore_unmasked(self, optimizer) -> None:
        for p, frozen, theta0 in self._frozen:
            p[frozen] = theta0[frozen]
            for value in optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value[frozen] = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        with torch.no_grad():  # before clipping and the optimizer step: only salient gradients remain
            for p, frozen, _ in self._frozen:
                if p.grad is not None:
                    p.grad[frozen] = 0
        return loss

    # ----------------------------------------------------------------------------------- loss
    def unlearning_loss(self, model, inputs):
        f, logs = inputs["forget"], {}
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
        if "retain" in inputs:
            retain = self.sample_losses(model, inputs["retain"]).mean()
            loss = loss + self.args.retain_weight * retain
            logs["retain_loss"] = retain.detach()
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
            save_mask(
                self.mask,
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
