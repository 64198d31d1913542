#!/usr/bin/env python
"""CUDA smoke check: the trainers and GUARD on a GPU (device placement, dtype, determinism vs CPU).

    python benchmarks/gpu_smoke.py          # on a machine with a GPU; falls back to the CPU otherwise

Tiny models and in-memory data (no downloads). Each check prints one line; all results go to
``$OUT/gpu_smoke.json`` when ``OUT`` is set, else to ``benchmarks/results/gpu_smoke.json``. The CI suite runs
everything on the CPU; this script is what a session with a GPU runs to show the same code on CUDA.
GUARD uses a stand-in sentence encoder (hashed character trigrams) because the GPU machine has no model
weights; it exercises the same code paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from classif_utils import blobs, tiny_resnet  # noqa: E402
from utils import demo_world  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
COMMON = dict(report_to=[], disable_tqdm=True, save_strategy="no", use_cpu=DEVICE == "cpu")


class TrigramEncoder:
    """A stand-in for a SentenceTransformer: normalised hashed character-trigram counts (256-d)."""

    def encode(self, texts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False):
        out = torch.zeros(len(texts), 256)
        for i, t in enumerate(texts):
            t = f"  {t.lower()}  "
            for j in range(len(t) - 2):
                out[i, int(hashlib.md5(t[j : j + 3].encode()).hexdigest(), 16) % 256] += 1
        return torch.nn.functional.normalize(out, dim=-1)


def split(ds):
    return ds.filter(lambda r: r["labels"] == 0), ds.filter(lambda r: r["labels"] != 0)


def check_ssd():
    from hf_unlearn import SSDConfig, SSDTrainer

    forget, retain = split(blobs(60))
    results = {}
    for definition in ("batch", "per_sample"):
        models = {}
        for dev in ("cpu", DEVICE):
            model = tiny_resnet()
            args = SSDConfig(output_dir=f"/tmp/gpu-ssd-{dev}", selection_weighting=2.0, importance_definition=definition,
                             importance_batch_size=8, save_full_importance=False,
                             **{**COMMON, "use_cpu": dev == "cpu"})  # fmt: skip
            SSDTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain).train()
            models[dev] = model
        assert next(models[DEVICE].parameters()).device.type == DEVICE
        diff = max((a.cpu() - b.cpu()).abs().max().item() for a, b in zip(models["cpu"].parameters(), models[DEVICE].parameters(), strict=True))  # fmt: skip
        results[definition] = {"max_abs_diff_vs_cpu": diff}
        assert diff < 1e-3, diff
    return results


def check_salun():
    from hf_unlearn import SalUnConfig, SalUnTrainer

    forget, retain = split(blobs(60))
    model = tiny_resnet()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = SalUnConfig(output_dir="/tmp/gpu-salun", max_steps=6, per_device_train_batch_size=8, learning_rate=0.05,
                       optim="sgd", optim_args="momentum=0.9", weight_decay=5e-3, **COMMON)  # fmt: skip
    trainer = SalUnTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain)
    trainer.train()
    assert next(model.parameters()).device.type == DEVICE
    moved = sum(int((p.detach().cpu()[~trainer.mask[n].cpu()] != before[n][~trainer.mask[n].cpu()]).sum())
                for n, p in model.named_parameters())  # fmt: skip
    changed = sum(int((p.detach().cpu() != before[n]).sum()) for n, p in model.named_parameters())
    assert moved == 0 and changed > 0
    return {"non_salient_moved": moved, "salient_changed": changed}


def check_iau():
    from hf_unlearn import IAUConfig, IAUTrainer

    forget, retain = split(blobs(60))
    models = {}
    for dev in ("cpu", DEVICE):
        model = tiny_resnet()
        args = IAUConfig(output_dir=f"/tmp/gpu-iau-{dev}", step_rule="sgd", learning_rate=0.1,
                         **{**COMMON, "use_cpu": dev == "cpu"})  # fmt: skip
        IAUTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain).train()
        models[dev] = model
    diff = max((a.cpu() - b.cpu()).abs().max().item() for a, b in zip(models["cpu"].parameters(), models[DEVICE].parameters(), strict=True))  # fmt: skip
    assert diff < 1e-4, diff
    return {"max_abs_diff_vs_cpu": diff}


def check_llm_trainers():
    from hf_unlearn import FLATConfig, FLATTrainer, NPOConfig, NPOTrainer, SalUnConfig, SalUnTrainer

    out = {}
    for name, cls, cfg, kw in (
        ("flat", FLATTrainer, FLATConfig, {}),
        ("npo", NPOTrainer, NPOConfig, {}),
        ("salun_npo", SalUnTrainer, SalUnConfig, {"retain": True}),
    ):
        data, tok, model = demo_world()
        args = cfg(output_dir=f"/tmp/gpu-{name}", max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3,
                   logging_steps=2, **COMMON)  # fmt: skip
        trainer = cls(model=model, args=args, forget_dataset=data["forget"], processing_class=tok,
                      retain_dataset=data["retain"] if kw else None)  # fmt: skip
        res = trainer.train()
        assert (
            next(trainer.model.parameters()).device.type == DEVICE and res.training_loss == res.training_loss
        )
        out[name] = {"training_loss": res.training_loss}
    return out


def check_guard():
    from hf_unlearn import GUARD
    from hf_unlearn.data.qa import encode_prompt

    data, tok, model = demo_world()
    model.to(DEVICE).eval()
    guard = GUARD.from_forget_set(model, tok, data["forget"], negatives=[data["retain"], data["holdout"]],
                                  sentence_model=TrigramEncoder())  # fmt: skip
    questions = [data["retain"]["question"][0], data["forget"]["question"][0], data["retain"]["question"][1]]
    prompts = [encode_prompt(tok, q) for q in questions]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts], device=DEVICE)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=DEVICE)
    out = {}
    for label, kw in (("greedy", dict(do_sample=False)), ("beam", dict(num_beams=3, do_sample=False))):
        plain = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=20, pad_token_id=tok.pad_token_id, **kw
        )
        guarded = guard.generate(ids, mask, max_new_tokens=20, **kw)
        texts = [tok.decode(r[width:], skip_special_tokens=True) for r in guarded]
        plain_texts = [tok.decode(r[width:], skip_special_tokens=True) for r in plain]
        assert texts[0] == plain_texts[0] and texts[2] == plain_texts[2], (texts, plain_texts)
        leaked = [p for p in guard.forbidden_phrases(questions[1]) if p.lower() in texts[1].lower().split()]
        out[label] = {"target": texts[1], "plain_target": plain_texts[1], "leaked_single_words": leaked}
    return out


def check_classification_metrics():
    from hf_unlearn.evaluation import evaluate_unlearning

    forget, retain = split(blobs(60))
    model = tiny_resnet().to(DEVICE)
    m = evaluate_unlearning(model, forget, retain, blobs(30, seed=1))
    return {k: v for k, v in m.items() if k != "eval_seconds"}


def main() -> int:
    torch.manual_seed(0)
    report = {"device": DEVICE, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else None, "checks": {}}  # fmt: skip
    failed = 0
    for check in (
        check_ssd,
        check_salun,
        check_iau,
        check_llm_trainers,
        check_guard,
        check_classification_metrics,
    ):
        t0 = time.perf_counter()
        try:
            result = {"ok": True, **check()}
        except Exception as err:  # noqa: BLE001 - report every check, then fail at the end
            failed += 1
            result = {
                "ok": False,
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-2000:],
            }
        result["seconds"] = round(time.perf_counter() - t0, 2)
        report["checks"][check.__name__] = result
        print(f"{'PASS' if result['ok'] else 'FAIL'} {check.__name__} ({result['seconds']} s)", flush=True)
        if not result["ok"]:
            print(result["traceback"], flush=True)
    out = Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_smoke.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps({k: v for k, v in report.items() if k != "checks"}), f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
