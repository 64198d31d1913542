"""Tiny image classifiers and 8x8 image datasets built in memory (no downloads)."""

from __future__ import annotations

import datasets
import torch
from transformers import ResNetConfig, ResNetForImageClassification


def tiny_resnet(num_labels: int = 3, seed: int = 0) -> ResNetForImageClassification:
    torch.manual_seed(seed)
    cfg = ResNetConfig(
        num_channels=1,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_labels=num_labels,
        downsample_in_first_stage=False,
    )
    return ResNetForImageClassification(cfg).eval()


def blobs(n: int = 30, num_labels: int = 3, seed: int = 0) -> datasets.Dataset:
    """Images whose mean brightness pattern depends on the class (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    labels = [i % num_labels for i in range(n)]
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    for i, y in enumerate(labels):
        x[i, 0, y * 2 : y * 2 + 3] += 2.0
    return datasets.Dataset.from_dict({"pixel_values": x.tolist(), "labels": labels})
