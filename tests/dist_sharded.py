"""Run by test_distributed.py under ``torchrun --nproc_per_node 2``: SSD's importances and SalUn's mask
computed through a model sharded by FSDP2 (``fully_shard``: ``DTensor`` parameters, one shard per
process) equal those of the whole model. Writes ``OUT/rank<r>.json`` with the largest differences."""

import json
import sys

import datasets
import torch
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn.trainers.salun import SalUnConfig, SalUnTrainer
from hf_unlearn.trainers.ssd import SSDConfig, SSDTrainer

src, out = sys.argv[1:3]
tok = AutoTokenizer.from_pretrained(src)
forget = datasets.load_from_disk(f"{src}/forget")
retain = datasets.load_from_disk(f"{src}/retain")
common = dict(report_to=[], use_cpu=True, ddp_backend="gloo", disable_tqdm=True, save_strategy="no")


def model(sharded: bool):
    m = AutoModelForCausalLM.from_pretrained(src)
    if sharded:
        for layer in m.model.layers:
            fully_shard(layer)
        fully_shard(m)
        assert all(isinstance(p, DTensor) for p in m.parameters())
    return m


def ssd(sharded: bool, definition: str):
    args = SSDConfig(
        output_dir=f"{out}/ssd", importance_batch_size=3, importance_definition=definition, **common
    )
    t = SSDTrainer(
        model=model(sharded), args=args, forget_dataset=forget, retain_dataset=retain, processing_class=tok
    )
    return t.importance(t.train_dataset.views["forget"])


def salun(sharded: bool):
    args = SalUnConfig(
        output_dir=f"{out}/salun", per_device_train_batch_size=2, mask_ratio=0.3, forget_loss="ga", **common
    )
    t = SalUnTrainer(model=model(sharded), args=args, forget_dataset=forget, processing_class=tok)
    return t.compute_mask()


result = {}
for definition in ("batch", "per_sample"):
    whole, shard = ssd(False, definition), ssd(True, definition)
    assert set(whole) == set(shard) and all(type(t) is torch.Tensor for t in shard.values())
    result[f"ssd_{definition}_max_abs"] = max((whole[n] - shard[n]).abs().max().item() for n in whole)
    result[f"ssd_{definition}_max"] = max(whole[n].abs().max().item() for n in whole)
whole, shard = salun(False), salun(True)
result["salun_mask_differing"] = sum(int((whole[n] != shard[n]).sum()) for n in whole)
result["salun_mask_salient"] = sum(int(m.sum()) for m in whole.values())
rank = torch.distributed.get_rank()
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump(result, f)
