"""The training set of forget/retain trainers: aligned *views* of several datasets, and their collator.

Each example is ``{"forget": row_i, "retain": row_j, ...}``: views as long as the primary one are aligned
with it by index (FLAT's template answers, IDK's refusals); shorter or longer ones (the retain set) are
paired through a seeded permutation that changes with the epoch, so every epoch pairs forget rows with
other retain rows, reproducibly (also after a resume: :class:`PairingEpochCallback`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from transformers import TrainerCallback

from .classification import ClassificationCollator
from .qa import QACollator


class PairedViews(torch.utils.data.Dataset):
    """Index i → {view: row}. Views with ``len == len(primary)`` are aligned with it by index;
    others (the retain set) are drawn through a seeded permutation that changes with the epoch.
    """

    def __init__(self, views: dict[str, Dataset], primary: str = "forget", seed: int = 42):
        self.views, self.primary, self.seed, self.epoch = views, primary, seed, 0
        self.n = len(views[primary])
        self._maps: dict[str, np.ndarray] = {}
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw the pairing of epoch ``epoch``. Accelerate's loader calls it at each fresh epoch but
        not for a loader resumed mid-epoch, so :class:`UnlearnTrainer` also calls it from
        ``on_epoch_begin`` (see :class:`PairingEpochCallback`)."""
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        for name, ds in self.views.items():
            if name != self.primary and len(ds) != self.n:
                reps = -(-self.n // len(ds))
                self._maps[name] = np.concatenate([rng.permutation(len(ds)) for _ in range(reps)])[: self.n]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, dict]:
        return {
            name: ds[int(self._maps[name][i]) if name in self._maps else i] for name, ds in self.views.items()
        }


@dataclass
class PairedCollator:
    """Pads each view of a list of :class:`PairedViews` items separately."""

    pad_token_id: int | None
    task: str = "causal_lm"

    def __call__(self, items: list[dict[str, dict]]) -> dict[str, dict[str, torch.Tensor]]:
        pad = self.view_collator()
        return {name: pad([it[name] for it in items]) for name in items[0]}

    def view_collator(self):
        """The collator of one view (QA rows or classification rows)."""
        if self.task == "classification":
            return ClassificationCollator(self.pad_token_id)
        return QACollator(self.pad_token_id)


class PairingEpochCallback(TrainerCallback):
    """Keeps :class:`PairedViews` on the trainer's epoch, also for a run resumed mid-epoch.

    At ``on_epoch_begin`` ``state.epoch`` is the epoch about to run (an integer for a fresh epoch, the
    checkpoint's fractional epoch when resuming), so its floor is the epoch whose pairing is needed.
    """

    def __init__(self, dataset: PairedViews):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(math.floor((state.epoch or 0.0) + 1e-9))
        if self.dataset.epoch != epoch:
            self.dataset.set_epoch(epoch)
