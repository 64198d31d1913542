"""TOFU loader: the Hub dataset ``locuslab/TOFU`` or local JSONL files with the same fields."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, load_dataset

TOFU_HUB_ID = "locuslab/TOFU"
# local file stem -> Hub configuration of locuslab/TOFU
HUB_CONFIGS = {
    "forget01": "forget01",
    "forget05": "forget05",
    "forget10": "forget10",
    "retain": "retain_perturbed",
    "real_authors": "real_authors_perturbed",
    "world_facts": "world_facts_perturbed",
}
SPLITS = (*HUB_CONFIGS, "idk")


def load_tofu(split: str, path: str | os.PathLike | None = None) -> Dataset:
    """Load one TOFU split as a ``datasets.Dataset``.

    ``path`` (or the ``HF_UNLEARN_TOFU_PATH`` environment variable) points to a folder of
    ``<split>.jsonl`` files with TOFU's field names (``question``, ``answer``, optional
    ``perturbed_answer``); without it the split is read from the Hub dataset ``locuslab/TOFU``.
    ``idk`` (the refusal templates) exists only locally: on the Hub it is a file of the TOFU repo.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown TOFU split {split!r}; choose one of {list(SPLITS)}")
    path = path or os.environ.get("HF_UNLEARN_TOFU_PATH")
    if path is not None:
        file = Path(path) / f"{split}.jsonl"
        if not file.is_file():
            raise FileNotFoundError(f"no TOFU file {file}; expected {split}.jsonl in {path}")
        return Dataset.from_json(str(file))
    if split == "idk":
        raise ValueError("the 'idk' templates are not a Hub configuration; pass path= to a local idk.jsonl")
    return load_dataset(TOFU_HUB_ID, HUB_CONFIGS[split], split="train")
