"""Diffusion concept erasure: ``RealEraPipeline`` (RealEra's four stages, and UCE / ESD-x as baselines on the
same components), the closed-form cross-attention edit (UCE / MACE / RealEra), neighbour-concept mining and
beyond-concept samples, the noise-prediction fine-tuning of the LoRA stage and of ESD, and the small
MiniLM-conditioned text-to-image components of the benchmark and notebook."""

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
