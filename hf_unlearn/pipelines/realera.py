"""``RealEraPipeline``: Stable Diffusion with ``erase(concepts)`` (RealEra stages 1–3, or plain UCE).

RealEra (Liu et al., "RealEra: Semantic-level Concept Erasure via Neighbor-Concept Mining",
arXiv 2410.09140) erases a concept together with its *neighbours*, random perturbations of the
concept's text-encoder output embedding inside a distance bound D1 and a cosine band [S1, S2],
and keeps concepts *beyond* that neighbourhood (and user-given preserve concepts) at their
original mapping. ``erase`` does, for every concept at once:

1. encode each concept, anchor and preserve prompt with the pipeline's own tokenizer and text
   encoder (as ``__call__`` encodes prompts: padded to ``model_max_length``), output in float32,
   and pick the rows the edit acts on (``token_selection``, see ``select_concept_tokens``);
2. mine ``num_neighbours`` neighbours of each concept's rows (``mine_neighbours``) and draw
   ``num_beyond`` beyond-concept samples (``beyond_concept_samples``), seeded from ``seed``;
3. solve the closed form of UCE's objective once for every ``attn2.to_k`` / ``attn2.to_v``
   (``edit_cross_attention``): erase rows = concept + neighbour rows, targets = the anchor's rows,
   preserve rows = beyond samples + preserve concepts.

``method="uce"`` skips step 2 (UCE: the concept rows only, preserve concepts only). RealEra's
fourth stage (noise-prediction alignment with LoRA) is not part of this pipeline yet.

Reconstruction choices (no RealEra code or paper values are public; see ``neighbours.py``):
perturbations live in the text-encoder *output* space, per token row, Gaussian, with a
*relative* distance bound by default; every default value below is ours, not the paper's.
The settings of every ``erase`` call are recorded in ``pipe.config.realera`` and saved in
``model_index.json`` by ``save_pretrained``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from ..papers import REALERA_PAPER
from ..registry import register_method
from .closed_form import (
    TOKEN_SELECTIONS,
    align_token_pairs,
    cross_attention_projections,
    edit_cross_attention,
    select_concept_tokens,
)
from .neighbours import (
    DISTANCES,
    DISTRIBUTIONS,
    OUTSIDE_RULES,
    beyond_concept_samples,
    mine_neighbours,
    regularisation_embeddings,
)

METHODS = ("realera", "uce", "esd-x", "esd-x-strict")
LORA_FOLDER = "unet_lora"  # unmerged stage-4 adapters, one sub-folder each
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


@dataclass
class RealEraConfig:
    """Hyper-parameters of :meth:`RealEraPipeline.erase` (stages 1–3). Defaults are ours, not the paper's."""

    anchors: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Anchor prompt(s) the concepts are mapped to: one for all or one per concept. Empty: ''."
        },
    )
    preserve: list[str] = field(
        default_factory=list,
        metadata={"help": "Concepts that keep their original mapping (UCE's preserve set)."},
    )
    num_neighbours: int = field(
        default=8, metadata={"help": "Neighbour concepts mined per erased concept (RealEra's N_nb; 0: none)."}
    )
    distance_bound: float = field(
        default=0.5, metadata={"help": "Distance bound D1: a neighbour satisfies d(e, e+η) ≤ D1."}
    )
    distance: str = field(
        default="relative",
        metadata={"help": f"Distance d: 'l2' (‖η‖) or 'relative' (‖η‖ / ‖e‖). One of {DISTANCES}."},
    )
    cosine_low: float = field(default=0.85, metadata={"help": "S1, lower end of the cosine band [S1, S2]."})
    cosine_high: float = field(default=0.99, metadata={"help": "S2, upper end of the cosine band [S1, S2]."})
    num_beyond: int = field(
        default=8, metadata={"help": "Beyond-concept samples per erased concept, kept at W0·b (0: none)."}
    )
    beyond_rule: str = field(
        default="either",
        metadata={"help": f"When a sample is beyond the neighbourhood: one of {OUTSIDE_RULES}."},
    )
    distribution: str = field(
        default="gaussian", metadata={"help": f"Perturbation sampler η: one of {DISTRIBUTIONS}."}
    )
    radius: float | None = field(
        default=None,
        metadata={
            "help": "Typical (gaussian) or largest (ball) ‖η‖ of neighbours, in the units of distance; "
            "default D1."
        },
    )
    per_token: bool = field(
        default=True,
        metadata={"help": "Perturb and accept each token row on its own (else the whole matrix)."},
    )
    max_tries: int = field(
        default=100_000, metadata={"help": "Rejection-sampling draws per row before giving up."}
    )
    lam: float = field(default=0.5, metadata={"help": "λ of the closed form (UCE's lamb), > 0."})
    erase_scale: float = field(
        default=1.0, metadata={"help": "s_e: weight of the erase rows in the closed form."}
    )
    preserve_scale: float = field(
        default=1.0, metadata={"help": "s_p: weight of the beyond and preserve rows in the closed form."}
    )
    token_selection: str = field(
        default="last_subject",
        metadata={
            "help": "Rows of a prompt's encoding that are edited: 'last_subject' (UCE 2025) or "
            "'subject_to_end' (UCE 2023, through EOS and padding)."
        },
    )
    seed: int = field(
        default=0,
        metadata={"help": "Seed of neighbour mining, beyond samples, and the LoRA/ESD noise and timesteps."},
    )
    # --- stage 4: noise-prediction alignment with LoRA (RealEra); off unless lora_steps > 0
    lora_steps: int = field(
        default=0, metadata={"help": "Steps of RealEra's LoRA noise-alignment stage (0: closed form only)."}
    )
    lora_rank: int = field(default=4, metadata={"help": "LoRA rank r on the cross-attention projections."})
    lora_alpha: float = field(default=4.0, metadata={"help": "LoRA alpha (scale alpha / r)."})
    lora_lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the LoRA stage."})
    lora_batch_size: int = field(
        default=4, metadata={"help": "Erase rows (and as many beyond rows) per LoRA step."}
    )
    lora_beyond_weight: float = field(
        default=1.0, metadata={"help": "β: weight of the beyond/preserve term of the LoRA loss."}
    )
    lora_images: int = field(
        default=4,
        metadata={"help": "Latents x_0 of each concept generated by the original model for stage 4."},
    )
    lora_merge: bool = field(
        default=True,
        metadata={
            "help": "Merge the LoRA into the UNet (else keep it as the adapter 'realera', saved apart)."
        },
    )
    # --- ESD-x baseline (method="esd-x" / "esd-x-strict")
    esd_steps: int = field(default=200, metadata={"help": "ESD iterations (esd_sd.py: 200)."})
    esd_lr: float = field(default=5e-5, metadata={"help": "ESD Adam learning rate (esd_sd.py: 5e-5)."})
    esd_negative_guidance: float = field(
        default=2.0, metadata={"help": "ESD's η: the target is ε(c) − η (ε(c) − ε(∅)) (esd_sd.py: 2)."}
    )
    esd_batch_size: int = field(default=1, metadata={"help": "Trajectories per ESD step (esd_sd.py: 1)."})
    # --- sampling of x_t / x_0 by the original model (stage 4 and ESD)
    sample_steps: int = field(
        default=50, metadata={"help": "DDIM steps when the original model generates x_0 (LoRA) or x_t (ESD)."}
    )
    sample_guidance_scale: float = field(
        default=3.0, metadata={"help": "Classifier-free guidance of those samples (ESD: 3)."}
    )

    def __post_init__(self) -> None:
        for name in ("anchors", "preserve"):
            value = getattr(self, name)
            value = [value] if isinstance(value, str) else list(value)
            if not all(isinstance(p, str) for p in value):
                raise ValueError(f"{name} must be a list of strings, got {value!r}")
            setattr(self, name, value)
        s1, s2 = self.cosine_low, self.cosine_high
        if not (-1.0 <= s1 <= 1.0 and -1.0 <= s2 <= 1.0):
            raise ValueError(f"the cosine band [S1, S2] must lie in [-1, 1], got [{s1}, {s2}]")
        if s1 > s2:
            raise ValueError(f"the cosine band needs S1 <= S2, got S1={s1} > S2={s2}")
        if not (0 < self.lam < math.inf):
            raise ValueError(f"lam (λ) must be a finite number > 0, got {self.lam}")
        for name in ("erase_scale", "preserve_scale"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 < self.distance_bound < math.inf:
            raise ValueError(f"distance_bound (D1) must be a finite number > 0, got {self.distance_bound}")
        if self.radius is not None and not 0 < self.radius < math.inf:
            raise ValueError(f"radius must be None or a finite number > 0, got {self.radius}")
        for name in ("lora_lr", "esd_lr", "lora_alpha"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        for name in ("lora_beyond_weight", "esd_negative_guidance", "sample_guidance_scale"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        for name, low in (
            ("num_neighbours", 0),
            ("num_beyond", 0),
            ("max_tries", 1),
            ("lora_steps", 0),
            ("lora_rank", 1),
            ("lora_batch_size", 1),
            ("lora_images", 1),
            ("esd_steps", 1),
            ("esd_batch_size", 1),
            ("sample_steps", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, choices in (
            ("distance", DISTANCES),
            ("distribution", DISTRIBUTIONS),
            ("beyond_rule", OUTSIDE_RULES),
            ("token_selection", TOKEN_SELECTIONS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")


@register_method("pipeline", RealEraConfig)
class RealEraPipeline(StableDiffusionPipeline):
    """Stable Diffusion (same components, ``__call__`` and loading) plus :meth:`erase`.

    ``realera`` is the record of past ``erase`` calls (``{"erasures": [...]}``); it is part of the
    pipeline config, so ``save_pretrained`` / ``from_pretrained`` round-trip it with the weights.
    ``save_pretrained`` and ``push_to_hub`` also write this library's model card (``README.md``,
    :func:`~hf_unlearn.model_cards.pipeline_card.build_pipeline_card`), never diffusers' generic one.
    """

    _name = "realera"
    _paper = REALERA_PAPER
    _tag_names = ["realera", "diffusers", "stable-diffusion"]
    _config_class = RealEraConfig  # every field is a setting shown on the card
    _card_kind = "pipeline"  # the model-card template (hf_unlearn.model_cards.CARD_TEMPLATES)

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        safety_checker,
        feature_extractor,
        image_encoder=None,
        requires_safety_checker: bool = True,
        realera: dict | None = None,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )
        self.register_to_config(realera=realera)

    # ------------------------------------------------------------------------------ storage
    def model_card(self, repo_id: str | None = None):
        """This pipeline's ``README.md`` (base pipeline, every erasure and its settings, paper)."""
        from ..model_cards.pipeline_card import build_pipeline_card

        return build_pipeline_card(self, repo_id=repo_id)

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs) -> None:
        """diffusers' ``save_pretrained`` plus the model card as ``README.md``.

        With ``push_to_hub=True`` the saved folder (card included) is uploaded to ``repo_id`` (default:
        the folder's name) with ``token`` / ``private`` / ``commit_message`` / ``create_pr`` from kwargs.
        """
        hub = {
            k: kwargs.pop(k)
            for k in ("repo_id", "token", "private", "commit_message", "create_pr")
            if k in kwargs
        }
        folder = Path(save_directory)
        adapters = sorted(getattr(self.unet, "peft_config", None) or {})
        if adapters:  # the base UNet in unet/, each unmerged LoRA (lora_merge=False) in unet_lora/<name>/
            with_lora = self.unet
            base = copy.deepcopy(with_lora)
            base.unload_lora()
            self.unet = base
            try:
                super().save_pretrained(save_directory, *args, push_to_hub=False, **kwargs)
            finally:
                self.unet = with_lora
            for name in adapters:
                with_lora.save_lora_adapter(
                    str(folder / LORA_FOLDER / name), adapter_name=name, weight_name=LORA_WEIGHTS
                )
        else:
            super().save_pretrained(save_directory, *args, push_to_hub=False, **kwargs)
        self.model_card(hub.get("repo_id")).save(str(folder / "README.md"))
        if push_to_hub:
            self._upload(folder, hub.pop("repo_id", None) or folder.name, **hub)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained`` plus the unmerged LoRA adapters of past erasures (``unet_lora/``)."""
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        names = [
            e["lora_adapter"]
            for e in (pipe.config.realera or {}).get("erasures", [])
            if e.get("lora_adapter")
        ]
        for name in names:
            local = Path(pretrained_model_name_or_path) / LORA_FOLDER / name
            source, extra = (str(local), {}) if local.is_dir() else (
                str(pretrained_model_name_or_path), {"subfolder": f"{LORA_FOLDER}/{name}"}
            )  # fmt: skip
            pipe.unet.load_lora_adapter(
                source, prefix=None, adapter_name=name, weight_name=LORA_WEIGHTS, **extra
            )
        if names:
            pipe.unet.set_adapters(names)
        return pipe

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str = "Upload RealEraPipeline",
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
    ) -> str:
        """Save into a temporary folder (with this library's card) and upload it; the token is never written."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, safe_serialization=safe_serialization, variant=variant, repo_id=repo_id)
            return self._upload(
                Path(tmp),
                repo_id,
                token=token,
                private=private,
                commit_message=commit_message,
                create_pr=create_pr,
            )

    @staticmethod
    def _upload(folder, repo_id, token=None, private=None, commit_message=None, create_pr=False) -> str:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=commit_message or "Upload RealEraPipeline",
            create_pr=create_pr,
        )
        return getattr(info, "commit_url", str(info))

    @torch.no_grad()
    def erase(
        self,
        concepts: str | list[str],
        anchors: str | list[str] | None = None,
        preserve: str | list[str] | None = None,
        config: RealEraConfig | None = None,
        method: str = "realera",
    ) -> dict[str, Any]:
        """Erase ``concepts`` from the UNet (RealEra; ``method="uce"``: UCE; ``"esd-x"``/``"esd-x-strict"``: ESD).

        ``anchors`` / ``preserve`` override ``config.anchors`` / ``config.preserve``; with no anchor
        the concepts go to the empty prompt (UCE's default for objects). Every input is checked
        before any weight changes; a ValueError names the offending prompt, and a failure later on
        (e.g. a non-finite LoRA loss) puts every weight back as it was. Returns a summary (counts of
        rows, edited layers, largest relative weight change, losses, seconds per stage) that is also
        recorded in ``self.config.realera``.

        - ``realera``: stages 1–3 (one closed-form edit) and, with ``config.lora_steps > 0``, stage 4:
          a LoRA on the cross-attention trained so that the concept and its neighbours predict the
          anchor's noise and beyond samples / preserve concepts keep theirs
          (:func:`~hf_unlearn.pipelines.noise_alignment.train_lora_alignment`), merged into the UNet
          (``lora_merge``) or kept as the adapter ``realera``;
        - ``uce``: the closed form on the concept rows and preserve concepts only;
        - ``esd-x`` / ``esd-x-strict``: ESD's fine-tuning with negative guidance
          (:func:`~hf_unlearn.pipelines.noise_alignment.train_esd`); anchors and preserve are unused.
        """
        config = config or RealEraConfig()
        if not isinstance(config, RealEraConfig):
            raise TypeError(f"config must be a RealEraConfig, got {type(config).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        concepts = _as_list(concepts, "concepts")
        if not concepts:
            raise ValueError("erase needs at least one concept")
        anchors = _as_list(config.anchors if anchors is None else anchors, "anchors") or [""]
        if len(anchors) == 1:
            anchors = anchors * len(concepts)
        if len(anchors) != len(concepts):
            raise ValueError(
                f"give one anchor for all concepts or one per concept, got {len(anchors)} anchors "
                f"for {len(concepts)} concepts"
            )
        preserve = _as_list(config.preserve if preserve is None else preserve, "preserve")
        concept_tokens = [self._tokenize(p, "concept", allow_empty=False) for p in concepts]
        for concept, anchor in zip(concepts, anchors, strict=True):
            if _normalise(concept) == _normalise(anchor):
                raise ValueError(f"the anchor of concept {concept!r} is the concept itself ({anchor!r})")
        if getattr(self.unet, "peft_config", None):
            raise ValueError(
                f"the UNet carries LoRA adapters {sorted(self.unet.peft_config)} that are not merged: merge "
                "them first (pipe.unet.fuse_lora(); pipe.unet.unload_lora()) or erase on a fresh pipeline"
            )
        cross_attention_projections(self.unet)  # raises when the UNet has no cross-attention
        anchor_tokens = [self._tokenize(p, "anchor", allow_empty=True) for p in anchors]
        preserve_tokens = [self._tokenize(p, "preserve concept", allow_empty=True) for p in preserve]

        seconds: dict[str, float] = {}
        snapshot = {n: p.detach().clone() for n, p in self.unet.named_parameters() if ".attn2." in n}
        try:
            with _timed(seconds, "encode"):
                concept_states = [self._encode(ids, m) for ids, m, _ in concept_tokens]  # (L, d) each
                anchor_states = [self._encode(ids, m) for ids, m, _ in anchor_tokens]
                preserve_states = [self._encode(ids, m) for ids, m, _ in preserve_tokens]
            if method.startswith("esd"):
                summary = self._erase_esd(concept_states, config, method, seconds)
            else:
                summary = self._erase_closed_form(
                    concept_tokens, concept_states, anchor_tokens, anchor_states, preserve_tokens,
                    preserve_states, config, method, seconds,
                )  # fmt: skip
        except BaseException:
            if getattr(self.unet, "peft_config", None):
                self.unet.unload_lora()
            named = dict(self.unet.named_parameters())
            for n, value in snapshot.items():
                named[n].data.copy_(value)
            raise
        summary = {
            "method": method,
            "concepts": concepts,
            "anchors": anchors,
            "preserve": preserve,
            **summary,
            "seconds": seconds,
            "config": {**dataclasses.asdict(config), "anchors": anchors, "preserve": preserve},
        }
        history = list((self.config.realera or {}).get("erasures", []))
        self.register_to_config(realera={"erasures": [*history, summary]})
        return summary

    def _erase_closed_form(
        self, concept_tokens, concept_states, anchor_tokens, anchor_states, preserve_tokens, preserve_states,
        config, method, seconds,
    ) -> dict[str, Any]:  # fmt: skip
        """Stages 2–3 (and 4 with ``lora_steps``) on already encoded prompts; see :meth:`erase`."""
        mode = config.token_selection
        realera = method == "realera"
        lora = realera and config.lora_steps > 0
        erase_rows, target_rows, beyond_rows = [], [], []
        erase_full, anchor_full, beyond_full, erase_group, beyond_group = [], [], [], [], []
        n_neighbours = n_beyond = 0
        for i, (c_tok, a_tok) in enumerate(zip(concept_tokens, anchor_tokens, strict=True)):
            c_all, a_all, start = concept_states[i], anchor_states[i], c_tok[2]
            c_rows, a_rows = align_token_pairs(
                select_concept_tokens(c_all, start, mode), select_concept_tokens(a_all, a_tok[2], mode)
            )  # (n, d) each
            n = len(c_rows)
            rows, full = [c_rows], [c_all[None]]
            with _timed(seconds, "mining"):
                if realera and config.num_neighbours > 0:
                    nb, _ = mine_neighbours(
                        c_rows, config.num_neighbours, **self._sampler(config), seed=config.seed + i
                    )  # (num, n, d)
                    rows.append(nb.reshape(-1, nb.shape[-1]))  # (num · n, d)
                    full.append(_substitute(c_all, start, nb))
                    n_neighbours += config.num_neighbours
                if realera and config.num_beyond > 0:
                    sampler = {**self._sampler(config), "radius": None}  # beyond's own default radius, 2·D1
                    b, _ = beyond_concept_samples(
                        c_rows,
                        config.num_beyond,
                        **sampler,
                        outside=config.beyond_rule,
                        seed=config.seed + 10_000 + i,
                    )
                    beyond_rows.append(b.reshape(-1, b.shape[-1]))  # (num · n, d)
                    beyond_full.append(_substitute(c_all, start, b))
                    beyond_group += [i] * len(b)
                    n_beyond += config.num_beyond
            rows = torch.cat(rows)  # (k, d)
            erase_rows.append(rows)
            target_rows.append(a_rows.repeat(rows.shape[0] // n, 1))  # (k, d)
            full = torch.cat(full)  # (1 + num, L, d)
            erase_full.append(full)
            anchor_full.append(a_all[None].expand_as(full))
            erase_group += [i] * len(full)

        x0 = None
        if lora:  # the original model's own samples of each concept, before any edit
            with _timed(seconds, "lora_samples"):
                x0 = torch.stack(
                    [self._sample_latents(c[None], config.lora_images, config) for c in concept_states]
                )

        preserve_rows = [
            select_concept_tokens(states, tok[2], mode)
            for states, tok in zip(preserve_states, preserve_tokens, strict=True)
        ]
        d = erase_rows[0].shape[1]
        beyond = torch.cat(beyond_rows) if beyond_rows else torch.empty(0, d)  # (N, d)
        kept = torch.cat(preserve_rows) if preserve_rows else torch.empty(0, d)  # (K, d)
        regularisation = regularisation_embeddings(beyond, list(kept))  # (N + K, d)
        with _timed(seconds, "closed_form"):
            edit = edit_cross_attention(
                self.unet,
                torch.cat(erase_rows),
                torch.cat(target_rows),
                regularisation if len(regularisation) else None,
                lam=config.lam,
                erase_scale=config.erase_scale,
                preserve_scale=config.preserve_scale,
            )
        summary = {
            "num_neighbours": n_neighbours,
            "num_beyond": n_beyond,
            "num_erase_rows": sum(len(r) for r in erase_rows),
            "num_preserve_rows": len(kept),
            "num_regularisation_rows": len(regularisation),
            "edited_layers": len(edit.layers),
            "max_relative_change": edit.max_relative_change,
        }
        if lora:
            keep_states = beyond_full + [s[None] for s in preserve_states]
            keep_group = beyond_group + [i % len(concept_states) for i in range(len(preserve_states))]
            with _timed(seconds, "lora"):
                summary.update(
                    self._lora_stage(
                        config, x0, torch.cat(erase_full), torch.cat(anchor_full), erase_group,
                        torch.cat(keep_states) if keep_states else torch.empty(0, *erase_full[0].shape[1:]),
                        keep_group,
                    )
                )  # fmt: skip
        return summary

    def _lora_stage(self, config, x0, erase_states, anchor_states, erase_group, keep_states, keep_group):
        """Stage 4: add a LoRA, train it (progress bar), merge it or keep it as an adapter."""
        from .noise_alignment import add_lora, train_lora_alignment

        generator = torch.Generator().manual_seed(config.seed + 20_000)
        name = add_lora(self.unet, config.lora_rank, config.lora_alpha)
        with torch.enable_grad(), self.progress_bar(total=config.lora_steps) as bar:
            bar.set_description("RealEra LoRA stage")
            losses = train_lora_alignment(
                self.unet,
                self.scheduler,
                x0,
                erase_states,
                anchor_states,
                keep_states,
                erase_groups=torch.tensor(erase_group),
                keep_groups=torch.tensor(keep_group, dtype=torch.long),
                steps=config.lora_steps,
                lr=config.lora_lr,
                batch_size=config.lora_batch_size,
                beyond_weight=config.lora_beyond_weight,
                generator=generator,
                progress=bar,
            )
        self.unet.requires_grad_(False)
        if config.lora_merge:
            self.unet.fuse_lora(adapter_names=[name])
            self.unet.unload_lora()
        return {
            "lora_adapter": None if config.lora_merge else name,
            "lora_loss_first": losses[0],
            "lora_loss_last": losses[-1],
            "lora_loss_first_10": sum(losses[:10]) / len(losses[:10]),
            "lora_loss_last_10": sum(losses[-10:]) / len(losses[-10:]),
        }

    def _erase_esd(self, concept_states, config, method, seconds) -> dict[str, Any]:
        from .noise_alignment import esd_parameters, train_esd

        generator = torch.Generator().manual_seed(config.seed + 30_000)
        uncond = self._encode(*self._tokenize("", "anchor", allow_empty=True)[:2])[None]
        n_params = sum(p.numel() for p in esd_parameters(self.unet, method).values())
        with _timed(seconds, "esd"), torch.enable_grad(), self.progress_bar(total=config.esd_steps) as bar:
            bar.set_description(method.upper())
            losses = train_esd(
                self.unet,
                self.scheduler,
                torch.stack(concept_states),
                uncond,
                (config.esd_batch_size, *self._latent_shape()),
                steps=config.esd_steps,
                lr=config.esd_lr,
                negative_guidance=config.esd_negative_guidance,
                guidance_scale=config.sample_guidance_scale,
                num_inference_steps=config.sample_steps,
                mode=method,
                generator=generator,
                progress=bar,
            )
        return {
            "trained_parameters": n_params,
            "esd_loss_first": losses[0],
            "esd_loss_last": losses[-1],
        }

    def _latent_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, *size)

    def _sample_latents(self, cond: torch.Tensor, num: int, config: RealEraConfig) -> torch.Tensor:
        """``num`` x_0 latents the current UNet generates for ``cond`` (1, L, d) (guided DDIM)."""
        from .noise_alignment import partial_denoise

        uncond = self._encode(*self._tokenize("", "anchor", allow_empty=True)[:2])[None]
        generator = torch.Generator().manual_seed(config.seed + 40_000)
        latents, _ = partial_denoise(
            self.unet, self.scheduler, cond, uncond, (num, *self._latent_shape()), config.sample_steps,
            guidance_scale=config.sample_guidance_scale, generator=generator,
        )  # fmt: skip
        return latents.float().cpu()

    def _tokenize(self, prompt: str, role: str, allow_empty: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Token ids and attention mask (1, L) as ``__call__`` pads them, and the last subject token's index.

        The subject is the last non-special token (UCE's ``attention_mask.sum() − 2`` for CLIP); a
        prompt with none (empty, or only unknown tokens) is refused unless ``allow_empty``, then the
        first position is used (UCE: the empty guide's BOS row).
        """
        if not isinstance(prompt, str):
            raise ValueError(f"every {role} must be a string, got {prompt!r}")
        limit = self.tokenizer.model_max_length
        enc = self.tokenizer(
            prompt, padding="max_length", max_length=limit, truncation=False, return_tensors="pt"
        )
        ids = enc.input_ids  # (1, L)
        if ids.shape[1] > limit:
            raise ValueError(
                f"{role} {prompt!r} has {ids.shape[1]} tokens, more than the tokenizer's limit {limit}"
            )
        special = torch.tensor(sorted(self.tokenizer.all_special_ids))
        subject = (~torch.isin(ids[0], special)).nonzero().flatten()
        if len(subject) == 0 and not allow_empty:
            raise ValueError(f"{role} {prompt!r} is empty or has no token the tokenizer knows")
        return ids, enc.attention_mask, int(subject[-1]) if len(subject) else 0

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Text-encoder output of one prompt as ``__call__`` computes it: (L, d) in float32."""
        device = self.text_encoder.device
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
        return self.text_encoder(ids.to(device), attention_mask=mask.to(device) if use_mask else None)[0][
            0
        ].float()

    @staticmethod
    def _sampler(config: RealEraConfig) -> dict[str, Any]:
        return {
            "distance_bound": config.distance_bound,
            "cosine_band": (config.cosine_low, config.cosine_high),
            "distribution": config.distribution,
            "distance": config.distance,
            "radius": config.radius,
            "per_token": config.per_token,
            "max_tries": config.max_tries,
        }


def _as_list(prompts: str | list[str], name: str) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"{name} must be strings, got {p!r}")
    return prompts


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0


def _substitute(states: torch.Tensor, start: int, rows: torch.Tensor) -> torch.Tensor:
    """Copies of one prompt's encoding ``states`` (L, d) with rows ``start ..`` replaced by each of ``rows``
    (num, n, d): the full conditioning of mined neighbours / beyond samples. Returns (num, L, d)."""
    out = states[None].repeat(len(rows), 1, 1)
    out[:, start : start + rows.shape[1]] = rows
    return out


def _normalise(prompt: str) -> str:
    return " ".join(prompt.lower().split())
