"""Error messages a user can act on: the CLI's one-line errors, and wrong kinds of model or file named as such."""

import os
import subprocess
import sys

import pytest
import torch
from classif_utils import blobs, tiny_resnet
from datasets import Dataset
from transformers import LlamaConfig, LlamaForSequenceClassification, LlamaModel

from hf_unlearn import cli
from hf_unlearn.cli import load_data, main
from hf_unlearn.tiny import tiny_llama, train_tokenizer

QA = Dataset.from_dict(
    {"question": ["Who is Xanthe?", "Where was she born?"], "answer": ["A poet.", "In Lund."]}
)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("spec", ["./nope-model", "nope/dir/model", "~/surely-not-here-model"])
def test_cli_missing_local_model_says_no_such_file(spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["eval", "--model_name_or_path", spec, "--forget_data", "tofu:forget01"])
    err = capsys.readouterr().err
    assert code == 2
    assert error_lines(err) == [
        f"hf-unlearn: error: --model_name_or_path: no such file or directory: {spec!r}"
    ]
    assert "Repo id" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "spec", ["nope.txt", "nope.jsonl", "data/nope.csv", "./nope", "/no/such/forget.parquet"]
)
def test_cli_missing_data_file_says_no_such_file(spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # the paths are checked before the (slow) model load: a Hub-shaped model name is never fetched
    code = main(["eval", "--model_name_or_path", "some-org/some-model", "--forget_data", spec])
    err = capsys.readouterr().err
    assert code == 2
    assert error_lines(err) == [f"hf-unlearn: error: --forget_data: no such file or directory: {spec!r}"]
    assert "on the Hub" not in err
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        load_data(spec)


def test_cli_existing_local_files_still_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    QA.to_json("forget.jsonl")
    assert load_data("forget.jsonl")["question"] == QA["question"]
    QA.save_to_disk("qa")
    assert load_data("./qa")["answer"] == QA["answer"]


def test_cli_train_checks_paths_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "ga", "--model_name_or_path", "some-org/some-model", "--forget_data", "forget.jsonl"]
    assert main([*argv, "--output_dir", str(tmp_path / "out"), "--report_to", "none"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "hf-unlearn: error: --forget_data: no such file or directory: 'forget.jsonl'"
    ]


def test_cli_usage_errors_are_one_line_on_stderr(capsys):
    assert main(["train", "nope"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("hf-unlearn: error: unknown method 'nope'")
    assert main(["nope"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("hf-unlearn: error: unknown command 'nope'") and "train" in line


def test_cli_unexpected_errors_exit_1_with_one_line(monkeypatch, capsys):
    def boom(argv):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setitem(cli.COMMANDS, "list", boom)
    assert main(["list"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("hf-unlearn: error: first line second line") and "--debug" in line


def test_cli_debug_flag_prints_the_traceback(monkeypatch, capsys):
    def boom(argv):
        raise RuntimeError("boom")

    monkeypatch.setitem(cli.COMMANDS, "list", boom)
    assert main(["--debug", "list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err
    assert error_lines(err)[-1].startswith("hf-unlearn: error: boom")


def test_cli_help_documents_the_local_path_rule(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "local path" in out and "--debug" in out


def _run_cli(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hf_unlearn.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_subprocess_error_is_one_line_without_traceback_unless_debug(tmp_path):
    args = ["eval", "--model_name_or_path", "./nope", "--forget_data", "nope.txt"]
    quiet = _run_cli(*args, cwd=tmp_path)
    assert quiet.returncode == 2, quiet.stderr
    assert "Traceback" not in quiet.stderr
    assert (
        error_lines(quiet.stderr)[-1]
        == "hf-unlearn: error: --model_name_or_path: no such file or directory: './nope'"
    )
    assert sum(line.startswith("hf-unlearn: error:") for line in quiet.stderr.splitlines()) == 1
    loud = _run_cli("--debug", *args, cwd=tmp_path)
    assert loud.returncode == 2
    assert "Traceback" in loud.stderr and "FileNotFoundError" in loud.stderr


# ---------------------------------------------------------------------------- wrong kind of model
def _llama_config():
    return LlamaConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: tiny_resnet(),
        lambda: LlamaModel(_llama_config()),
        lambda: LlamaForSequenceClassification(_llama_config()),
    ],
    ids=["resnet", "llama-without-lm-head", "llama-classifier"],
)
def test_guard_refuses_a_model_that_is_not_a_causal_lm(make, tmp_path):
    from hf_unlearn.generation import GUARD, mean_pooled_hidden_states

    model = make()
    name = type(model).__name__
    tok = train_tokenizer(["Who is Xanthe? A poet. Where was she born? In Lund."] * 4, vocab_size=300)
    with pytest.raises(TypeError, match=rf"{name}.*causal language model"):
        GUARD.from_forget_set(model, tok, QA, negatives=["What is two plus two?"])
    with pytest.raises(TypeError, match=rf"{name}.*causal language model"):
        GUARD.from_pretrained(tmp_path, model, tok)
    with pytest.raises(TypeError, match=rf"{name}.*causal language model"):
        mean_pooled_hidden_states(model, torch.tensor([[1, 2]]), torch.tensor([[1, 1]]))


def test_classification_eval_refuses_a_causal_lm():
    from hf_unlearn.evaluation.classification import evaluate_unlearning, predict

    tok = train_tokenizer(["some text to train a tokenizer"] * 4, vocab_size=300)
    lm = tiny_llama(tok, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    data = Dataset.from_dict({"input_ids": [[1, 2, 3]] * 4, "labels": [0, 1, 0, 1]})
    with pytest.raises(TypeError, match=r"LlamaForCausalLM is a causal language model.*evaluate_tofu"):
        evaluate_unlearning(lm, data, data, data)
    with pytest.raises(TypeError, match=r"LlamaForCausalLM is a causal language model.*evaluate_tofu"):
        predict(lm, data)
    with pytest.raises(TypeError, match=r"LlamaModel is not a classifier"):
        predict(LlamaModel(_llama_config()), data)
    resnet = tiny_resnet()
    assert predict(resnet, blobs(6))[0].shape == (6, 3)  # classifiers still pass


# ------------------------------------------------------------------------------------ corrupt files
def test_prompt_classifier_names_a_corrupt_safetensors_file(tmp_path):
    from hf_unlearn.generation import PromptClassifier
    from hf_unlearn.generation.classifier import CLASSIFIER_FILE

    PromptClassifier.seeded(4, 8).save_pretrained(tmp_path)
    (tmp_path / CLASSIFIER_FILE).write_bytes(b"this is not a safetensors file")
    path = str(tmp_path / CLASSIFIER_FILE)
    with pytest.raises(ValueError, match="not a valid safetensors file") as info:
        PromptClassifier.from_pretrained(tmp_path)
    assert path in str(info.value)
