"""`trainer.push_to_hub()` of an unlearning trainer: checkpoint + card through the real client code path."""

from pathlib import Path

import pytest
import torch
import yaml
from hub_server import hub_server, use_hub
from huggingface_hub import hf_hub_download, snapshot_download
from transformers import AutoModelForCausalLM
from utils import demo_world

from hf_unlearn import FLATConfig, FLATTrainer

TOKEN = "hf_fake_token_for_tests_0123456789abcdefXYZ"


@pytest.fixture
def hub():
    with hub_server() as server, use_hub(server.endpoint):
        yield server


def test_flat_push_to_hub_uploads_checkpoint_and_card_without_the_token(hub, tmp_path):
    data, tok, model = demo_world()
    args = FLATConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        hub_model_id="user/flat-demo",
        hub_token=TOKEN,
        divergence="js",
    )
    trainer = FLATTrainer(model=model, args=args, forget_dataset=data["forget"], processing_class=tok)
    trainer.train()
    trainer.record_metrics("after", {"forget_quality": 0.42})
    commit = trainer.push_to_hub()

    uploaded = hub.files("user/flat-demo")
    assert {"model.safetensors", "config.json", "README.md", "tokenizer.json"} <= set(uploaded)
    assert hub.tokens_seen() == {TOKEN}
    leaking = [name for name, blob in uploaded.items() if TOKEN.encode() in blob]
    assert leaking == []  # not even training_args.bin (UnlearnConfig pickles without hub_token)
    for name in ("model.safetensors", "README.md"):
        assert (
            Path(hf_hub_download("user/flat-demo", name, cache_dir=tmp_path / "c")).read_bytes()
            == uploaded[name]
        )

    card = uploaded["README.md"].decode()
    meta = yaml.safe_load(card.split("---")[1])
    assert {"hf_unlearn", "unlearning", "flat"} <= set(meta["tags"])
    assert "model-index" in meta
    assert trainer.train_dataset is not None and str(len(data["forget"])) in card
    assert data["forget"][0]["answer"] not in card  # the forget set is described, never copied
    assert "divergence" in card and "user/flat-demo" in card

    folder = snapshot_download("user/flat-demo", revision=commit.oid, cache_dir=tmp_path / "c")
    back = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([tok("Question: who?")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(back(ids).logits, trainer.model.eval()(ids).logits)
