"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; MIT licence): 70,000 28×28 grey photographs of clothing.

:func:`load_fashion_mnist` reads the original gzip IDX files from a folder (the layout of the Debian
``dataset-fashion-mnist`` package, ``/usr/share/datasets/fashion-mnist``) or, given a Hub id such as
``zalando-datasets/fashion_mnist``, loads it with ``datasets``. Both give the same arrays.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

CLASS_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
DEBIAN_PATH = "/usr/share/datasets/fashion-mnist"
HUB_ID = "zalando-datasets/fashion_mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file (gzip-compressed or not) as a uint8 array of the shape its header gives."""
    path = Path(path)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise ValueError(f"{path}: element type {data[2]:#x} is not uint8 (0x08)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {array.size} values (truncated file?)")
    return array.reshape(shape)


def load_fashion_mnist(source: str | os.PathLike | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (images, labels)}``: uint8 (N, 28, 28) and int64 (N,).

    ``source``: a folder with the four IDX files, a Hub dataset id, or None (the Debian package path).
    """
    source = DEBIAN_PATH if source is None else source
    folder = Path(source)
    if folder.is_dir():
        out = {}
        for split, (images, labels) in FILES.items():
            missing = [f for f in (images, labels) if not (folder / f).exists()]
            if missing:
                raise FileNotFoundError(f"{folder} lacks the Fashion-MNIST file(s) {missing}")
            x, y = read_idx(folder / images), read_idx(folder / labels).astype(np.int64)
            if len(x) != len(y):
                raise ValueError(f"{folder}: {len(x)} {split} images but {len(y)} labels")
            out[split] = (x, y)
        return out
    if folder.is_absolute() or str(source).startswith(".") or folder.exists():
        raise FileNotFoundError(f"no Fashion-MNIST folder at {source} (pass a folder or a Hub dataset id)")
    import datasets

    ds = datasets.load_dataset(str(source))
    return {
        split: (
            np.stack([np.asarray(im, dtype=np.uint8) for im in ds[split]["image"]]),
            np.asarray(ds[split]["label"], dtype=np.int64),
        )
        for split in ("train", "test")
    }
