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

Metrics: :func:`flatten_metrics` turns an evaluation result as the evaluation functions return it
(``evaluate_tofu``'s nested ``{"splits": {"forget": {...}}}``, ``evaluate_unlearning``'s flat dict, numpy
or torch scalars) into flat ``name -> float`` entries, nested keys joined by ``/`` (``forget/probability``).
:func:`metric_split` says which data a metric was measured on (``forget/...``, ``retain_...``,
``forget_quality``, ``UA``/``RA``/``TA``, ...), and ``model-index`` lists each metric under that dataset.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import numbers
import os
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePath
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..papers import Paper

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
# One card path: each kind of method (the class's ``_card_kind``) has its Jinja template.
CARD_TEMPLATES = {
    "trainer": "unlearn_card.md",
    "logits_processor": "guard_card.md",
    "pipeline": "pipeline_card.md",
    "continual": "continual_card.md",
}
TEMPLATE_PATH = TEMPLATES_DIR / CARD_TEMPLATES["trainer"]


def render_card(kind: str, card_data: ModelCardData, **context) -> ModelCard:
    """Render the card of a method of ``kind`` (``"trainer"``, ``"logits_processor"``, ...) from its
    template; nothing token-shaped survives into the text (last line of defence)."""
    if kind not in CARD_TEMPLATES:
        raise ValueError(
            f"no model-card template for methods of kind {kind!r}; known: {sorted(CARD_TEMPLATES)}"
        )
    card = ModelCard.from_template(
        card_data, template_path=str(TEMPLATES_DIR / CARD_TEMPLATES[kind]), **context
    )
    if _HF_TOKEN_RE.search(card.content):
        card = ModelCard(redact(card.content))
    return card


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


# ------------------------------------------------------------------------------------- metrics
#: keys whose mapping value is a container of splits, not a level of the metric name
_TRANSPARENT_KEYS = frozenset({"splits"})
#: metrics that need no split prefix to say where they were measured
_METRIC_SPLITS = {
    "forget_quality": "forget",  # KS test of the forget-set truth ratios against a retain model
    "ks_statistic": "forget",
    "ua": "forget",  # classification: unlearning accuracy = 100 - acc(forget)
    "mia": "forget",  # MIA-efficacy on the forget samples
    "entropy_mia": "forget",
    "mia_auc": "forget",  # min-k% MIA, forget (members) vs holdout
    "ra": "retain",
    "ta": "test",
    "model_utility": "utility",  # harmonic mean over retain, real_authors and world_facts
}
_PREFIX_SPLITS = ("forget", "retain", "holdout", "test", "real_authors", "world_facts")
#: bookkeeping values: shown in the table, never listed as model-index results
_NOT_RESULTS = frozenset({"num_samples", "num_rows", "eval_seconds", "runtime"})


def _scalar(value: Any) -> float | int | None:
    """``value`` as a Python float (int for integers) when it is one real number (Python, numpy, or a
    0-d numpy array / torch tensor), else None."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return None
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):  # 0-d array/tensor
        value = value.item()
        if isinstance(value, bool):
            return None
    if isinstance(value, numbers.Integral):  # int, numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # float, numpy floating scalars
        return float(value)
    return None


def flatten_metrics(metrics: Mapping, what: str = "metrics") -> dict[str, float | int]:
    """Flat ``name -> float`` view of an evaluation result, for the model card.

    Nested mappings are joined with ``/`` (``{"forget": {"probability": p}}`` -> ``forget/probability``);
    a ``"splits"`` mapping is a container and adds no level, so ``evaluate_tofu(...)`` gives
    ``forget/probability``, ``retain/truth_ratio``, ..., ``forget_quality``, ``model_utility``. Numpy and
    0-d torch scalars become Python numbers (integers stay integers); lists and arrays (per-sample values such as
    ``forget_truth_ratios``), strings, booleans and ``None`` are skipped, and so are secret-looking keys.
    Raises ``ValueError`` when no number is left, ``TypeError`` when ``metrics`` is not a mapping.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"{what} must be a mapping of metric names to numbers, got {type(metrics).__name__}")
    out: dict[str, float | int] = {}

    def walk(prefix: str, values: Mapping) -> None:
        for key, value in values.items():
            key = str(key)
            if is_secret_name(key):
                continue
            if isinstance(value, Mapping):
                walk(prefix if key in _TRANSPARENT_KEYS else f"{prefix}{key}/", value)
                continue
            number = _scalar(value)
            if number is not None:
                out[prefix + key] = number

    walk("", metrics)
    if not out:
        raise ValueError(
            f"no scalar metric in {what} (keys: {sorted(map(str, metrics))}): give numbers, possibly nested "
            "in dicts, e.g. the result of evaluate_tofu(...) or evaluate_unlearning(...) as it is"
        )
    return out


def metric_split(name: str) -> str | None:
    """The data a (flattened) metric was measured on: the part before ``/`` (``forget/probability`` ->
    ``forget``), a known split prefix (``retain_rouge_l`` -> ``retain``), or a known metric
    (``forget_quality``/``UA``/``MIA`` -> ``forget``, ``RA`` -> ``retain``, ``TA`` -> ``test``,
    ``model_utility`` -> ``utility``). ``None`` when it cannot be told."""
    if "/" in name:
        return name.split("/", 1)[0] or None
    low = name.lower()
    if low in _METRIC_SPLITS:
        return _METRIC_SPLITS[low]
    for split in _PREFIX_SPLITS:
        if low.startswith(split + "_"):
            return split
    return "forget" if "mia" in low.split("_") else None


def _is_result(name: str) -> bool:
    last = name.rsplit("/", 1)[-1].lower()
    return last not in _NOT_RESULTS and not last.endswith(("_seconds", "_runtime"))


# ------------------------------------------------------------------------------ dataset names
def _packaged_builders() -> frozenset[str]:
    try:
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
    except Exception:  # pragma: no cover - datasets is a dependency
        return frozenset({"json", "csv", "parquet", "arrow", "text", "generator", "pandas"})
    return frozenset(_PACKAGED_DATASETS_MODULES)


def dataset_source(dataset: Any) -> dict | None:
    """Where a ``datasets.Dataset`` comes from, when it says so: ``{"name", "hub_id", "config",
    "split"}``, or ``None`` for a dataset built in memory (``from_list``/``from_dict``) or from loose
    files (``from_json``: only the builder's name is known).

    ``hub_id`` is set for a dataset loaded from the Hub, read from its cache folder
    (``<namespace>___<name>``, the layout of ``load_dataset``; the name is lower-cased there, which the
    Hub resolves); a dataset loaded from a local folder has its folder name as ``name`` and no ``hub_id``.
    """
    info = getattr(dataset, "info", None)
    name = getattr(info, "dataset_name", None)
    if not name or not isinstance(name, str):
        return None
    if name == getattr(info, "builder_name", None) and name in _packaged_builders():
        return None
    hub_id = None
    suffix = "___" + name
    for entry in getattr(dataset, "cache_files", None) or []:
        filename = entry.get("filename") if isinstance(entry, Mapping) else None
        for part in PurePath(str(filename or "")).parts:
            if part.endswith(suffix) and len(part) > len(suffix):
                candidate = f"{part[: -len(suffix)]}/{name}"
                if looks_like_hub_id(candidate):
                    hub_id = candidate
    config = getattr(info, "config_name", None)
    split = getattr(dataset, "split", None)
    return {
        "name": redact(hub_id or name),
        "hub_id": hub_id,
        "config": config if config and config != "default" else None,
        "split": str(split) if split is not None else None,
    }


# --------------------------------------------------------------------------------- base model
def looks_like_hub_id(name: str | None) -> bool:
    """Whether ``name`` can go into ``base_model`` metadata: a Hub repo id, not an existing local path."""
    if not name or not isinstance(name, str) or len(name) > 96:
        return False
    if not _REPO_ID_RE.fullmatch(name) or ".." in name or "--" in name or name.endswith((".", "-")):
        return False
    return not os.path.exists(name)


def _cached_hub_file(repo_id: str, filename: str, cache_dir: Any = None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    except Exception:
        return None
    return path if isinstance(path, str) else None


def _card_metadata(path: Any) -> dict:
    if not path:
        return {}
    try:
        return ModelCard.load(path, ignore_metadata_errors=True).data.to_dict()
    except Exception:
        return {}


def describe_base_model(
    name_or_path: str | None, architecture: str | None = None, cache_dir: Any = None
) -> dict:
    """What can honestly be said about the model that was unlearned, from ``config._name_or_path``.

    Returns ``{"kind", "hub_id", "label", "architecture", "license", "license_name", "license_link",
    "parents"}``. ``kind`` is ``"hub"`` (a Hub repo id: ``namespace/name``, or a single name found in the
    local Hub cache), ``"local"`` (a local folder: ``label`` is its last path component), ``"name"``
    (another name), ``"config"`` (no name: a model built from a configuration in code) or ``None``.
    The license (and the base models, ``parents``, of a local checkpoint) are read from the base model's
    own card: the folder's ``README.md``, or the Hub card when it is in the local cache. Nothing is
    downloaded.
    """
    name = str(name_or_path or "").strip()
    kind = hub_id = label = None
    card_file = None
    if name and looks_like_hub_id(name):
        card_file = _cached_hub_file(name, "README.md", cache_dir)
        if "/" in name or card_file or _cached_hub_file(name, "config.json", cache_dir):
            kind, hub_id = "hub", name
        else:
            kind, label = "name", name
    elif name:
        kind = "local"
        label = PurePath(name.rstrip("/\\")).name or "local checkpoint"
        if os.path.isfile(os.path.join(name, "README.md")):
            card_file = os.path.join(name, "README.md")
    elif architecture:
        kind = "config"
    meta = _card_metadata(card_file)
    license_id = meta.get("license") if isinstance(meta.get("license"), str) else None
    parents: list[str] = []
    if kind == "local":
        raw = meta.get("base_model")
        for parent in [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []:
            if isinstance(parent, str) and looks_like_hub_id(parent) and parent not in parents:
                parents.append(parent)
    return {
        "kind": kind,
        "hub_id": hub_id,
        "label": redact(label) if label else None,
        "architecture": architecture,
        "license": license_id,
        "license_name": meta.get("license_name") if license_id == "other" else None,
        "license_link": meta.get("license_link") if license_id == "other" else None,
        "parents": parents,
    }


# ---------------------------------------------------------------------------------- the card
def _pretty(name: str) -> str:
    text = name.replace("_", " ").replace("-", " ").replace("/", " ").strip()
    return text[:1].upper() + text[1:]


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


_BASE_DATASETS = {
    "forget": ("forget-set", "Forget set"),
    "retain": ("retain-set", "Retain set"),
    "utility": ("tofu-model-utility", "Model-utility sets (retain, real authors, world facts)"),
    None: ("unspecified", "Evaluation data (not specified)"),
}


def _eval_datasets(forget_type: str, forget_name: str, sources: Mapping[str, Mapping | None]) -> Any:
    """``split -> {"type", "name", "config", "split"}`` of the model-index dataset of each split."""
    cache: dict[Any, dict] = {}

    def lookup(split: str | None) -> dict:
        if split in cache:
            return cache[split]
        if split in _BASE_DATASETS:
            d_type, d_name = _BASE_DATASETS[split]
        else:
            d_type, d_name = f"{str(split).replace('_', '-')}-set", f"{_pretty(str(split))} set"
        if split == "forget":
            d_type, d_name = forget_type, forget_name
        entry = {"type": d_type, "name": d_name, "config": None, "split": None}
        source = sources.get(split) if split is not None else None
        if source and source.get("hub_id"):
            hub = source["hub_id"] + (f" {source['config']}" if source.get("config") else "")
            entry = {
                "type": source["hub_id"],
                "name": f"{d_name} ({hub})",
                "config": source.get("config"),
                "split": source.get("split"),
            }
        cache[split] = entry
        return entry

    return lookup


def _metric_rows(
    metrics: Mapping[str, Mapping[str, Any]], dataset_of: Any
) -> tuple[list[str], list[list[str]]]:
    stages = [
        (s, label)
        for s, label in (("before", "Before"), ("after", "After"), ("retain_model", "Retain model"))
        if metrics.get(s)
    ]
    names: list[str] = []
    for s, _ in stages:
        names += [n for n in metrics[s] if n not in names]
    header = ["Metric", "Measured on", *[label for _, label in stages]]
    with_delta = bool(metrics.get("before")) and bool(metrics.get("after"))
    if with_delta:
        header.append("Change (after - before)")
    rows = []
    for n in names:
        row = [_cell(n), _cell(dataset_of(metric_split(n))["name"])]
        row += [_cell(_fmt(metrics[s][n])) if n in metrics[s] else "–" for s, _ in stages]
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


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


METHOD_KINDS = ("fine-tune", "edit")


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
    method_kind: str = "fine-tune",
    card_kind: str = "trainer",
    base_architecture: str | None = None,
    forget_source: Mapping | None = None,
    retain_source: Mapping | None = None,
    language: str | Sequence[str] | None = None,
) -> ModelCard:
    """Build the unlearning model card.

    Args:
        method_id / method_name / paper: the unlearning method (``_name``, display name, ``_paper``).
        base_model: the model that was unlearned (``config._name_or_path``), described by
            :func:`describe_base_model`: it goes into ``base_model`` metadata only when it is a Hub repo
            id; a local path is named in the text by its last component, with ``base_architecture``
            (the model class), and an empty name with an architecture reads "a ``X`` built from a
            configuration".
        config: output of :func:`config_diff` (a dataclass config is diffed here).
        forget / retain: fingerprints from :func:`dataset_fingerprint` (``retain`` may be ``None``).
        metrics: ``{"before": {...}, "after": {...}, "retain_model": {...}}`` flat ``name -> float``
            dicts (:func:`flatten_metrics`); "after" values become ``model-index`` eval results (this
            model's own results), each under the dataset it was measured on (:func:`metric_split`): the
            forget set (``eval_dataset_type`` / ``eval_dataset_name``, or its Hub id), the retain set,
            ``<split>-set`` for other splits. All three stages are rendered as a table and stored under
            the ``unlearning`` metadata key.
        model_name: name used in ``model-index`` and the title (default ``<base>-<method_id>-unlearned``).
        extra_tags: added after ``hf_unlearn``, ``unlearning`` and ``method_id``.
        notes: free text appended to the card (token-looking strings redacted).
        datasets: ``datasets`` metadata (Hub dataset ids); default: the Hub ids of ``forget_source`` and
            ``retain_source`` (from :func:`dataset_source`).
        license: ``license`` metadata; default: the base model's license when its card is at hand
            (local folder, or the local Hub cache), else omitted.
        repo_id: Hub repo id the card will live in, for the loading snippet (default ``model_name``).
        method_kind: ``"fine-tune"`` (training steps on a loss) or ``"edit"`` (a one-shot change of the
            weights with no training steps: SSD, IAU); only the wording changes.
    """
    if method_kind not in METHOD_KINDS:
        raise ValueError(f"method_kind must be one of {METHOD_KINDS}, got {method_kind!r}")
    config_dict = config_diff(config if config is not None else {})
    metrics_clean = _clean_metrics(metrics)
    forget_info = to_jsonable(dict(forget)) if forget else None
    retain_info = to_jsonable(dict(retain)) if retain else None
    sources = {
        "forget": to_jsonable(dict(forget_source)) if forget_source else None,
        "retain": to_jsonable(dict(retain_source)) if retain_source else None,
    }

    base = describe_base_model(base_model, base_architecture)
    hub_base = base["hub_id"]
    if license is None and base["license"]:
        license = base["license"]
        extra_license = {k: base[k] for k in ("license_name", "license_link") if base[k]}
    else:
        extra_license = {}
    if model_name is None:
        stem = (hub_base or base["label"] or "model").split("/")[-1]
        model_name = f"{stem}-{method_id}-unlearned"
    model_name = redact(str(model_name))

    tags: list[str] = []
    for t in (*BASE_TAGS, method_id, *extra_tags):
        if t and str(t) not in tags:
            tags.append(str(t))
    if datasets is None:
        datasets = [s["hub_id"] for s in sources.values() if s and s.get("hub_id")]
    datasets = list(dict.fromkeys(str(d) for d in datasets if d))

    dataset_of = _eval_datasets(eval_dataset_type, eval_dataset_name, sources)
    after = metrics_clean.get("after") or {}
    eval_results = []
    for name, value in after.items():
        if not _number(value) or not _is_result(name):
            continue
        split = metric_split(name)
        ds = dataset_of(split)
        short = name.split("/", 1)[1] if "/" in name and split is not None else name
        eval_results.append(
            EvalResult(
                task_type=pipeline_tag or "text-generation",
                dataset_type=ds["type"],
                dataset_name=ds["name"],
                dataset_config=ds["config"],
                dataset_split=ds["split"],
                metric_type=short,
                metric_name=_pretty(name),
                metric_value=value,
            )
        )

    unlearning_meta: dict[str, Any] = {"method": method_id}
    if paper is not None and paper.arxiv_id:
        unlearning_meta["paper"] = f"arxiv:{paper.arxiv_id}"
    for key, info in (("forget_set", forget_info), ("retain_set", retain_info)):
        if info:
            unlearning_meta[key] = {k: info[k] for k in ("num_rows", "sha256") if k in info}
            source = sources[key.removesuffix("_set")]
            if source:
                unlearning_meta[key]["source"] = {k: v for k, v in source.items() if v}
    if metrics_clean:
        unlearning_meta["metrics"] = metrics_clean

    card_data = ModelCardData(
        base_model=hub_base,
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        license=license,
        language=language,
        datasets=datasets or None,
        tags=tags,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
        unlearning=unlearning_meta,
        **extra_license,
    )
    header, rows = _metric_rows(metrics_clean, dataset_of) if metrics_clean else ([], [])
    return render_card(
        card_kind,
        card_data,
        title=model_name,
        model_id=redact(repo_id or model_name),
        method_id=method_id,
        method_name=method_name,
        method_kind=method_kind,
        paper=paper,
        paper_link=paper.link if paper is not None else None,
        bibtex=paper.bibtex.strip() if paper is not None and paper.bibtex else None,
        base=base,
        license=license,
        forget=forget_info,
        retain=retain_info,
        forget_source=sources["forget"],
        retain_source=sources["retain"],
        config_rows=[(_cell(k), _cell(json.dumps(v, ensure_ascii=False))) for k, v in config_dict.items()],
        metric_header=header,
        metric_rows=rows,
        has_retain_model=bool(metrics_clean.get("retain_model")),
        has_forget_quality=any(
            n.rsplit("/", 1)[-1] == "forget_quality" for values in metrics_clean.values() for n in values
        ),
        versions=library_versions(),
        auto_class=auto_class,
        notes=redact(notes) if notes else None,
    )
