"""RegLoRA (SEFE, Chen et al., "SEFE: Superficial and Essential Forgetting Eliminator for Multimodal
Continual Instruction Tuning", ICML 2025, arXiv 2505.02486): a LoRA regulariser against *essential*
forgetting in continual instruction tuning. :func:`run_task_sequence` runs a whole sequence (train, identify,
merge, next); Answer Style Diversification is :mod:`hf_unlearn.data.asd`.

After task t, the *key elements* of each LoRA update ΔW_t = B_t A_t are its top M % entries by |ΔW_t|
within the matrix (unscaled: the α/r factor does not change the ranking; M = 2 %). They join the key set
S_{≤t} of earlier tasks (:func:`update_key_set`: a true set by default, the reference's duplicated
concatenation with ``unique=False``). While task t+1 trains a fresh LoRA (B, A) on the merged weights,

    L = L_CE + λ · L_reg,   L_reg = (1 / |R|) Σ_{m ∈ R} mean_{(i, j) ∈ S_m} |(B_m A_m)_{ij}|,   λ = 2.5e3,

R the modules with key elements (the reference divides by a hard-coded 224 = 32 layers × 7 modules of
LLaMA-7B; here |R| is derived). (BA)_{ij} = Σ_k B_{ik} A_{kj} is gathered without forming BA:
``(B[rows] * A[:, cols].T).sum(-1)`` (:func:`gathered_update`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..importance.io import load_safetensors_checked
from ..papers import SEFE_PAPER
from ..registry import register_method
from .base import MethodTrainer, UnlearnConfig

KEY_SET_FILE = "reglora_key_set.safetensors"


# ------------------------------------------------------------------------------------- the maths
def key_elements(delta: torch.Tensor, ratio: float) -> torch.Tensor:
    """(K, 2) (row, col) indices of the top ``ratio`` % entries of |ΔW| (K = ⌊ratio/100 · rows · cols⌋),
    ordered by decreasing |ΔW| (ties by position)."""
    if delta.ndim != 2:
        raise ValueError(f"ΔW must be a matrix, got shape {tuple(delta.shape)}")
    _check_ratio(ratio)
    k = int(ratio / 100 * delta.numel())
    if k == 0:
        return torch.empty(0, 2, dtype=torch.long)
    flat = delta.detach().abs().flatten().float()
    top = torch.sort(flat, descending=True, stable=True).indices[:k]
    return torch.stack([top // delta.shape[1], top % delta.shape[1]], dim=1)


def update_key_set(
    old: dict[str, torch.Tensor], new: dict[str, torch.Tensor], unique: bool = True
) -> dict[str, torch.Tensor]:
    """S_{≤t} = S_{<t} ∪ S_t per module: a true set (sorted, ``unique=True``) or the reference's
    concatenation, whose duplicates weigh more in the mean (``unique=False``)."""
    out = {}
    for name in dict.fromkeys([*old, *new]):
        parts = [x for x in (old.get(name), new.get(name)) if x is not None]
        joined = torch.cat(parts) if parts else torch.empty(0, 2, dtype=torch.long)
        out[name] = torch.unique(joined, dim=0) if unique and len(joined) else joined
    return out


def gathered_update(lora_b: torch.Tensor, lora_a: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(BA)_{ij} at the (K, 2) ``indices`` without materialising BA: B (out, r), A (r, in) → (K,)."""
    rows, cols = indices[:, 0], indices[:, 1]
    return (lora_b[rows] * lora_a[:, cols].T).sum(-1)


def reg_penalty(
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], key_set: dict[str, torch.Tensor]
) -> torch.Tensor:
    """L_reg: the mean over modules with key elements of mean |(BA)_S|; ``pairs`` maps a module to (B, A)."""
    terms = [
        gathered_update(*pairs[name], idx.to(pairs[name][0].device)).abs().mean()
        for name, idx in key_set.items()
        if len(idx)
    ]
    if not terms:
        return torch.zeros((), device=next(iter(pairs.values()))[0].device) if pairs else torch.zeros(())
    return torch.stack(terms).mean()


class KeyPenalty:
    """:func:`reg_penalty` in a handful of tensor operations per LoRA rank instead of several per module: the
    B matrices of the modules with key elements are stacked into one (Σ out, r) matrix and the Aᵀ into one
    (Σ in, r), the key (row, col) pairs are offset into them once, and each entry carries the weight
    1 / (K_m · |R|), so that Σ_k w_k |(BA)_k| is the mean over modules of their mean. Same value as
    :func:`reg_penalty` (tested); the per-step cost no longer grows with the number of modules."""

    def __init__(self, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], key_set: dict[str, torch.Tensor]):
        names = [n for n, idx in key_set.items() if len(idx)]
        missing = [n for n in names if n not in pairs]
        if missing:
            raise ValueError(f"the key set names modules without LoRA: {missing[:3]}")
        self.groups = []  # per rank: (module names, global rows, global cols, weights)
        for rank in sorted({pairs[n][0].shape[1] for n in names}):
            members = [n for n in names if pairs[n][0].shape[1] == rank]
            rows, cols, weights, row_off, col_off = [], [], [], 0, 0
            for n in members:
                b, a = pairs[n]
                idx = key_set[n].to(b.device)
                rows.append(idx[:, 0] + row_off)
                cols.append(idx[:, 1] + col_off)
                weights.append(torch.full((len(idx),), 1.0 / (len(idx) * len(names)), device=b.device))
                row_off, col_off = row_off + b.shape[0], col_off + a.shape[1]
            self.groups.append((members, torch.cat(rows), torch.cat(cols), torch.cat(weights)))

    def __call__(self, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        total = None
        for members, rows, cols, weights in self.groups:
            b = torch.cat([pairs[n][0] for n in members])  # (Σ out, r)
            a_t = torch.cat([pairs[n][1].T for n in members])  # (Σ in, r)
            term = (
                (b.index_select(0, rows) * a_t.index_select(0, cols)).sum(-1).float().abs() * weights
            ).sum()
            total = term if total is None else total + term
        if total is None:
            device = next(iter(pairs.values()))[0].device if pairs else None
            return torch.zeros((), device=device)
        return total


# ------------------------------------------------------------------------------------ LoRA access
def lora_pairs(model, adapter: str | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (B, A)} of every LoRA-wrapped linear layer of ``model`` for ``adapter`` (default: the
    active one). Names are those of the base model's modules, so they stay valid after a merge.
    ``ValueError`` for a model without LoRA layers."""
    pairs = {}
    for name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if not isinstance(lora_a, torch.nn.ModuleDict) or not len(lora_a):
            continue
        key = adapter or _active_adapter(module)
        if key not in lora_a:
            continue
        pairs[_base_name(name)] = (lora_b[key].weight, lora_a[key].weight)
    if not pairs:
        raise ValueError(
            f"{type(model).__name__} has no LoRA layers{f' for adapter {adapter!r}' if adapter else ''}: "
            "RegLoRA regularises a PEFT LoRA model (peft.get_peft_model(model, LoraConfig(...)))"
        )
    return pairs


def identify_key_elements(model, ratio: float = 2.0, adapter: str | None = None) -> dict[str, torch.Tensor]:
    """S_t: the key elements of every LoRA update ΔW = BA (unscaled) of ``model``."""
    with torch.no_grad():
        return {
            name: key_elements(b.float() @ a.float(), ratio)
            for name, (b, a) in lora_pairs(model, adapter).items()
        }


def module_shapes(model, adapter: str | None = None) -> dict[str, list[int]]:
    return {name: [b.shape[0], a.shape[1]] for name, (b, a) in lora_pairs(model, adapter).items()}


def save_key_set(path, key_set: dict[str, torch.Tensor], shapes: dict[str, list[int]], **meta) -> None:
    """The key set as safetensors (one (K, 2) int64 tensor per module), with each module's (out, in) shape
    in the metadata so that :func:`load_key_set` can refuse a key set of another model."""
    info = {"shapes": json.dumps(shapes), **{k: json.dumps(v) for k, v in meta.items()}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({n: t.contiguous().long().cpu() for n, t in key_set.items()}, str(path), info)


def load_key_set(path, shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Read a key set for a model whose LoRA modules have ``shapes``; ``ValueError`` when it names other
    modules, other shapes, or indices outside a module."""
    tensors, meta = load_safetensors_checked(Path(path), "RegLoRA key set")
    saved = json.loads(meta.get("shapes", "{}"))
    if set(tensors) != set(shapes) or any(list(saved.get(n, [])) != list(s) for n, s in shapes.items()):
        missing, extra = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
        raise ValueError(
            f"RegLoRA key set {path} was computed for another model or module list (missing {missing[:3]}, "
            f"unexpected {extra[:3]}, or other shapes): use the key set of this architecture's earlier tasks"
        )
    for n, idx in tensors.items():
        if (
            idx.ndim != 2
            or idx.shape[1] != 2
            or (len(idx) and (idx.min() < 0 or (idx.max(0).values >= torch.tensor(shapes[n])).any()))
        ):
            raise ValueError(
                f"RegLoRA key set {path}: the indices of {n} are not (row, col) pairs inside {shapes[n]}"
            )
    return {n: t.long() for n, t in tensors.items()}


# ------------------------------------------------------------------------------------- the trainer
@dataclass
class RegLoRAConfig(UnlearnConfig):
    """``TrainingArguments`` of one task of a sequence (SEFE reference defaults where they exist)."""

    key_ratio: float = field(
        default=2.0, metadata={"help": "M: key elements per LoRA matrix, in % of its entries, in (0, 100]."}
    )
    reg_weight: float = field(
        default=2.5e3, metadata={"help": "λ of L = CE + λ·L_reg (reference: 2.5e3), >= 0."}
    )
    unique_keys: bool = field(
        default=True,
        metadata={"help": "Key set as a true set (else the reference's concatenation with duplicates)."},
    )
    key_set_path: str | None = field(
        default=None, metadata={"help": "Key set of the earlier tasks (safetensors); None: the first task."}
    )
    learning_rate: float = field(default=2e-4, metadata={"help": "Learning rate (SEFE/LLaVA LoRA: 2e-4)."})
    task_name: str = field(default="task", metadata={"help": "This task's name (on the model card)."})
    previous_tasks: list[str] = field(
        default_factory=list, metadata={"help": "The tasks trained before this one, in order (on the card)."}
    )

    def __post_init__(self):
        super().__post_init__()
        _check_ratio(self.key_ratio)
        if not (0 <= self.reg_weight < math.inf):
            raise ValueError(f"reg_weight (λ) must be a finite number >= 0, got {self.reg_weight}")


@register_method("continual_trainer", RegLoRAConfig)
class RegLoRATrainer(MethodTrainer):
    """One task of a continual sequence on a PEFT LoRA model: CE + λ · L_reg over the earlier tasks' key set.

    ``key_set`` (or ``args.key_set_path``) holds S_{<t}; without one this is the first task (CE only). After
    ``train()``, :meth:`next_key_set` gives S_{≤t}; ``save_model`` and every checkpoint store the key set the
    run was regularised with (``reglora_key_set.safetensors``), reloaded on resume.

    ``train_dataset`` is either encoded already (``input_ids``/``labels``, with your ``data_collator``) or
    question/answer rows (an image column too for a vision-language model), which are encoded through the
    model's task adapter with ``processing_class`` (a tokenizer, or a processor) and its collator.
    """

    _name = "reglora"
    _paper = SEFE_PAPER
    _tag_names = ["reglora", "sefe", "continual-learning"]
    config_class = RegLoRAConfig

    def __init__(self, model, args: RegLoRAConfig | None = None, *rest, key_set=None, **kwargs):
        args = self.checked_args(args)
        self.shapes = module_shapes(model)  # raises for a model without LoRA, before anything else
        if key_set is None and args.key_set_path:
            key_set = load_key_set(args.key_set_path, self.shapes)
        if key_set is not None:
            extra = sorted(set(key_set) - set(self.shapes))
            if extra:
                raise ValueError(f"the key set names modules the model's LoRA does not have: {extra[:3]}")
        self.key_set = {n: t.long() for n, t in (key_set or {}).items()}
        self.adapter = None
        train = kwargs.get("train_dataset")
        if not rest and _is_raw_qa(train, args):  # question/answer (and image) rows: encode them here
            from ..tasks import task_for

            self.adapter = task_for(model, ("causal_lm", "vision_language"), type(self).__name__)(
                model, kwargs.get("processing_class"), args
            )
            self.adapter.check(model)
            kwargs["train_dataset"] = self.adapter.prepare(train, "train_dataset")
            if kwargs.get("data_collator") is None:
                kwargs["data_collator"] = self.adapter.collator()
        super().__init__(model, args, *rest, **kwargs)

    def unlearning_loss(self, model, inputs) -> tuple[torch.Tensor, dict]:
        ce = model(**inputs).loss
        if not self.key_set or self.args.reg_weight == 0:
            return ce, {"ce": ce.detach()}
        if getattr(self, "_penalty", None) is None:  # the (B, A) parameters: found once, updated in place
            self._pairs = lora_pairs(self.accelerator.unwrap_model(model))
            self._penalty = KeyPenalty(self._pairs, self.key_set)
        reg = self._penalty(self._pairs)
        return ce + self.args.reg_weight * reg, {"ce": ce.detach(), "reg": reg.detach()}

    def next_key_set(self) -> dict[str, torch.Tensor]:
        """S_{≤t} = S_{<t} ∪ key elements of this task's LoRA (call after ``train()``, before merging)."""
        new = identify_key_elements(self.accelerator.unwrap_model(self.model), self.args.key_ratio)
        return update_key_set(self.key_set, new, unique=self.args.unique_keys)

    def create_model_card(self, model_name=None, tags=None, output_dir: str | None = None, **kwargs):
        """This task's card (``README.md``): the task, the tasks before it, the key elements held, every
        changed setting, the paper; no tokens or paths of the training data."""
        if not self.is_world_process_zero():
            return
        from huggingface_hub import ModelCardData

        from ..model_cards.card import config_diff, library_versions, looks_like_hub_id, redact, render_card

        a = self.args
        plain = self.accelerator.unwrap_model(self.model)
        plain = getattr(plain, "get_base_model", lambda: plain)()
        base = str(getattr(getattr(plain, "config", None), "_name_or_path", "") or "")
        hub_id = base if looks_like_hub_id(base) else None
        held = sum(len(t) for t in self.key_set.values())
        title = redact(model_name or a.hub_model_id or Path(output_dir or a.output_dir).name)
        data = ModelCardData(
            library_name="peft",
            base_model=hub_id,
            tags=list(dict.fromkeys(["hf_unlearn", "continual-learning", *self._tag_names, *(tags or [])])),
            continual={
                "method": self._name,
                "paper": f"arxiv:{self._paper.arxiv_id}",
                "task": a.task_name,
                "previous_tasks": list(a.previous_tasks),
                "key_elements": held,
            },
        )
        card = render_card(
            "continual",
            data,
            title=title,
            method_name="RegLoRA",
            paper=self._paper,
            task=redact(a.task_name),
            previous=[redact(t) for t in a.previous_tasks],
            base_hub_id=hub_id,
            base_label=redact(Path(base).name) if base else "a model built in code",
            architecture=type(plain).__name__,
            key_elements=f"{held:,}",
            key_modules=sum(1 for t in self.key_set.values() if len(t)),
            key_ratio=a.key_ratio,
            key_union="a true set" if a.unique_keys else "concatenated with duplicates",
            reg_weight=f"{a.reg_weight:g}",
            settings=[(redact(str(k)), redact(str(v))) for k, v in config_diff(a).items()],
            versions=library_versions(),
            bibtex=self._paper.bibtex.strip(),
        )
        out = Path(output_dir or a.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        card.save(out / "README.md")

    def _save_key_set(self, folder) -> None:
        save_key_set(Path(folder) / KEY_SET_FILE, self.key_set, self.shapes, key_ratio=self.args.key_ratio)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self._save_key_set(folder)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self._save_key_set(output_dir or self.args.output_dir)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        if resume_from_checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        if resume_from_checkpoint and (Path(resume_from_checkpoint) / KEY_SET_FILE).is_file():
            self.key_set = load_key_set(Path(resume_from_checkpoint) / KEY_SET_FILE, self.shapes)
            self._penalty = None
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)


def run_task_sequence(
    model,
    tasks: list[tuple[str, object]],
    lora_config,
    make_args: Callable[[int, str], RegLoRAConfig],
    evaluate: Callable[[object, str], float],
    data_collator=None,
    key_set: dict[str, torch.Tensor] | None = None,
    callbacks: list | None = None,
    processing_class=None,
) -> dict:
    """Train ``tasks`` ([(name, train_dataset), ...]) one after another: for each, a fresh LoRA
    (``lora_config``) on the merged model, a :class:`RegLoRATrainer` with the key set of the tasks before
    it (``make_args(t, name)`` gives its config; ``reg_weight=0`` is plain sequential LoRA), ``save_model``
    into its ``output_dir`` (weights, key set, card), the key set updated, the LoRA merged, and every task
    seen so far scored with ``evaluate(model, name)``. ``callbacks`` (and ``processing_class``, which
    encodes question/answer datasets) go to every task's trainer. Returns the accuracy triangle, MFN/MAA/BWT, the final
    model and key set, and the number of key elements after each task.
    """
    from peft import get_peft_model

    from ..evaluation.continual import continual_metrics

    accuracy, held = [], []
    key_set = dict(key_set or {})
    for t, (name, dataset) in enumerate(tasks):
        args = make_args(t, name)
        args.task_name, args.previous_tasks = name, [n for n, _ in tasks[:t]]
        peft_model = get_peft_model(model, lora_config)
        trainer = RegLoRATrainer(
            model=peft_model,
            args=args,
            train_dataset=dataset,
            data_collator=data_collator,
            key_set=key_set,
            callbacks=callbacks,
            processing_class=processing_class,
        )
        trainer.train()
        trainer.save_model()
        key_set = trainer.next_key_set()
        held.append(sum(len(v) for v in key_set.values()))
        model = peft_model.merge_and_unload()
        model.eval()
        accuracy.append([float(evaluate(model, n)) for n, _ in tasks[: t + 1]])
    return {
        "accuracy": accuracy,
        "metrics": continual_metrics(accuracy),
        "model": model,
        "key_set": key_set,
        "key_elements": held,
    }


def _is_raw_qa(dataset, args) -> bool:
    """Whether ``dataset`` holds question/answer rows still to encode (no ``input_ids`` column)."""
    columns = getattr(dataset, "column_names", None)
    return bool(columns) and "input_ids" not in columns and args.question_column in columns


def _check_ratio(ratio: float) -> None:
    if not (0 < ratio <= 100):
        raise ValueError(f"the key-element ratio M must be a percentage in (0, 100], got {ratio}")


def _active_adapter(module) -> str:
    active = getattr(module, "active_adapter", None) or getattr(module, "active_adapters", None)
    if isinstance(active, (list, tuple)):
        active = active[0] if active else None
    return active or "default"


def _base_name(name: str) -> str:
    """The base model's module name of a PEFT-wrapped layer (``base_model.model.`` prefix dropped)."""
    return name.removeprefix("base_model.model.")
