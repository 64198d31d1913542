"""Diffusion concept erasure (issue 9, in progress): closed-form cross-attention editing (UCE / MACE /
RealEra's edit), RealEra's neighbour-concept mining and beyond-concept samples, and ``RealEraPipeline``
(stages 1–3 and plain UCE; the LoRA stage is not built yet)."""

from .closed_form import (
    TOKEN_SELECTIONS,
    ClosedFormEditSummary,
    align_token_pairs,
    closed_form_weight,
    concept_embeddings,
    cross_attention_projections,
    edit_cross_attention,
    last_subject_index,
    select_concept_tokens,
)
from .components import PixelShuffleAutoencoder, minilm_text_encoder, small_unet, text_to_image_pipeline
from .neighbours import SamplingStats, beyond_concept_samples, mine_neighbours, regularisation_embeddings
from .realera import RealEraConfig, RealEraPipeline

__all__ = [
    "TOKEN_SELECTIONS",
    "ClosedFormEditSummary",
    "PixelShuffleAutoencoder",
    "RealEraConfig",
    "RealEraPipeline",
    "SamplingStats",
    "align_token_pairs",
    "beyond_concept_samples",
    "closed_form_weight",
    "concept_embeddings",
    "cross_attention_projections",
    "edit_cross_attention",
    "last_subject_index",
    "mine_neighbours",
    "regularisation_embeddings",
    "minilm_text_encoder",
    "select_concept_tokens",
    "small_unet",
    "text_to_image_pipeline",
]
