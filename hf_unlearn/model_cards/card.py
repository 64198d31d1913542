"""Unlearning model cards: small pure helpers and :func:`build_model_card`.

Every unlearning trainer writes a ``README.md`` built here: a ``huggingface_hub.ModelCard`` rendered from
the Jinja template ``templates/unlearn_card.md``. The card records *what* was unlearned without ever
containing it: the forget set appears only as its size, its column names and a SHA-256 fingerprint
(:func:`dataset_fingerprint`). Configuration is reduced to the fields that differ from the defaults
(:func:`config_diff`), with secrets and local paths removed.

Secrets policy (applies to everything written into a card):

* a field or key whose *name* looks secret is dropped: its name, split on ``_``/``-``/``.``/camelCase,
  contains one of ``token``, ``secret``, ``password``, ``passwd``, ``pwd``, ``key``, ``apikey``,
  ``auth``, ``credential(s)``, ``cookie`` (so ``hub_token``, ``api_key``,
  ``push_to_hub_token`` go, while ``max_new_tokens`` or ``average_tokens_across_devices`` stay);
* any string that looks like a Hugging Face access token (``hf_`` followed by 30+ letters/digits) is
  replaced by ``<redacted>``, in values and in the free-text ``notes``.

Local paths policy: ``output_dir``, ``logging_dir``, ``resume_from_checkpoint`` and other fields named
``*_dir`` / ``*_path`` / ``*_file`` are dropped from the config table (they are machine-specific and may
reveal user names). ``hub_model_id`` and ``run_name`` stay: they are public names, not paths. A base
model given as a local path goes into the text only (its last path component), never into the
``base_model`` metadata, which the Hub validates as a repo id.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePath
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..registry import Paper

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "unlearn_card.md"

#: Version tag of the canonical serialisation used by :func:`dataset_fingerprint`.
FINGERPRINT_FORMAT = "hf_unlearn-jsonl-sha256-v1"

BASE_TAGS = ("hf_unlearn", "unlearning")

_SECRET_PARTS = frozenset(
    {
        "token",
        "secret",
        "secrets",
        "password",
        "passwd",
        "pwd",
        "key",
        "apikey",
        "auth",
        "credential",
        "credentials",
        "cookie",
    }
)
_SECRET_SUBSTRINGS = ("secret", "password", "passwd", "apikey", "api_key", "credential")
_PATH_FIELDS = frozenset(
    {"output_dir", "logging_dir", "resume_from_checkpoint", "cache_dir", "overwrite_output_dir"}
)
_PATH_SUFFIXES = ("_dir", "_path", "_file", "_filename")
_HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{30,}")
REDACTED = "<redacted>"

# library key -> distribution name, in the order shown on the card
_LIBRARIES = {
    "hf_unlearn": "hf-unlearn",
    "transformers": "transformers",
    "torch": "torch",
    "peft": "peft",
    "trl": "trl",
    "accelerate": "accelerate",
    "datasets": "datasets",
    "huggingface_hub": "huggingface-hub",
}

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


# ------------------------------------------------------------------------------------ secrets
def is_secret_name(name: str) -> bool:
    """Whether a field/key name looks like it holds a secret (see the module docstring)."""
    lowered = name.lower()
    if any(s in lowered for s in _SECRET_SUBSTRINGS):
        return True
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return any(part in _SECRET_PARTS for part in re.split(r"[_\-.\s]+", spaced) if part)


def redact(text: str) -> str:
    """``text`` with anything that looks like a Hugging Face access token replaced by ``<redacted>``."""
    return _HF_TOKEN_RE.sub(REDACTED, text)


def _is_path_field(name: str) -> bool:
    return name in _PATH_FIELDS or name.endswith(_PATH_SUFFIXES)


# ---------------------------------------------------------------------------- JSON friendliness
def to_jsonable(value: Any) -> Any:
    """A JSON/YAML-friendly copy of ``value``: enums by value, dataclasses and mappings as dicts
    (secret-looking keys dropped), sequences and sets as lists, paths and unknown objects as strings,
    and token-looking strings redacted. Non-finite floats become strings (``"nan"``, ``"inf"``)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, PurePath):
        return redact(str(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items() if not is_secret_name(str(k))}
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return to_jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):
        return to_jsonable(value.item())
    return redact(str(value))


# --------------------------------------------------------------------------------- fingerprint
def _canonical_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"__bytes__": bytes(obj).hex()}
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, enum.Enum):
        return obj.value
    raise TypeError(f"dataset_fingerprint cannot serialise a value of type {type(obj).__name__}")


def _canonical_row(row: Mapping[str, Any], columns: Sequence[str]) -> bytes:
    obj = {c: row[c] for c in columns}
    text = json.dumps(
        obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_canonical_default
    )
    return text.encode("utf-8") + b"\n"


def _rows_and_columns(
    dataset: Any, columns: Sequence[str] | None
) -> tuple[Iterable[Mapping], list[str], int]:
    names = getattr(dataset, "column_names", None)
    if names is not None and hasattr(dataset, "iter"):  # datasets.Dataset
        cols = list(columns) if columns is not None else sorted(names)
        missing = [c for c in cols if c not in names]
        if missing:
            raise KeyError(f"columns {missing} not in the dataset (has {names})")

        def rows():
            for batch in dataset.select_columns(cols).iter(batch_size=1000):
                n = len(next(iter(batch.values()))) if batch else 0
                for i in range(n):
                    yield {c: batch[c][i] for c in cols}

        return rows(), cols, len(dataset)
    if isinstance(dataset, Mapping):  # dict of columns
        cols = list(columns) if columns is not None else sorted(dataset)
        n = len(dataset[cols[0]]) if cols else 0
        return ({c: dataset[c][i] for c in cols} for i in range(n)), cols, n
    rows = list(dataset)  # sequence of mappings
    if columns is not None:
        cols = list(columns)
    else:
        cols = sorted({k for r in rows for k in r})
    return rows, cols, len(rows)


def dataset_fingerprint(dataset: Any, columns: Sequence[str] | None = None) -> dict:
    """Describe a dataset by size and a SHA-256 fingerprint, never by its content.

    ``dataset`` is a ``datasets.Dataset``, a sequence of row mappings, or a mapping of columns.
    ``columns`` selects the columns to hash (default: all, sorted by name).

    The hash is order-sensitive and defined as: SHA-256 over the concatenation, in row order, of one line
    per row, each line being ``json.dumps({column: value}, sort_keys=True, ensure_ascii=False,
    separators=(",", ":"))`` encoded as UTF-8 plus ``"\\n"`` (numpy/torch values via ``tolist()``, bytes
    as ``{"__bytes__": hex}``, dates via ``isoformat()``). The same rows in the same order give the same
    fingerprint on any machine; changing, adding, removing or reordering a row changes it.

    Returns ``{"num_rows", "columns", "sha256", "format"}``.
    """
    rows, cols, n = _rows_and_columns(dataset, columns)
    h = hashlib.sha256()
    count = 0
    for row in rows:
        h.update(_canonical_row(row, cols))
        count += 1
    if count != n:  # pragma: no cover - defensive, iterators and len() disagree
        n = count
    return {"num_rows": n, "columns": list(cols), "sha256": h.hexdigest(), "format": FINGERPRINT_FORMAT}


# -------------------------------------------------------------------------------- config diff
def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


_EMPTY = (None, False, "", "none", "no", [], {}, ())


def _same(value: Any, default: Any) -> bool:
    """Equal as JSON, or both "empty" (``report_to="none"`` normalised to ``[]`` by ``__post_init__``),
    or a ``None`` ("auto") default that ``__post_init__`` resolved to a bool (``disable_tqdm``) or to a
    default instance (``accelerator_config``)."""
    if default is None and isinstance(value, bool):
        return True
    try:
        if default is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
            default = type(value)()
        a, b = to_jsonable(value), to_jsonable(default)
    except Exception:  # pragma: no cover - exotic values
        return False
    return a == b or (a in _EMPTY and b in _EMPTY)


def config_diff(args: Any) -> dict:
    """The fields of a dataclass config (e.g. a ``TrainingArguments`` subclass) whose values differ from
    the class defaults, as a JSON-friendly ``{name: value}`` dict in field order.

    "Default" is the dataclass field default; empty-like values (None, "none", [], ...) count as equal,
    so ``__post_init__`` normalisation such as ``report_to="none" -> []`` is not reported. No default
    instance is built: constructing a ``TrainingArguments`` resets accelerate's global state, which
    would silently turn a running ``torchrun`` job into single-process training. Secret-looking
    fields (``hub_token`` ...) and local-path fields (``output_dir``, ``logging_dir`` ...) are never
    included, see the module docstring. A plain mapping is accepted too and filtered the same way.
    """
    if isinstance(args, Mapping):
        return {
            k: to_jsonable(v)
            for k, v in args.items()
            if not is_secret_name(str(k)) and not _is_path_field(str(k))
        }
    if not dataclasses.is_dataclass(args) or isinstance(args, type):
        raise TypeError(f"config_diff expects a dataclass instance or a mapping, got {type(args).__name__}")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(args):
        name = f.name
        if not f.init or name.startswith("_") or is_secret_name(name) or _is_path_field(name):
            continue
        value = getattr(args, name, None)
        if not _same(value, _field_default(f)):
            out[name] = to_jsonable(value)
    return out


def without_secrets(args: Any) -> Any:
    """A shallow copy of a dataclass config with every secret-looking field set to ``None`` (e.g. to
    pickle ``TrainingArguments`` into ``training_args.bin`` without the ``hub_token``)."""
    import copy

    clone = copy.copy(args)
    for f in dataclasses.fields(args):
        if is_secret_name(f.name) and getattr(clone, f.name, None) is not None:
            object.__setattr__(clone, f.name, None)
    return clone


# --------------------------------------------------------------------------- library versions
def library_versions() -> dict[str, str]:
    """Installed versions of hf_unlearn and the Hugging Face libraries it builds on (missing ones
    skipped), plus the Python version."""
    out: dict[str, str] = {}
    for key, dist in _LIBRARIES.items():
        try:
            out[key] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            if key == "hf_unlearn":
                from .. import __version__

                out[key] = __version__
    out["python"] = platform.python_version()
    return out


# ---------------------------------------------------------------------------------- the card
def looks_like_hub_id(name: str | None) -> bool:
    """Whether ``name`` can go into ``base_model`` metadata: a Hub repo id, not an existing local path."""
    if not name or not isinstance(name, str) or len(name) > 96:
        return False
    if not _REPO_ID_RE.fullmatch(name) or ".." in name or "--" in name or name.endswith((".", "-")):
        return False
    return not os.path.exists(name)


def _pretty(name: str) -> str:
    text = name.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _metric_rows(metrics: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    stages = [
        (s, label)
        for s, label in (("before", "Before"), ("after", "After"), ("retain_model", "Retain model"))
        if metrics.get(s)
    ]
    names: list[str] = []
    for s, _ in stages:
        names += [n for n in metrics[s] if n not in names]
    header = ["Metric", *[label for _, label in stages]]
    with_delta = bool(metrics.get("before")) and bool(metrics.get("after"))
    if with_delta:
        header.append("Change (after - before)")
    rows = []
    for n in names:
        row = [_cell(n)] + [_cell(_fmt(metrics[s][n])) if n in metrics[s] else "–" for s, _ in stages]
        if with_delta:
            b, a = metrics["before"].get(n), metrics["after"].get(n)
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
            row.append(f"{a - b:+.4g}" if ok else "–")
        rows.append(row)
    return header, rows


def _clean_metrics(metrics: Mapping | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for stage, values in (metrics or {}).items():
        if values:
            out[str(stage)] = {
                str(k): to_jsonable(v) for k, v in values.items() if not is_secret_name(str(k))
            }
    return out


def build_model_card(
    *,
    method_id: str,
    method_name: str,
    paper: Paper | None,
    base_model: str | None,
    config: Mapping | Any,
    forget: Mapping | None,
    retain: Mapping | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    model_name: str | None = None,
    extra_tags: Iterable[str] = (),
    notes: str | None = None,
    eval_dataset_type: str = "forget-set",
    eval_dataset_name: str = "Forget set",
    datasets: Sequence[str] | None = None,
    license: str | None = None,
    library_name: str = "transformers",
    pipeline_tag: str | None = "text-generation",
    auto_class: str = "AutoModelForCausalLM",
    repo_id: str | None = None,
) -> ModelCard:
    """Build the unlearning model card.

    Args:
        method_id / method_name / paper: the unlearning method (``_name``, display name, ``_paper``).
        base_model: the model that was unlearned; put into ``base_model`` metadata only when it is a Hub
            repo id (a local path is mentioned in the text by its last component).
        config: output of :func:`config_diff` (a dataclass config is diffed here).
        forget / retain: fingerprints from :func:`dataset_fingerprint` (``retain`` may be ``None``).
        metrics: ``{"before": {...}, "after": {...}, "retain_model": {...}}`` flat ``name -> float``
            dicts; "after" values become ``model-index`` eval results (this model's own results) on the
            dataset ``eval_dataset_type`` / ``eval_dataset_name``; all three stages are rendered as a
            table and stored under the ``unlearning`` metadata key.
        model_name: name used in ``model-index`` and the title (default ``<base>-<method_id>-unlearned``).
        extra_tags: added after ``hf_unlearn``, ``unlearning`` and ``method_id``.
        notes: free text appended to the card (token-looking strings redacted).
        repo_id: Hub repo id the card will live in, for the loading snippet (default ``model_name``).
    """
    config_dict = config_diff(config if config is not None else {})
    metrics_clean = _clean_metrics(metrics)
    forget_info = to_jsonable(dict(forget)) if forget else None
    retain_info = to_jsonable(dict(retain)) if retain else None

    hub_base = base_model if looks_like_hub_id(base_model) else None
    base_label = base_model
    if base_model and hub_base is None:
        base_label = PurePath(str(base_model).rstrip("/\\")).name or "local checkpoint"
    if model_name is None:
        stem = (hub_base or base_label or "model").split("/")[-1]
        model_name = f"{stem}-{method_id}-unlearned"
    model_name = redact(str(model_name))

    tags: list[str] = []
    for t in (*BASE_TAGS, method_id, *extra_tags):
        if t and str(t) not in tags:
            tags.append(str(t))

    after = metrics_clean.get("after") or {}
    eval_results = [
        EvalResult(
            task_type=pipeline_tag or "text-generation",
            dataset_type=eval_dataset_type,
            dataset_name=eval_dataset_name,
            metric_type=name,
            metric_name=_pretty(name),
            metric_value=value,
        )
        for name, value in after.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]

    unlearning_meta: dict[str, Any] = {"method": method_id}
    if paper is not None and paper.arxiv_id:
        unlearning_meta["paper"] = f"arxiv:{paper.arxiv_id}"
    if forget_info:
        unlearning_meta["forget_set"] = {
            k: forget_info[k] for k in ("num_rows", "sha256") if k in forget_info
        }
    if retain_info:
        unlearning_meta["retain_set"] = {
            k: retain_info[k] for k in ("num_rows", "sha256") if k in retain_info
        }
    if metrics_clean:
        unlearning_meta["metrics"] = metrics_clean

    card_data = ModelCardData(
        base_model=hub_base,
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        license=license,
        datasets=list(datasets) if datasets else None,
        tags=tags,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
        unlearning=unlearning_meta,
    )
    header, rows = _metric_rows(metrics_clean) if metrics_clean else ([], [])
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        title=model_name,
        model_id=redact(repo_id or model_name),
        method_id=method_id,
        method_name=method_name,
        paper=paper,
        paper_link=paper.link if paper is not None else None,
        bibtex=paper.bibtex.strip() if paper is not None and paper.bibtex else None,
        base_model_id=hub_base,
        base_model_label=base_label,
        forget=forget_info,
        retain=retain_info,
        config_rows=[(_cell(k), _cell(json.dumps(v, ensure_ascii=False))) for k, v in config_dict.items()],
        metric_header=header,
        metric_rows=rows,
        has_retain_model=bool(metrics_clean.get("retain_model")),
        versions=library_versions(),
        eval_dataset_name=eval_dataset_name,
        auto_class=auto_class,
        notes=redact(notes) if notes else None,
    )
    # Last line of defence: nothing token-shaped survives into the saved README.md.
    if _HF_TOKEN_RE.search(card.content):
        card = ModelCard(redact(card.content))
    return card


def method_card_info(method: Any) -> dict:
    """``method_id``, ``method_name``, ``paper`` and ``extra_tags`` of a registered method class or
    instance, ready to pass to :func:`build_model_card`."""
    cls = method if isinstance(method, type) else type(method)
    return {
        "method_id": cls._name,
        "method_name": getattr(cls, "_display_name", None) or cls.__name__.removesuffix("Trainer"),
        "paper": cls._paper,
        "extra_tags": tuple(getattr(cls, "_tag_names", ()) or ()),
    }
