"""Loading per-parameter tensors (importances, masks) from safetensors files with errors that name the
file and the tensor."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


def load_safetensors_checked(path, what: str = "safetensors file") -> tuple[dict[str, torch.Tensor], dict]:
    """Read every tensor and the metadata (``{str: str}``) of the safetensors file at ``path``.

    ``what`` names the file's role in the errors ("importance file", "saliency mask"). Raises
    ``FileNotFoundError`` when there is no such file and ``ValueError`` naming the path when it is not a
    valid safetensors file (corrupt, truncated, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except SafetensorError as e:
        raise ValueError(f"{what} {path} is not a valid safetensors file (corrupt or truncated?): {e}") from e


def check_fits_parameters(
    tensors: dict[str, torch.Tensor], params: dict[str, torch.Tensor], what: str
) -> None:
    """Raise ``ValueError`` unless ``tensors`` holds exactly one tensor per name of ``params``, of the same
    shape. The message names ``what``, the missing and unknown names and each wrong shape with the
    expected one."""
    missing = [n for n in params if n not in tensors]
    extra = [n for n in tensors if n not in params]
    not_tensors = [n for n in params if n in tensors and not isinstance(tensors[n], torch.Tensor)]
    shapes = [
        f"{n!r} has shape {tuple(tensors[n].shape)}, expected {tuple(params[n].shape)}"
        for n in params
        if n in tensors and n not in not_tensors and tensors[n].shape != params[n].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} parameters missing (e.g. {format_names(missing)})")
    if extra:
        problems.append(f"{len(extra)} unknown names (e.g. {format_names(extra)})")
    if not_tensors:
        problems.append(f"{len(not_tensors)} values that are not tensors (e.g. {format_names(not_tensors)})")
    if shapes:
        problems.append(f"{len(shapes)} with another shape: {'; '.join(shapes[:2])}")
    if problems:
        raise ValueError(f"{what} does not match the model's parameters: {', '.join(problems)}")


def format_names(names: list[str]) -> str:
    """The first two names quoted, then "..." if there are more: for error messages."""
    return ", ".join(repr(n) for n in names[:2]) + (" ..." if len(names) > 2 else "")
