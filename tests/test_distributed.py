"""`torchrun --nproc_per_node 2` (gloo on CPU) runs an unlearning trainer through accelerate."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from utils import demo_world


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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with socket.socket() as sock:  # a free port, so parallel runs of the suite do not collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        port,
        str(Path(__file__).with_name("dist_flat.py")),
        str(src),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["digest"] == r1["digest"]  # every rank holds the same unlearned weights
    probs = [h["forget_prob"] for h in r0["log"] if "forget_prob" in h]
    assert len(probs) == 3 and probs[-1] < probs[0]
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()
