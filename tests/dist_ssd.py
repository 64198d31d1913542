"""Run by test_ssd.py under `torchrun --nproc_per_node N`: SSD on a saved tiny ResNet."""

import hashlib
import sys

import datasets
from transformers import AutoModelForImageClassification

from hf_unlearn.trainers.ssd import SSDConfig, SSDTrainer

src, out = sys.argv[1], sys.argv[2]
model = AutoModelForImageClassification.from_pretrained(src)
data = datasets.load_from_disk(f"{src}/data")
args = SSDConfig(
    output_dir=out,
    selection_weighting=2.0,
    importance_batch_size=3,
    report_to=[],
    use_cpu=True,
    ddp_backend="gloo",
    disable_tqdm=True,
)
trainer = SSDTrainer(
    model=model,
    args=args,
    forget_dataset=data.filter(lambda r: r["labels"] == 0),
    retain_dataset=data.filter(lambda r: r["labels"] != 0),
)
trainer.train()
digest = hashlib.sha256(
    b"".join(p.detach().numpy().tobytes() for p in trainer.model.parameters())
).hexdigest()
with open(f"{out}/rank{trainer.args.process_index}.txt", "w") as f:
    f.write(digest)
trainer.save_model()
