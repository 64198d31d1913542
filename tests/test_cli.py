import json

import pytest
from utils import demo_world

from hf_unlearn.cli import main


def test_list_names_every_method_with_its_paper(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for method in ("flat", "ga", "graddiff", "npo", "idk", "ssd", "salun", "iau"):
        assert f"\n{method} " in "\n" + out
    assert "2410.11143" in out and "2308.07707" in out and "2310.12508" in out and "2507.23257" in out


def test_train_help_lists_config_fields(capsys):
    with pytest.raises(SystemExit):
        main(["train", "flat", "--help"])
    out = capsys.readouterr().out
    assert "--divergence" in out and "--official_padding_mean" in out and "--forget_data" in out


def test_unknown_method_is_a_clear_error(capsys):
    assert main(["train", "nope"]) == 2
    assert capsys.readouterr().err.startswith("hf-unlearn: error: unknown method 'nope'")


def test_train_and_eval_from_local_files(tmp_path, capsys):
    data, tok, model = demo_world()
    src = tmp_path / "model"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    data["forget"].to_json(tmp_path / "forget.jsonl")
    data["retain"].to_json(tmp_path / "retain.jsonl")
    out = tmp_path / "unlearned"
    code = main(
        [
            "train",
            "graddiff",
            "--model_name_or_path",
            str(src),
            "--forget_data",
            str(tmp_path / "forget.jsonl"),
            "--retain_data",
            str(tmp_path / "retain.jsonl"),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--report_to",
            "none",
            "--use_cpu",
            "--save_strategy",
            "no",
        ]
    )
    assert code == 0
    assert (out / "model.safetensors").exists()
    card = (out / "README.md").read_text()
    assert "graddiff" in card and "max_steps" in card
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                "--model_name_or_path",
                str(out),
                "--forget_data",
                str(tmp_path / "forget.jsonl"),
                "--retain_data",
                str(tmp_path / "retain.jsonl"),
                "--retain_model",
                str(src),
                "--max_new_tokens",
                "8",
                "--output",
                str(report),
            ]
        )
        == 0
    )
    result = json.loads(report.read_text())
    assert 0 <= result["forget_quality"] <= 1
    assert set(result["splits"]) == {"forget", "retain"}


def test_demo_writes_checkpoint_card_report_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output_dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    # the target memorised the forget people, and FLAT lowered their answer probability
    assert m["target"]["forget_probability"] > 0.9
    assert m["unlearned"]["forget_probability"] < 0.5 * m["target"]["forget_probability"]
    assert (out / "flat-unlearned" / "model.safetensors").exists()
    assert "forget_quality" in (out / "flat-unlearned" / "README.md").read_text()
    assert (out / "report.png").stat().st_size > 10_000 and (out / "report.md").exists()


def test_train_ssd_and_eval_an_image_classifier_from_disk(tmp_path, capsys):
    from classif_utils import blobs, tiny_resnet

    src = tmp_path / "resnet"
    tiny_resnet().save_pretrained(src)
    data = blobs(30)
    data.filter(lambda r: r["labels"] == 0).save_to_disk(str(tmp_path / "forget"))
    data.filter(lambda r: r["labels"] != 0).save_to_disk(str(tmp_path / "retain"))
    blobs(12, seed=1).save_to_disk(str(tmp_path / "test"))
    out = tmp_path / "unlearned"
    common = ["--forget_data", str(tmp_path / "forget"), "--retain_data", str(tmp_path / "retain")]
    code = main(
        ["train", "ssd", "--model_name_or_path", str(src), *common, "--output_dir", str(out)]
        + ["--selection_weighting", "2", "--importance_batch_size", "5", "--report_to", "none", "--use_cpu"]
    )
    assert code == 0
    assert (out / "model.safetensors").exists() and (out / "ssd_full_importance.safetensors").exists()
    card = (out / "README.md").read_text()
    assert "α = 2.0" in card and "image-classification" in card
    capsys.readouterr()
    assert (
        main(["eval", "--model_name_or_path", str(out), *common, "--test_data", str(tmp_path / "test")]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert {"UA", "RA", "TA", "MIA", "entropy_MIA"} <= set(result)


def test_train_refuses_a_method_that_is_not_a_trainer(capsys):
    assert main(["train", "guard"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("hf-unlearn: error: guard is a logits processor, not a trainer")
        and err.count("\n") == 1
    )
    assert main(["train"]) == 2
    assert "missing <method>" in capsys.readouterr().err
    assert main(["train", "--help"]) == 0
    assert "methods: " in capsys.readouterr().out
