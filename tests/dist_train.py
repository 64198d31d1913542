"""Forget/retain trainers on a saved tiny model, at a fixed *global* batch whatever the world size.

Run by test_distributed.py as ``python dist_train.py SRC OUT [method ...]`` (flat, graddiff, npo_rt, salun,
ssd) in one process, under
``torchrun --nproc_per_node 2`` or under ``accelerate launch --config_file ...``: each process gets
``GLOBAL_BATCH // world_size`` rows a step, so every launch trains on the same batches and the results
can be compared weight by weight. For each method it writes ``OUT/<method>/rank<r>.json`` (world size,
distributed type, whether the trained and the reference model are sharded, digest of the whole weights,
log history) and saves the model into ``OUT/<method>``.
"""

import hashlib
import json
import os
import sys

from torch.distributed.tensor import DTensor

GLOBAL_BATCH = 4  # the forget set has 12 rows: 3 full global batches per epoch at any world size
STEPS = 4  # crosses an epoch boundary, so the retain pairing of epoch 1 is exercised too
COMMON = dict(
    max_steps=STEPS,
    learning_rate=1e-3,
    logging_steps=1,
    report_to=[],
    save_strategy="no",
    disable_tqdm=True,
    seed=0,
)


def make_trainer(method: str, src: str, out: str, world_size: int):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_unlearn import FLATConfig, FLATTrainer, GradDiffConfig, GradDiffTrainer, NPOConfig, NPOTrainer
    from hf_unlearn.trainers.salun import SalUnConfig, SalUnTrainer
    from hf_unlearn.trainers.ssd import SSDConfig, SSDTrainer

    config, trainer_class, retain, extra = {
        "flat": (FLATConfig, FLATTrainer, False, {}),
        "graddiff": (GradDiffConfig, GradDiffTrainer, True, {}),
        "npo_rt": (NPOConfig, NPOTrainer, True, {}),  # NPO + retain NLL: reference model and retain set
        "salun": (SalUnConfig, SalUnTrainer, True, {"mask_ratio": 0.5}),  # mask + NPO reference + retain
        "ssd": (SSDConfig, SSDTrainer, True, {"selection_weighting": 2.0, "importance_batch_size": 2}),
    }[method]
    if GLOBAL_BATCH % world_size:
        raise ValueError(f"world size {world_size} does not divide the global batch {GLOBAL_BATCH}")
    model = AutoModelForCausalLM.from_pretrained(src)
    tok = AutoTokenizer.from_pretrained(src)
    args = config(
        output_dir=out,
        per_device_train_batch_size=GLOBAL_BATCH // world_size,
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,  # None: a plain `python` run
        **COMMON,
        # accelerate ignores DeepSpeed under use_cpu; DeepSpeed finds the CPU itself (DS_ACCELERATOR=cpu)
        use_cpu=os.environ.get("ACCELERATE_USE_DEEPSPEED") != "true",
        **extra,
    )
    return trainer_class(
        model=model,
        args=args,
        forget_dataset=datasets.load_from_disk(f"{src}/forget"),
        retain_dataset=datasets.load_from_disk(f"{src}/retain") if retain else None,
        processing_class=tok,
    )


def is_sharded(p) -> bool:
    """An FSDP2 shard (DTensor) or a DeepSpeed ZeRO-3 partition (``ds_id``)."""
    return isinstance(p, DTensor) or hasattr(p, "ds_id")


def whole(p):
    """The whole tensor of a parameter, gathered from its shards if it is sharded."""
    if isinstance(p, DTensor):
        return p.full_tensor().detach()
    if hasattr(p, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([p]):
            return p.detach().clone()
    return p.detach()


def run(method: str, src: str, out: str) -> None:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    trainer = make_trainer(method, src, f"{out}/{method}", world_size)
    trainer.train()
    trainer.save_model()  # gathers sharded (FSDP) weights into one full checkpoint on rank 0
    digest = hashlib.sha256()
    for p in trainer.model.parameters():  # shards are gathered: a collective, on every rank
        digest.update(whole(p).cpu().numpy().tobytes())
    rank = trainer.args.process_index
    ref = getattr(trainer, "ref_model", None)
    record = {
        "world_size": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1],
        "sharded": any(is_sharded(p) for p in trainer.model.parameters()),
        "ref_model_sharded": None if ref is None else any(is_sharded(p) for p in ref.parameters()),
        "digest": digest.hexdigest(),
        "log": trainer.state.log_history,
    }
    with open(f"{out}/{method}/rank{rank}.json", "w") as f:
        json.dump(record, f)
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    # The next method loads its model whole, as in a fresh process: while a ZeRO-3 config is alive,
    # from_pretrained partitions the weights as it loads them (zero.Init).
    unset_hf_deepspeed_config()


if __name__ == "__main__":
    src, out, *methods = sys.argv[1:]
    for method in methods or ["flat", "graddiff"]:
        run(method, src, out)
