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

import dataclasses
import math
import tempfile
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

METHODS = ("realera", "uce")


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
    seed: int = field(default=0, metadata={"help": "Seed of neighbour mining and beyond-concept sampling."})

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
        for name, low in (("num_neighbours", 0), ("num_beyond", 0), ("max_tries", 1)):
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
        super().save_pretrained(save_directory, *args, push_to_hub=False, **kwargs)
        folder = Path(save_directory)
        self.model_card(hub.get("repo_id")).save(str(folder / "README.md"))
        if push_to_hub:
            self._upload(folder, hub.pop("repo_id", None) or folder.name, **hub)

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
        """Erase ``concepts`` from the UNet's cross-attention (stages 1–3; ``method="uce"``: UCE alone).

        ``anchors`` / ``preserve`` override ``config.anchors`` / ``config.preserve``; with no anchor
        the concepts go to the empty prompt (UCE's default for objects). Every input is checked
        before any weight changes; a ValueError names the offending prompt. Returns a summary
        (counts of rows, edited layers, largest relative weight change) that is also recorded
        in ``self.config.realera``.
        """
        config = config or RealEraConfig()
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
        cross_attention_projections(self.unet)  # raises when the UNet has no cross-attention
        anchor_tokens = [self._tokenize(p, "anchor", allow_empty=True) for p in anchors]
        preserve_tokens = [self._tokenize(p, "preserve concept", allow_empty=True) for p in preserve]

        mode = config.token_selection
        erase_rows, target_rows, beyond_rows = [], [], []
        n_neighbours = n_beyond = 0
        for i, (c_tok, a_tok) in enumerate(zip(concept_tokens, anchor_tokens, strict=True)):
            c_rows, a_rows = align_token_pairs(
                select_concept_tokens(self._encode(*c_tok[:2]), c_tok[2], mode),
                select_concept_tokens(self._encode(*a_tok[:2]), a_tok[2], mode),
            )  # (n, d) each
            rows = [c_rows]
            if method == "realera" and config.num_neighbours > 0:
                nb, _ = mine_neighbours(
                    c_rows, config.num_neighbours, **self._sampler(config), seed=config.seed + i
                )
                rows.append(nb.reshape(-1, nb.shape[-1]))  # (num · n, d)
                n_neighbours += config.num_neighbours
            if method == "realera" and config.num_beyond > 0:
                sampler = {**self._sampler(config), "radius": None}  # beyond's own default radius, 2·D1
                b, _ = beyond_concept_samples(
                    c_rows,
                    config.num_beyond,
                    **sampler,
                    outside=config.beyond_rule,
                    seed=config.seed + 10_000 + i,
                )
                beyond_rows.append(b.reshape(-1, b.shape[-1]))  # (num · n, d)
                n_beyond += config.num_beyond
            rows = torch.cat(rows)  # (k, d)
            erase_rows.append(rows)
            target_rows.append(a_rows.repeat(rows.shape[0] // a_rows.shape[0], 1))  # (k, d)

        preserve_rows = [
            select_concept_tokens(self._encode(ids, m), idx, mode) for ids, m, idx in preserve_tokens
        ]
        d = erase_rows[0].shape[1]
        beyond = torch.cat(beyond_rows) if beyond_rows else torch.empty(0, d)  # (N, d)
        kept = torch.cat(preserve_rows) if preserve_rows else torch.empty(0, d)  # (K, d)
        regularisation = regularisation_embeddings(beyond, list(kept))  # (N + K, d)
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
            "method": method,
            "concepts": concepts,
            "anchors": anchors,
            "preserve": preserve,
            "num_neighbours": n_neighbours,
            "num_beyond": n_beyond,
            "num_erase_rows": sum(len(r) for r in erase_rows),
            "num_preserve_rows": len(kept),
            "num_regularisation_rows": len(regularisation),
            "edited_layers": len(edit.layers),
            "max_relative_change": edit.max_relative_change,
            "config": {**dataclasses.asdict(config), "anchors": anchors, "preserve": preserve},
        }
        history = list((self.config.realera or {}).get("erasures", []))
        self.register_to_config(realera={"erasures": [*history, summary]})
        return summary

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


def _normalise(prompt: str) -> str:
    return " ".join(prompt.lower().split())
