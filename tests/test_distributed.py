"""Several processes (gloo on CPU) against one process on the same global batch.

``dist_train.py`` trains with a global batch of 4 rows whatever the world size: 2 processes × 2 rows here,
1 process × 4 rows for the reference run (in this process). The launchers: ``torchrun``, and
``accelerate launch`` with the shipped configs in ``accelerate_configs/``.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import dist_train
import pytest
import torch
from safetensors.torch import load_file
from utils import demo_world, run_accelerate, run_torchrun

HERE = Path(__file__).parent
CONFIGS = HERE.parent / "accelerate_configs"
# Measured max |Δweight| between 1 and 2 processes: 2.5e-6 (FLAT), 1.7e-5 (GradDiff), 1.3e-5 (NPO+RT): the
# float summation order differs, and Adam's g/√v magnifies that in tiny gradients. The weights move by
# 2.5e-3 in these 4 steps, so a wrong batch, pairing or reduction shows up far above this bound.
WEIGHT_TOL = 5e-5
REFERENCE = ("flat", "graddiff", "npo_rt", "ssd", "salun")

needs_torchrun = pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.environ.get("VIRTUAL_ENV"), reason="no torchrun"
)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """The saved tiny model, tokenizer and forget (12 rows) / retain (30 rows) sets."""
    data, tok, model = demo_world()
    folder = tmp_path_factory.mktemp("dist") / "src"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    data["forget"].save_to_disk(str(folder / "forget"))
    data["retain"].save_to_disk(str(folder / "retain"))
    return folder


@pytest.fixture(scope="module")
def one_process(src, tmp_path_factory):
    """The single-process runs (4 rows a step), in this process."""
    out = tmp_path_factory.mktemp("one")
    for method in REFERENCE:
        dist_train.run(method, str(src), str(out))
    return out


def records(out: Path, method: str, nproc: int) -> list[dict]:
    return [json.loads((out / method / f"rank{r}.json").read_text()) for r in range(nproc)]


def assert_same_as_one_process(out: Path, one: Path, src: Path, method: str, distributed_type: str):
    """Every rank holds the same weights, equal to the single-process run's; the same losses were logged."""
    ranks = records(out, method, 2)
    assert {r["world_size"] for r in ranks} == {2}
    assert {r["distributed_type"] for r in ranks} == {distributed_type}
    assert len({r["digest"] for r in ranks}) == 1, "the ranks hold different weights"
    reference = records(one, method, 1)[0]
    # every logged term (losses, FLAT's probabilities, GradDiff's retain NLL: the retain pairing) agrees
    for got, want in zip(ranks[0]["log"], reference["log"], strict=True):
        assert set(got) == set(want)
        for key, value in want.items():
            if "runtime" not in key and "per_second" not in key:
                assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (method, key)
    two, single = (load_file(str(d / method / "model.safetensors")) for d in (out, one))
    start = load_file(str(src / "model.safetensors"))
    # FSDP's full state dict also names the tied output embedding: the same tensor under a second key
    assert set(single) <= set(two)
    for extra in set(two) - set(single):
        assert extra == "lm_head.weight" and torch.equal(two[extra], two["model.embed_tokens.weight"]), extra
    delta = max((two[k] - single[k]).abs().max().item() for k in single)
    moved = max((single[k] - start[k]).abs().max().item() for k in single)
    assert delta <= WEIGHT_TOL, f"{method}: max |Δ| between 1 and 2 processes is {delta:.2e}"
    assert moved > 20 * WEIGHT_TOL, f"{method}: the weights barely moved ({moved:.2e})"
    assert (out / method / "README.md").exists()  # the model card, written by rank 0


@needs_torchrun
def test_torchrun_two_processes_equal_one_process(src, one_process, tmp_path):
    """FLAT (forget only), GradDiff (retain pairing), NPO+RT (reference model + retain) and SalUn (mask
    reduced across processes + NPO + retain) under torchrun."""
    methods = ("flat", "graddiff", "npo_rt", "salun")
    run_torchrun(HERE / "dist_train.py", src, tmp_path, *methods)
    for method in methods:
        assert_same_as_one_process(tmp_path, one_process, src, method, "MULTI_CPU")


@needs_torchrun
def test_accelerate_launch_with_the_ddp_config(src, one_process, tmp_path):
    """``accelerate launch --config_file accelerate_configs/ddp.yaml --num_processes 2`` (the shipped file;
    the script's ``use_cpu=True`` makes it gloo on CPU)."""
    run_accelerate(CONFIGS / "ddp.yaml", HERE / "dist_train.py", src, tmp_path, "graddiff")
    assert_same_as_one_process(tmp_path, one_process, src, "graddiff", "MULTI_CPU")


@needs_torchrun
@pytest.mark.slow
def test_fsdp2_config_on_two_cpu_processes(src, one_process, tmp_path):
    """``accelerate_configs/fsdp.yaml`` (FSDP2) on CPU, through ``dist_fsdp_cpu.py``'s shim (accelerate alone
    falls back to DDP on CPU): the trained model is sharded, NPO's frozen reference is kept whole, SSD's
    one-shot edit runs on the whole model before any wrapping; all equal one process."""
    run_accelerate(CONFIGS / "fsdp.yaml", HERE / "dist_fsdp_cpu.py", src, tmp_path, "flat", "npo_rt", "ssd")
    for method in ("flat", "npo_rt", "ssd"):
        assert_same_as_one_process(tmp_path, one_process, src, method, "FSDP")
    assert all(r["sharded"] for m in ("flat", "npo_rt") for r in records(tmp_path, m, 2))
    assert not any(r["ref_model_sharded"] for r in records(tmp_path, "npo_rt", 2))


@needs_torchrun
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_zero3_config_on_two_cpu_processes(src, one_process, tmp_path):
    """``accelerate_configs/deepspeed_zero3.yaml`` on CPU (DeepSpeed's CPU accelerator, gloo): the trained
    model is partitioned, NPO's frozen reference is kept whole; all equal one process."""
    methods = ("flat", "graddiff", "npo_rt")
    env = {"DS_ACCELERATOR": "cpu"}
    run_accelerate(
        CONFIGS / "deepspeed_zero3.yaml", HERE / "dist_train.py", src, tmp_path, *methods, "ssd", env=env
    )
    for method in (*methods, "ssd"):  # SSD: the one-shot edit on the whole model, saved without an engine
        assert_same_as_one_process(tmp_path, one_process, src, method, "DEEPSPEED")
    assert all(r["sharded"] for m in methods for r in records(tmp_path, m, 2))
    assert not any(r["ref_model_sharded"] for r in records(tmp_path, "npo_rt", 2))


@needs_torchrun
@pytest.mark.slow
def test_salun_under_fsdp2_keeps_unmasked_weights(src, one_process, tmp_path):
    """SalUn under FSDP2: ``fully_shard`` replaces the parameters after ``create_optimizer``, so the mask is
    attached again at the first step, to the local shards of the DTensor parameters; the non-salient
    weights stay bit for bit, and the run equals one process."""
    run_accelerate(CONFIGS / "fsdp.yaml", HERE / "dist_fsdp_cpu.py", src, tmp_path, "salun")
    mask = load_file(str(tmp_path / "salun" / "salun_mask.safetensors"))
    after = load_file(str(tmp_path / "salun" / "model.safetensors"))
    start = load_file(str(src / "model.safetensors"))
    assert all(torch.equal(after[k][~m], start[k][~m]) for k, m in mask.items() if k in after)
    assert_same_as_one_process(tmp_path, one_process, src, "salun", "FSDP")


@needs_torchrun
@pytest.mark.slow
def test_one_shot_passes_on_fsdp2_sharded_parameters(src, tmp_path):
    """SSD's importances (both definitions) and SalUn's mask through a ``fully_shard``-ed model (DTensor
    parameters) are gathered into whole tensors equal to the whole model's."""
    run_torchrun(HERE / "dist_sharded.py", src, tmp_path)
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for definition in ("batch", "per_sample"):
            assert r[f"ssd_{definition}_max_abs"] <= 1e-6 * r[f"ssd_{definition}_max"], r
        assert r["salun_mask_differing"] == 0 and r["salun_mask_salient"] > 0, r


def _trainer(method: str, out):
    from hf_unlearn import NPOConfig, NPOTrainer
    from hf_unlearn.trainers.salun import SalUnConfig, SalUnTrainer

    data, tok, model = demo_world()
    config, trainer_class = {"npo": (NPOConfig, NPOTrainer), "salun": (SalUnConfig, SalUnTrainer)}[method]
    args = config(output_dir=str(out), report_to=[], use_cpu=True, max_steps=1, save_strategy="no")
    return model, lambda **kw: trainer_class(
        model=model, args=args, forget_dataset=data["forget"], processing_class=tok, **kw
    )


def test_reference_copy_of_a_sharded_model_is_refused(tmp_path):
    """A ZeRO-3-partitioned (``ds_id``) or FSDP2-sharded model cannot be deep-copied into a whole frozen
    reference: a ValueError says to pass ``ref_model=`` (faked here: one parameter gets a ``ds_id``)."""
    model, make = _trainer("npo", tmp_path)
    next(model.parameters()).ds_id = 0
    with pytest.raises(ValueError, match="ref_model="):
        make()
    _, tok, ref = demo_world()
    assert make(ref_model=ref).ref_model is not None  # an explicit reference is accepted


def test_salun_refuses_deepspeed_at_train(tmp_path):
    """SalUn's mask cannot reach DeepSpeed's partitioned buffers: ``train()`` refuses before computing the
    mask (faked here: the trainer believes DeepSpeed is enabled)."""
    _, make = _trainer("salun", tmp_path)
    trainer = make()
    trainer.is_deepspeed_enabled = True
    with pytest.raises(ValueError, match="does not support DeepSpeed"):
        trainer.train()
    assert trainer.mask is None
