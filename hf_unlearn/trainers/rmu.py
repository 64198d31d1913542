"""RMU: Representation Misdirection for Unlearning (Li et al., 2024, "The WMDP Benchmark", arXiv 2403.03218,
Sec. 5.2).

One decoder layer ℓ is steered: on forget rows its output activations h_ℓ are pushed towards a fixed random
vector c·u (u uniform on [0, 1)^d, unit length), which scrambles what the layers above read; on retain rows
they are held to the frozen model's,

    L = L_forget + α·L_retain,  L_forget = E ‖h_ℓ(x_f) − c·u‖²,  L_retain = E ‖h_ℓ(x_r) − h_ℓ^frozen(x_r)‖²,

with only a few parameters trained: by default the MLP down-projection of layers ℓ−2, ℓ−1, ℓ (the WMDP code's
``layer_ids = [5, 6, 7]``, ``param_ids = [6]`` for Zephyr-7B). The squared norms are means (``F.mse_loss``):
over the answer tokens (``activation_positions="answer_tokens"``, open-unlearning's TOFU setting) or over
every position of the padded batch (``"reference"``, the WMDP code on plain text). The maths is
:mod:`hf_unlearn.losses.rmu`.

The frozen model is the adapter-disabled base for PEFT models, else one frozen copy. The trained set is
applied when ``train()`` starts and the caller's ``requires_grad`` flags are put back when it ends.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..data.qa import IGNORE_INDEX
from ..losses.rmu import RMU_POSITIONS, activation_mse, steering_vector
from ..papers import RMU_PAPER
from ..registry import register_method
from ..tasks import unwrap_peft
from .base import UnlearnConfig, is_peft_model
from .forget_retain import UnlearnTrainer

# where the decoder layers of the common transformers architectures live
LAYER_PATHS = (
    "model.layers",
    "model.decoder.layers",
    "transformer.h",
    "gpt_neox.layers",
    "transformer.layers",
)


@dataclass
class RMUConfig(UnlearnConfig):
    """RMU's hyper-parameters (WMDP's Zephyr-7B values: ℓ = 7, c = 6.5, α = 1200, lr 5e-5)."""

    steering_layer: int | None = field(
        default=None,
        metadata={"help": "ℓ: index of the decoder layer whose output is steered; None: the middle layer."},
    )
    update_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Indices of the layers whose update_modules train; None: ℓ−2, ℓ−1, ℓ (from 0)."},
    )
    update_modules: list[str] = field(
        default_factory=lambda: ["mlp.down_proj"],
        metadata={
            "help": "Sub-modules of each updated layer whose parameters train (LoRA parameters only, for a "
            "PEFT model); the WMDP code trains the MLP's down projection."
        },
    )
    steering_coeff: float = field(
        default=6.5,
        metadata={
            "help": "c: the norm of the forget target c·u. Scale it with the model's activation norms."
        },
    )
    retain_weight: float = field(
        default=1200.0, metadata={"help": "α: weight of the retain activation term (WMDP: 1200)."}
    )
    activation_positions: str = field(
        default="answer_tokens",
        metadata={
            "help": "answer_tokens: squared errors averaged over the answer positions of each row "
            "(open-unlearning); reference: over every position of the padded batch (the WMDP code)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.steering_layer is not None and self.steering_layer < 0:
            raise ValueError(
                f"steering_layer must be >= 0 (or None for the middle layer), got {self.steering_layer}"
            )
        if self.update_layers is not None and (not self.update_layers or min(self.update_layers) < 0):
            raise ValueError(
                f"update_layers must be a non-empty list of indices >= 0, got {self.update_layers}"
            )
        if not self.update_modules:
            raise ValueError("update_modules is empty: name the sub-modules whose parameters RMU trains")
        if not (self.steering_coeff > 0 and math.isfinite(self.steering_coeff)):
            raise ValueError(f"steering_coeff must be a finite number > 0, got {self.steering_coeff}")
        if self.activation_positions not in RMU_POSITIONS:
            raise ValueError(
                f"activation_positions must be one of {RMU_POSITIONS}, got {self.activation_positions!r}"
            )


def decoder_layers(model) -> tuple[str, torch.nn.ModuleList]:
    """(qualified name, the ``ModuleList`` of decoder layers) of a transformers causal LM (PEFT unwrapped)."""
    base = unwrap_peft(model)
    for path in LAYER_PATHS:
        try:
            layers = base.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, torch.nn.ModuleList) and len(layers):
            return path, layers
    raise ValueError(
        f"RMU could not find the decoder layers of {type(base).__name__} (looked for {', '.join(LAYER_PATHS)})"
    )


@contextmanager
def captured_output(module: torch.nn.Module):
    """A list that receives ``module``'s output tensor (the hidden states) on each forward inside the block."""
    out: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        out.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield out
    finally:
        handle.remove()


@register_method("trainer", RMUConfig)
class RMUTrainer(UnlearnTrainer):
    """RMU (WMDP, Sec. 5.2): steer layer ℓ's forget activations to c·u, keep its retain activations; only
    ``update_modules`` of ``update_layers`` train."""

    _name = "rmu"
    _paper = RMU_PAPER
    _tag_names = ["rmu"]
    config_class = RMUConfig
    supported_tasks = ("causal_lm",)
    requires_retain = True
    needs_ref_model = True

    def check_inputs(self, model, args, peft_config) -> None:
        _, layers = decoder_layers(model)
        n = len(layers)
        layer = n // 2 if args.steering_layer is None else args.steering_layer
        if layer >= n:
            raise ValueError(f"steering_layer {layer} does not exist: the model has {n} decoder layers")
        update = (
            args.update_layers
            if args.update_layers is not None
            else list(range(max(0, layer - 2), layer + 1))
        )
        if max(update) >= n:
            raise ValueError(
                f"update_layers {update} name a layer the model lacks (it has {n} decoder layers)"
            )
        if min(update) > layer:
            raise ValueError(
                f"update_layers {update} are all above steering_layer {layer}: the steered activations do "
                "not depend on them, so nothing would be unlearned"
            )
        self.steering_layer, self.update_layers = layer, sorted(set(update))

    def setup(self) -> None:
        model = self.accelerator.unwrap_model(self.model)
        self._layer_path, layers = decoder_layers(model)
        peft = is_peft_model(model)
        selected, missing = [], []
        for i in self.update_layers:
            for name in self.args.update_modules:
                try:
                    sub = layers[i].get_submodule(name)
                except AttributeError:
                    missing.append(f"{self._layer_path}.{i}.{name}")
                    continue
                selected += [p for n, p in sub.named_parameters() if not peft or "lora_" in n]
        if missing:
            raise ValueError(f"RMU update_modules not found in the model: {missing}")
        if not selected:
            raise ValueError(
                f"RMU selected no parameter in {self.args.update_modules} of layers {self.update_layers} "
                "(a PEFT model needs LoRA on those modules)"
            )
        self._trained = {id(p) for p in selected}
        self._control = None  # c·u, made at the first step (its size is the hidden size)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train()`` with only the selected parameters trainable; the caller's flags are restored."""
        params = list(self.accelerator.unwrap_model(self.model).parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(id(p) in self._trained)
        try:
            return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)

    def _steered(self, model) -> torch.nn.Module:
        return unwrap_peft(self.accelerator.unwrap_model(model)).get_submodule(
            f"{self._layer_path}.{self.steering_layer}"
        )

    def activations(self, model, batch, reference: bool = False) -> torch.Tensor:
        """Layer ℓ's output on ``batch``, (B, L, d): of the model, or (no gradient) of the frozen model."""
        source = self.ref_model if reference and self.ref_model is not None else model
        with captured_output(self._steered(source)) as out:
            if reference:
                self.ref_forward(model, batch)
            else:
                self.forward(model, batch)
        return out[-1]

    def positions(self, batch) -> torch.Tensor | None:
        if self.args.activation_positions == "reference":
            return None
        return batch["labels"] != IGNORE_INDEX

    def unlearning_loss(self, model, inputs):
        f, r = inputs["forget"], inputs["retain"]
        h_f = self.activations(model, f)
        if self._control is None:
            self._control = steering_vector(h_f.shape[-1], self.args.steering_coeff, self.args.seed)
        forget = activation_mse(h_f, self._control.to(h_f.device), self.positions(f))
        h_r = self.activations(model, r)
        h_ref = self.activations(model, r, reference=True)
        retain = activation_mse(h_r, h_ref.to(h_r.device), self.positions(r))
        return forget + self.args.retain_weight * retain, {
            "rmu_forget": forget.detach(),
            "rmu_retain": retain.detach(),
        }

    def card_notes(self) -> str | None:
        notes = (
            f"RMU steered decoder layer {self.steering_layer} (c = {self.args.steering_coeff:g}, "
            f"α = {self.args.retain_weight:g}, {self.args.activation_positions} positions), training "
            f"{', '.join(self.args.update_modules)} of layers {self.update_layers}."
        )
        pd = super().card_notes()
        return notes if pd is None else f"{notes}\n\n{pd}"
