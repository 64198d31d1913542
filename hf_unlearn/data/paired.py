"""The training set of forget/retain trainers: aligned *views* of several datasets, and their collator.

Each example is ``{"forget": row_i, "retain": row_j, ...}``: views as long as the primary one are aligned
with it by index (FLAT's template answers, IDK's refusals); shorter or longer ones (the retain set) are
paired through a seeded permutation that changes with the epoch, so every epoch pairs forget rows with
other retain rows, reproducibly (also after a resume: :class:`PairingEpochCallback`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from transformers import TrainerCallback

from .classification import ClassificationCollator
from .qa import QACollator

HOLD_MAX_BYTES = 64 * 2**20  # views held in memory as tensors: up to 64 MiB of Arrow rows


class PairedViews(torch.utils.data.Dataset):
    """Index i → {view: row}. Views with ``len == len(primary)`` are aligned with it by index;
    others (the retain set) are drawn through a seeded permutation that changes with the epoch.

    The DataLoader reads a batch with :meth:`__getitems__`: one read per view, from memory for small
    torch-formatted views (classification rows, up to ``hold_max_bytes`` of Arrow data each).
    """

    hold_max_bytes: int = HOLD_MAX_BYTES

    def __init__(self, views: dict[str, Dataset], primary: str = "forget", seed: int = 42):
        self.views, self.primary, self.seed, self.epoch = views, primary, seed, 0
        self.n = len(views[primary])
        self._maps: dict[str, np.ndarray] = {}
        self._held: dict[str, dict | None] = {}  # view -> its columns in memory (None: read from Arrow)
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

    def view_indices(self, indices: list[int]) -> dict[str, list[int]]:
        """The row of each view that items ``indices`` read: the same index, or the epoch's pairing."""
        return {
            name: self._maps[name][indices].tolist() if name in self._maps else list(indices)
            for name in self.views
        }

    def __getitems__(self, indices: list[int]) -> list[dict[str, dict]]:
        """``[self[i] for i in indices]`` with one read per view instead of one per row and view.

        ``torch.utils.data.DataLoader`` (and accelerate's loaders built on it) call this for each batch;
        reading Arrow rows one at a time cost most of a small model's step.
        """
        per_view = {}
        for name, rows in self.view_indices(indices).items():
            if name not in self._held:  # read whole on first use (None: too large, or not tensors)
                self._held[name] = hold_in_memory(self.views[name], self.hold_max_bytes)
            per_view[name] = read_rows(self.views[name], rows, self._held[name])
        return [{name: per_view[name][j] for name in per_view} for j in range(len(indices))]


def read_rows(ds: Dataset, rows: list[int], held: dict | None = None) -> list[dict]:
    """``[ds[r] for r in rows]`` in one read: indexed in ``held`` (``hold_in_memory(ds)``) when given,
    else one Arrow read of all ``rows``."""
    if held is None:
        columns = ds[rows]
    else:
        index = torch.as_tensor(rows, dtype=torch.long)
        columns = {c: v[index] if torch.is_tensor(v) else [v[r] for r in rows] for c, v in held.items()}
    return [{c: values[j] for c, values in columns.items()} for j in range(len(rows))]


def hold_in_memory(ds: Dataset, max_bytes: int = HOLD_MAX_BYTES) -> dict | None:
    """All columns of ``ds`` (``ds[:]``) when it is torch-formatted and its rows take at most ``max_bytes``
    in Arrow, else ``None``.

    Reading a batch of tensor rows from Arrow costs about as much as reading the whole of a small view
    (the formatter converts each gathered row separately), and more than a small model's step; QA views
    (plain lists) are cheap to read per batch and would take far more memory as Python lists.
    """
    if ds.format["type"] != "torch" or len(ds) == 0:
        return None
    table = ds.data
    if table.nbytes * len(ds) / max(table.num_rows, 1) > max_bytes:
        return None
    return dict(ds[:])


@dataclass
class PairedCollator:
    """Pads each view of a list of :class:`PairedViews` items separately."""

    pad_token_id: int | None
    task: str = "causal_lm"
    collator: Callable[[list[dict]], dict[str, torch.Tensor]] | None = (
        None  # a task adapter's; wins over task
    )

    def __call__(self, items: list[dict[str, dict]]) -> dict[str, dict[str, torch.Tensor]]:
        pad = self.view_collator()
        return {name: pad([it[name] for it in items]) for name in items[0]}

    def view_collator(self):
        """The collator of one view: ``collator`` if given, else QA rows or classification rows."""
        if self.collator is not None:
            return self.collator
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
