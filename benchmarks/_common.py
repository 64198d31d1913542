"""Helpers shared by the benchmark scripts: logging, recipe hashes and atomic cache writes, library
versions, memory and step timing, number formatting and Markdown tables, and writing the
``<name>.json`` / ``.md`` / ``.png`` outputs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# ---------------------------------------------------------------------------------------------------
# Logging and quiet libraries
# ---------------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """A time-stamped line on stderr that does not break a tqdm progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr)


def quiet_transformers(progress_bars: bool = False) -> None:
    """transformers logs errors only (and shows no progress bars unless ``progress_bars``)."""
    import transformers

    transformers.logging.set_verbosity_error()
    if not progress_bars:
        transformers.utils.logging.disable_progress_bar()


# ---------------------------------------------------------------------------------------------------
# Caching
# ---------------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recipe_hash(obj) -> str:
    """16 hex digits identifying a JSON-able recipe (the key of a cached model)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_save(folder: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a fresh temporary sibling of ``folder``, then rename it to ``folder``, so an
    interrupted run never leaves a half-written cache entry."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def versions() -> dict:
    """Python, the libraries a result depends on, the platform and the thread count."""
    import datasets
    import tokenizers
    import torch
    import transformers

    import hf_unlearn

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "tokenizers": tokenizers.__version__,
        "hf_unlearn": getattr(hf_unlearn, "__version__", "unknown"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------
# Memory and timing
# ---------------------------------------------------------------------------------------------------


def current_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc; falls back to ru_maxrss)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return max_rss()


def max_rss() -> int:
    """Kernel high-water mark of this process's RSS in bytes (ru_maxrss is KB on Linux, B on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


class RSSSampler(threading.Thread):
    """Samples this process's RSS every ``interval`` seconds and keeps the peak."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.peak, self._halt = interval, current_rss(), threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.peak = max(self.peak, current_rss())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, current_rss())
        return self.peak


def make_step_timer():
    """A ``TrainerCallback`` whose ``times`` are the wall times of the optimizer steps."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step (forward + backward + step; the batch is fetched before)."""

        def __init__(self):
            self.times: list[float] = []
            self._t0 = None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._t0 is not None:
                self.times.append(time.perf_counter() - self._t0)
                self._t0 = None

    return StepTimer()


class Stages:
    """Seconds spent per named stage, summed over repeated entries: ``with stages("evaluation"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------
# Numbers and Markdown
# ---------------------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fmt(x, digits: int = 3, small_sci: bool = True) -> str:
    """``x`` with ``digits`` decimals; "–" for None or NaN; with ``small_sci``, 0 < |x| < 1e-3 as 1.23e-05."""
    if x is None or x != x:
        return "–"
    if small_sci and isinstance(x, float) and (abs(x) < 1e-3 and x != 0):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def table_header(*columns: str) -> list[str]:
    """The first two lines of a Markdown table."""
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def table_row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


# ---------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------


def write_outputs(
    out: Path, name: str, report: dict, markdown: str, plot: Callable[[dict, Path], None], indent: int = 2
) -> list[Path]:
    """``<out>/<name>.json`` (the report), ``.md`` (``markdown``) and ``.png`` (``plot(report, path)``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}.{ext}" for ext in ("json", "md", "png")]
    files[0].write_text(json.dumps(report, indent=indent, default=float))
    files[1].write_text(markdown)
    plot(report, files[2])
    return files


__all__ = [
    "RSSSampler",
    "Stages",
    "atomic_save",
    "current_rss",
    "fmt",
    "log",
    "make_step_timer",
    "max_rss",
    "quiet_transformers",
    "ratio",
    "recipe_hash",
    "sha256_file",
    "table_header",
    "table_row",
    "versions",
    "write_outputs",
]
