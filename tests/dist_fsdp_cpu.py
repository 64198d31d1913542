"""``dist_train.py`` under accelerate's FSDP on CPU processes (gloo): a test-only shim.

Accelerate turns ``distributed_type: FSDP`` into FSDP only for accelerator devices; with ``use_cpu`` its
state falls back to plain multi-CPU DDP (``DistributedType.MULTI_CPU``) and ignores the FSDP plugin, although
torch's FSDP2 (``fully_shard``) itself runs on CPU with gloo. This shim, for tests only, keeps the plugin that
``accelerate launch --config_file accelerate_configs/fsdp.yaml`` configured, so the Trainer takes its FSDP
path (accelerate's ``fsdp2_prepare_model``, FULL_STATE_DICT saving) on CPU.
"""

import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _init_keeping_fsdp(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = self.distributed_type  # as accelerate does for GPUs


AcceleratorState.__init__ = _init_keeping_fsdp

if __name__ == "__main__":
    from dist_train import run

    src, out, *methods = sys.argv[1:]
    for method in methods:
        run(method, src, out)
