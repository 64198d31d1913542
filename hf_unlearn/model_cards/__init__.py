"""Model cards for unlearned models (``huggingface_hub.ModelCard`` rendered from a Jinja template)."""

from .card import (
    FINGERPRINT_FORMAT,
    TEMPLATE_PATH,
    build_model_card,
    config_diff,
    dataset_fingerprint,
    dataset_source,
    describe_base_model,
    flatten_metrics,
    is_secret_name,
    library_versions,
    looks_like_hub_id,
    metric_split,
    redact,
    to_jsonable,
)

__all__ = [
    "FINGERPRINT_FORMAT",
    "TEMPLATE_PATH",
    "build_model_card",
    "config_diff",
    "dataset_fingerprint",
    "dataset_source",
    "describe_base_model",
    "flatten_metrics",
    "is_secret_name",
    "library_versions",
    "looks_like_hub_id",
    "metric_split",
    "redact",
    "to_jsonable",
]
