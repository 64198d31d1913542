"""Hub sharing through the real huggingface_hub client against the loopback Hub of ``tests/hub_server.py``.

How the client is pointed at the server (see the ``hub_server`` module docstring): in this process with
``use_hub(server.endpoint)`` (patches ``huggingface_hub.constants`` and the cached ``HfApi`` objects and
lifts ``HF_HUB_OFFLINE``, which ``tests/conftest.py`` sets, for the duration of the test only), and in
a subprocess with ``env=server.client_env()`` (plain ``HF_ENDPOINT``). Reuse the ``hub`` fixture below
(copy it, or import ``hub_server``/``use_hub``) to test ``trainer.push_to_hub()`` of other trainers.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hub_server import hub_server, use_hub  # tests/ is on sys.path under pytest, like tests/utils.py
from huggingface_hub import HfApi, ModelCard, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from hf_unlearn.data.demo import make_demo_dataset
from hf_unlearn.model_cards import build_model_card, config_diff, dataset_fingerprint
from hf_unlearn.registry import Paper
from hf_unlearn.tiny import tiny_llama, train_tokenizer

TOKEN = "hf_fake_token_for_tests"
PAPER = Paper("A Fake Paper", "2401.99999", "@article{fake,\n  title={A Fake Paper},\n  year={2024}\n}")


@pytest.fixture
def hub():
    """A fresh loopback Hub, with this process's huggingface_hub pointed at it."""
    with hub_server() as server, use_hub(server.endpoint):
        yield server


@pytest.fixture(scope="module")
def tiny():
    data = make_demo_dataset(n_people=4, n_forget=1, n_holdout=1)
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in data["retain"]], vocab_size=300)
    model = tiny_llama(tok, hidden_size=32, num_hidden_layers=1, num_attention_heads=2).eval()
    return data, tok, model


def logits(model, tok):
    batch = tok(["Where was Ardel Ashcombe born?"], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def local_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def write_checkpoint(tmp_path, tiny) -> Path:
    data, tok, model = tiny
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    args = TrainingArguments(output_dir=str(folder), report_to=[], learning_rate=1e-5, hub_token=TOKEN)
    card = build_model_card(
        method_id="fake",
        method_name="Fake",
        paper=PAPER,
        base_model=str(tmp_path / "base"),
        config=config_diff(args),
        forget=dataset_fingerprint(data["forget"]),
        retain=None,
        metrics={"before": {"forget_probability": 0.9}, "after": {"forget_probability": 0.1}},
        model_name="user/tiny-unlearned",
    )
    card.save(folder / "README.md")
    return folder


def test_push_download_and_reload_give_identical_bytes_and_logits(hub, tiny, tmp_path):
    _, tok, model = tiny
    folder = write_checkpoint(tmp_path, tiny)
    expected = local_files(folder)
    assert {"model.safetensors", "config.json", "README.md"} <= set(expected)

    api = HfApi(endpoint=hub.endpoint)
    repo_url = api.create_repo("user/tiny-unlearned", token=TOKEN)
    assert repo_url.repo_id == "user/tiny-unlearned"
    api.create_repo("user/tiny-unlearned", token=TOKEN, exist_ok=True)
    commit = api.upload_folder(repo_id="user/tiny-unlearned", folder_path=folder, token=TOKEN)
    assert commit.oid == api.model_info("user/tiny-unlearned").sha
    assert hub.files("user/tiny-unlearned") == expected  # stored exactly what was on disk

    # the token went in the Authorization header only, never into a file
    assert hub.tokens_seen() == {TOKEN}
    assert all(TOKEN.encode() not in data for data in expected.values())
    assert not hub.unhandled

    # file by file into a fresh cache
    for name, data in expected.items():
        path = hf_hub_download("user/tiny-unlearned", name, cache_dir=tmp_path / "cache1")
        assert Path(path).read_bytes() == data, name
    # whole snapshot into another fresh cache, then reload the model from it
    snap = Path(snapshot_download("user/tiny-unlearned", cache_dir=tmp_path / "cache2"))
    assert local_files(snap) == expected
    reloaded = AutoModelForCausalLM.from_pretrained(snap).eval()
    assert torch.equal(logits(reloaded, tok), logits(model, tok))

    # the card metadata is what the Hub sees
    info = api.model_info("user/tiny-unlearned")
    assert {"hf_unlearn", "unlearning", "fake"} <= set(info.tags)
    assert info.card_data.eval_results[0].metric_type == "forget_probability"
    assert ModelCard.load(snap / "README.md").data.to_dict()["unlearning"]["method"] == "fake"

    # a second identical upload is a no-op (preupload oids match); a changed file makes a new commit
    again = api.upload_folder(repo_id="user/tiny-unlearned", folder_path=folder, token=TOKEN)
    assert again.oid == commit.oid
    update = api.upload_file(
        path_or_fileobj=b"{}", path_in_repo="extra.json", repo_id="user/tiny-unlearned", token=TOKEN
    )  # the create_commit path (validates README metadata first)
    assert update.oid != commit.oid and hub.files("user/tiny-unlearned")["extra.json"] == b"{}"
    assert hub.files("user/tiny-unlearned", revision=commit.oid) == expected


def test_auth_and_card_validation(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("user/no-token", token=False)
    assert err.value.response.status_code == 401
    api.create_repo("user/private", token=TOKEN, private=True)
    with pytest.raises(HfHubHTTPError):  # private repos are invisible without a token
        api.model_info("user/private", token=False)
    assert api.model_info("user/private", token=TOKEN).private
    assert api.whoami(token=TOKEN)["name"] == "user"

    # ModelCard.validate() asks the (loopback) Hub: our cards pass, a local path as base_model does not
    card = build_model_card(
        method_id="fake",
        method_name="Fake",
        paper=PAPER,
        base_model=str(tmp_path),
        config={},
        forget=None,
        metrics={"after": {"x": 1.0}},
    )
    card.validate()
    with pytest.raises(ValueError, match="base_model"):
        ModelCard(f"---\nbase_model: {tmp_path}\n---\n# bad\n").validate()


def test_client_in_subprocess_with_hf_endpoint(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from huggingface_hub import constants, create_repo, hf_hub_download, upload_file
        assert constants.ENDPOINT == sys.argv[1], constants.ENDPOINT
        create_repo("user/sub", token="{TOKEN}")
        upload_file(path_or_fileobj=b"\\x00\\x01 binary", path_in_repo="w.bin", repo_id="user/sub", token="{TOKEN}")
        path = hf_hub_download("user/sub", "w.bin", cache_dir=sys.argv[2])
        assert open(path, "rb").read() == b"\\x00\\x01 binary"
        """
    )
    with hub_server() as server:
        env = server.client_env(hf_home=str(tmp_path / "hf_home"))
        run = subprocess.run(
            [sys.executable, "-c", script, server.endpoint, str(tmp_path / "cache")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert server.files("user/sub") == {"w.bin": b"\x00\x01 binary"}
        assert TOKEN not in run.stdout + run.stderr


def test_plain_trainer_push_to_hub(hub, tiny, tmp_path):
    """``transformers.Trainer.push_to_hub`` (create_repo(exist_ok=True) + upload_folder) against the server."""
    _, tok, model = tiny
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        push_to_hub=False,
        hub_model_id="user/tiny",
        hub_token=TOKEN,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    trainer = Trainer(model=model, args=args, processing_class=tok)
    commit = trainer.push_to_hub(commit_message="End of training")
    assert commit.oid == hub.repo("user/tiny").refs["main"]

    uploaded = hub.files("user/tiny")
    on_disk = {
        k: v for k, v in local_files(tmp_path / "out").items() if not k.startswith(("_", "checkpoint-"))
    }
    assert uploaded == on_disk and {"model.safetensors", "config.json", "README.md"} <= set(uploaded)
    assert hub.tokens_seen() == {TOKEN}
    for name, data in uploaded.items():
        assert Path(hf_hub_download("user/tiny", name, cache_dir=tmp_path / "cache")).read_bytes() == data
    reloaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "cache" / "models--user--tiny" / "snapshots" / commit.oid
    ).eval()
    assert torch.equal(logits(reloaded, tok), logits(model, tok))
    # Upstream transformers pickles the whole TrainingArguments, hub_token included, into training_args.bin.
    # Nothing else may hold the token (the card and configs do not); unlearning trainers must not leak it.
    leaking = {name for name, data in uploaded.items() if TOKEN.encode() in data}
    assert leaking <= {"training_args.bin"}, leaking
