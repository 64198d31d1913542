"""`torchrun --nproc_per_node 2` (gloo on CPU) runs an unlearning trainer through accelerate."""

import json
import os
import shutil
from pathlib import Path

import pytest
from utils import demo_world, run_torchrun


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.environ.get("VIRTUAL_ENV"), reason="no torchrun"
)
def test_flat_under_torchrun_two_processes(tmp_path):
    data, tok, model = demo_world()
    src = tmp_path / "src"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    data["forget"].save_to_disk(str(src / "forget"))
    out = tmp_path / "out"
    run_torchrun(Path(__file__).with_name("dist_flat.py"), src, out)
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["digest"] == r1["digest"]  # every rank holds the same unlearned weights
    probs = [h["forget_prob"] for h in r0["log"] if "forget_prob" in h]
    assert len(probs) == 3 and probs[-1] < probs[0]
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()
