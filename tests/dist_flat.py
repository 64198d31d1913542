"""Run by test_distributed.py under `torchrun --nproc_per_node 2`: FLAT on a saved tiny model."""

import hashlib
import json
import sys

import datasets
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import FLATConfig, FLATTrainer

src, out = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(src)
tok = AutoTokenizer.from_pretrained(src)
forget = datasets.load_from_disk(f"{src}/forget")
args = FLATConfig(
    output_dir=out,
    max_steps=6,
    per_device_train_batch_size=2,
    learning_rate=1e-3,
    logging_steps=2,
    report_to=[],
    save_strategy="no",
    use_cpu=True,
    ddp_backend="gloo",
    disable_tqdm=True,
)
trainer = FLATTrainer(model=model, args=args, forget_dataset=forget, processing_class=tok)
trainer.train()
digest = hashlib.sha256(
    b"".join(p.detach().numpy().tobytes() for p in trainer.model.parameters())
).hexdigest()
rank = trainer.args.process_index
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"world_size": trainer.args.world_size, "digest": digest, "log": trainer.state.log_history}, f)
trainer.save_model()
