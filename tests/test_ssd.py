import copy
import math
import os
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from classif_utils import blobs, tiny_resnet
from safetensors.torch import load_file, save_file
from utils import demo_world, run_torchrun

from hf_unlearn.importance.fisher import (
    accumulate_importance,
    adaptive_alpha,
    dampen_,
    dampening_factors,
    load_importance,
    save_importance,
)
from hf_unlearn.trainers.ssd import FULL_IMPORTANCE_FILE, SSDConfig, SSDTrainer

COMMON = dict(report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no")


class TwoWeights(torch.nn.Module):
    """ŷ = w1·x1 + w2·x2, loss = mean (ŷ − y)²: gradients by hand are mean 2(ŷ − y)·x."""

    def __init__(self, w1, w2):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.tensor(w1))
        self.w2 = torch.nn.Parameter(torch.tensor(w2))

    def forward(self, x, labels=None):
        pred = self.w1 * x[:, 0] + self.w2 * x[:, 1]
        loss = None if labels is None else ((pred - labels) ** 2).mean()
        return SimpleNamespace(loss=loss, logits=pred[:, None])


def mean_importance(model, batches, definition: str = "batch") -> dict:
    """I[i] = (1/T) Σ_t g_t[i]², T = number of batches or samples: what ``SSDTrainer.importance`` computes."""
    sums, count = accumulate_importance(model, batches, definition)
    return {n: s / count for n, s in sums.items()}


def _state(model):
    return {n: t.clone() for n, t in model.state_dict().items()}


def _unchanged(model, before) -> bool:
    return all(torch.equal(t, before[n]) for n, t in model.state_dict().items())


def test_dampening_factors_hand_values():
    i_full = torch.tensor([1.0, 1.0, 0.0, 2.0])
    i_forget = torch.tensor([20.0, 5.0, 3.0, 0.0])
    selected, beta = dampening_factors(i_full, i_forget, alpha=10.0, lam=1.0)
    assert selected.tolist() == [True, False, True, False]  # 20 > 10, 5 < 10, 3 > 0, 0 > 20 no
    assert beta.tolist() == pytest.approx([1 / 20, 0.0])  # λ·I_D/I_f; I_D = 0 zeroes the weight
    # λ > α lets the clamp act: β = min(30·1/20, 1) = 1
    assert dampening_factors(i_full, i_forget, 10.0, 30.0)[1].tolist() == pytest.approx([1.0, 0.0])


def test_two_parameter_model_hand_computed_importance_and_edit():
    model = TwoWeights(1.0, 1.0)
    # batch A: x=(1,0), y=0 → residual 1 → grad (2, 0); batch B: x=(0,2), y=1 → residual 1 → grad (0, 4)
    forget = [{"x": torch.tensor([[1.0, 0.0]]), "labels": torch.tensor([0.0])}]
    full = forget + [{"x": torch.tensor([[0.0, 2.0]]), "labels": torch.tensor([1.0])}]
    i_f = mean_importance(model, forget)  # one batch: (4, 0)
    i_d = mean_importance(model, full)  # ((4 + 0)/2, (0 + 16)/2) = (2, 8)
    assert i_f["w1"].item() == pytest.approx(4.0) and i_f["w2"].item() == 0.0
    assert i_d["w1"].item() == pytest.approx(2.0) and i_d["w2"].item() == pytest.approx(8.0)
    counts = dampen_(model, i_d, i_f, alpha=1.5, lam=1.0)  # w1: 4 > 3 → β = 2/4; w2: 0 > 12 no
    assert counts == {"w1": 1, "w2": 0}
    assert model.w1.item() == pytest.approx(0.5) and model.w2.item() == 1.0
    # label-free: |∂ mean(ŷ²)/∂w| = |2ŷx| with ŷ = 0.5·1 = 0.5 → (1, 0)
    sums, n = accumulate_importance(model, forget, label_free=True)
    assert n == 1 and sums["w1"].item() == pytest.approx(1.0) and sums["w2"].item() == 0.0


def test_per_sample_importance_does_not_depend_on_batch_size():
    model, ds = tiny_resnet(), blobs(12).with_format("torch")
    rows = [ds[i] for i in range(12)]

    def batches(b):
        return [{k: torch.stack([r[k] for r in rows[i : i + b]]) for k in rows[0]} for i in range(0, 12, b)]

    one = mean_importance(model, batches(1), "per_sample")
    four = mean_importance(model, batches(4), "per_sample")
    assert all(torch.allclose(one[n], four[n], rtol=1e-4, atol=1e-10) for n in one)
    loop = accumulate_importance(model, batches(4), "per_sample", vectorize=False)  # one backward per row
    assert loop[1] == 12 and all(torch.allclose(loop[0][n] / 12, one[n], rtol=1e-4, atol=1e-10) for n in one)
    lf_vmap, _ = accumulate_importance(model, batches(4), "per_sample", label_free=True)
    lf_loop, _ = accumulate_importance(model, batches(4), "per_sample", label_free=True, vectorize=False)
    assert all(torch.allclose(lf_vmap[n], lf_loop[n], rtol=1e-4, atol=1e-10) for n in lf_loop)
    ref = mean_importance(model, batches(4), "batch")  # squared batch means: smaller for noisy directions
    assert sum(v.sum() for v in ref.values()) < sum(v.sum() for v in one.values())


def _ssd(tmp_path, model, alpha=10.0, **kw):
    ds = blobs(30)
    forget = ds.filter(lambda r: r["labels"] == 0)
    retain = ds.filter(lambda r: r["labels"] != 0)
    args = SSDConfig(output_dir=str(tmp_path), selection_weighting=alpha, importance_batch_size=5, **COMMON)
    return SSDTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain, **kw)


def test_ssd_edits_only_selected_weights_and_never_grows_them(tmp_path):
    model = tiny_resnet()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _ssd(tmp_path, model, alpha=2.0)
    i_forget = trainer.importance(trainer.train_dataset.views["forget"])
    out = trainer.train()
    assert out.metrics["dampened_parameters"] == sum(trainer.dampened.values()) > 0
    i_full = load_file(str(tmp_path / FULL_IMPORTANCE_FILE))
    for n, p in model.named_parameters():
        selected, _ = dampening_factors(i_full[n], i_forget[n], 2.0, 1.0)
        assert torch.equal(p[~selected], before[n][~selected]), n  # bit-identical
        assert (p.abs() <= before[n].abs()).all(), n
        assert trainer.dampened[n] == int(selected.sum())
    trainer.save_model()
    card = (tmp_path / "README.md").read_text()
    assert "α = 2.0" in card and "dampened parameters" in card and "`classifier.1`" in card


def test_adaptive_alpha_by_hand():
    i_full = {"a": torch.tensor([1.0, 2.0, 0.0, 1.0]), "b": torch.tensor([[4.0]])}
    i_forget = {"a": torch.tensor([3.0, 1.0, 5.0, 0.0]), "b": torch.tensor([[2.0]])}
    # ratios where I_D > 0: 3, 0.5, 0, 0.5 -> sorted 0, 0.5, 0.5, 3; the element with I_D = 0 is left out.
    # 50th percentile: position 1.5 -> 0.5; 90th: position 2.7 -> 0.5 + 0.7·(3 − 0.5) = 2.25
    assert adaptive_alpha(i_full, i_forget, 50) == pytest.approx(0.5)
    assert adaptive_alpha(i_full, i_forget, 90) == pytest.approx(2.25)
    assert adaptive_alpha(i_full, i_forget, 90) == pytest.approx(
        torch.quantile(torch.tensor([3.0, 0.5, 0.0, 0.5], dtype=torch.float64), 0.9).item()
    )
    selected, _ = dampening_factors(i_full["a"], i_forget["a"], 2.25, 1.0)
    assert selected.tolist() == [True, False, True, False]  # 3 > 2.25·1, 1 < 2.25·2, 5 > 0, 0 = 0
    with pytest.raises(ValueError, match="zero everywhere"):
        adaptive_alpha({"a": torch.zeros(2)}, {"a": torch.ones(2)})
    with pytest.raises(ValueError, match="percentile"):
        adaptive_alpha(i_full, i_forget, 100)


def test_adaptive_ssd_edit_equals_fixed_ssd_at_the_computed_alpha(tmp_path):
    model = tiny_resnet()
    twin = copy.deepcopy(model)
    trainer = _ssd(tmp_path / "a", model, alpha=123.0)
    trainer.args.selection = "adaptive"
    i_forget = trainer.importance(trainer.train_dataset.views["forget"])
    metrics = trainer.train().metrics
    i_full = load_file(str(tmp_path / "a" / FULL_IMPORTANCE_FILE))
    alpha = adaptive_alpha(i_full, i_forget, 99.0)
    assert metrics["alpha"] == pytest.approx(alpha) and trainer.alpha == pytest.approx(alpha)
    assert metrics["dampened_parameters"] > 0
    fixed = _ssd(tmp_path / "b", twin, alpha=alpha)
    fixed.train()
    for (n, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    trainer.save_model()
    assert "adaptive SSD" in (tmp_path / "a" / "README.md").read_text()


def test_ssd_huge_alpha_changes_nothing(tmp_path):
    model = tiny_resnet()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _ssd(tmp_path, model, alpha=float("inf"))
    with pytest.warns(UserWarning, match="selected no parameter.*model is unchanged"):
        assert trainer.train().metrics["dampened_parameters"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_saved_full_importance_is_reused_without_data(tmp_path):
    a, b = tiny_resnet(), tiny_resnet()
    before = _state(a)
    _ssd(tmp_path / "first", a, alpha=2.0).train()
    assert not _unchanged(a, before)
    path = tmp_path / "first" / FULL_IMPORTANCE_FILE
    forget = blobs(30).filter(lambda r: r["labels"] == 0)
    args = SSDConfig(
        output_dir=str(tmp_path / "second"),
        importance_batch_size=5,
        selection_weighting=2.0,
        full_importance_path=str(path),
        **COMMON,
    )
    SSDTrainer(model=b, args=args, forget_dataset=forget).train()  # no retain/full data needed
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_importance_file_of_another_architecture_is_refused(tmp_path):
    other = tiny_resnet(num_labels=4)  # classifier head of another shape
    save_importance(
        {n: torch.ones_like(p) for n, p in other.named_parameters()}, tmp_path / "i.safetensors", other
    )
    args = SSDConfig(
        output_dir=str(tmp_path / "o"), full_importance_path=str(tmp_path / "i.safetensors"), **COMMON
    )
    with pytest.raises(
        ValueError, match=r"i\.safetensors.*does not match the model's parameters.*'classifier\.1\.weight'"
    ):
        SSDTrainer(model=tiny_resnet(), args=args, forget_dataset=blobs(6))
    save_importance(
        {n: torch.ones_like(p) for n, p in tiny_resnet().named_parameters()},
        tmp_path / "lf.safetensors",
        definition="batch",
        label_free=True,
    )
    args = SSDConfig(
        output_dir=str(tmp_path / "o"), full_importance_path=str(tmp_path / "lf.safetensors"), **COMMON
    )
    with pytest.raises(ValueError, match="label_free"):
        SSDTrainer(model=tiny_resnet(), args=args, forget_dataset=blobs(6))


def _spoil(importance: dict, case: str) -> dict:
    """A copy of a valid importance with one defect in the tensor 'classifier.1.weight'."""
    out = {n: t.clone() for n, t in importance.items()}
    name = "classifier.1.weight"
    if case == "missing":
        del out[name]
    elif case == "shape":
        out[name] = out[name][:2]
    elif case == "nan":
        out[name][0, 0] = math.nan
    elif case == "negative":
        out[name][0, 0] = -1.0
    elif case == "zero":
        out = {n: torch.zeros_like(t) for n, t in out.items()}
    return out


BAD_IMPORTANCE = {
    "missing": r"missing.*'classifier\.1\.weight'",
    "shape": r"'classifier\.1\.weight' has shape \(2, 16\), expected \(3, 16\)",
    "nan": r"NaN/inf.*'classifier\.1\.weight'",
    "negative": r"negative.*'classifier\.1\.weight'",
    "zero": r"zero everywhere",
}


@pytest.mark.parametrize("source", ["dict", "file"])
@pytest.mark.parametrize("case", list(BAD_IMPORTANCE))
def test_bad_full_importance_is_refused_before_any_edit(tmp_path, source, case):
    model = tiny_resnet()
    good = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    bad = _spoil(good, case)
    kw, match = {}, BAD_IMPORTANCE[case]
    if source == "file":
        save_importance(bad, tmp_path / "bad.safetensors", model, definition="batch", label_free=False)
        kw["full_importance_path"], match = str(tmp_path / "bad.safetensors"), "bad.safetensors.*" + match
    before = _state(model)
    args = SSDConfig(output_dir=str(tmp_path / "out"), importance_batch_size=5, **COMMON, **kw)
    with pytest.raises(ValueError, match=match):
        trainer = SSDTrainer(
            model=model, args=args, forget_dataset=blobs(6), full_importance=bad if source == "dict" else None
        )
        trainer.train()
    assert _unchanged(model, before)


@pytest.mark.parametrize("where, which", [("forget", "I_f"), ("retain", "I_D")])
def test_nan_row_is_refused_and_no_nan_importance_is_saved(tmp_path, where, which):
    forget = blobs(30).filter(lambda r: r["labels"] == 0)
    retain = blobs(30).filter(lambda r: r["labels"] != 0)
    nan_row = {"pixel_values": [[[math.nan] + [0.0] * 7] + [[0.0] * 8] * 7], "labels": 0}
    poisoned = datasets.concatenate_datasets([datasets.Dataset.from_list([nan_row]).cast(forget.features)])
    if where == "forget":
        forget = datasets.concatenate_datasets([forget, poisoned])
    else:
        retain = datasets.concatenate_datasets([retain, poisoned])
    model = tiny_resnet()
    before = _state(model)
    args = SSDConfig(output_dir=str(tmp_path), importance_batch_size=5, **COMMON)
    trainer = SSDTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain)
    with pytest.raises(ValueError, match=f"{which}.*NaN/inf"):
        trainer.train()
    assert _unchanged(model, before)
    assert not (tmp_path / FULL_IMPORTANCE_FILE).exists()


def test_dampen_is_all_or_nothing():
    model = TwoWeights(1.0, 0.0)
    i_forget = {"w1": torch.tensor(4.0), "w2": torch.tensor(0.0)}
    before = _state(model)
    with pytest.raises(ValueError, match="missing.*'w2'"):
        dampen_(model, {"w1": torch.tensor(1.0)}, i_forget, alpha=1.5, lam=1.0)  # w1 would be dampened
    assert _unchanged(model, before)
    with pytest.raises(ValueError, match="negative.*'w2'"):  # β = −1/0 = −inf: w2 = 0·(−inf) = NaN
        dampen_(model, {"w1": torch.tensor(1.0), "w2": torch.tensor(-1.0)}, i_forget, alpha=1.5, lam=1.0)
    assert _unchanged(model, before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            dampen_(model, {"w1": torch.tensor(1.0), "w2": torch.tensor(1.0)}, i_forget, 1.5, 1.0)["w1"] == 1
        )


@pytest.mark.parametrize(
    "content, match",
    [
        (b"hello world, not a safetensors file" * 3, "header too large"),
        (b"", "header too small"),
        ("truncated", "incomplete metadata"),
    ],
)
def test_corrupt_importance_file_names_the_file(tmp_path, content, match):
    path = tmp_path / "corrupt.safetensors"
    if content == "truncated":
        model = tiny_resnet()
        save_importance({n: torch.ones_like(p) for n, p in model.named_parameters()}, path, model)
        content = path.read_bytes()[:-100]
    path.write_bytes(content)
    args = SSDConfig(output_dir=str(tmp_path / "o"), full_importance_path=str(path), **COMMON)
    with pytest.raises(ValueError, match=f"{path}.* not a valid safetensors file .*{match}"):
        SSDTrainer(model=tiny_resnet(), args=args, forget_dataset=blobs(6))


def test_missing_file_or_foreign_metadata_is_named(tmp_path):
    model = tiny_resnet()
    path = tmp_path / "foreign.safetensors"
    save_file({n: torch.ones_like(p) for n, p in model.named_parameters()}, str(path), {"note": "not json"})
    with pytest.raises(ValueError, match=r"foreign\.safetensors has metadata that save_importance did not"):
        load_importance(path, model)
    with pytest.raises(FileNotFoundError, match="no importance file at .*absent.safetensors"):
        load_importance(tmp_path / "absent.safetensors", model)


def test_label_free_ssd_ignores_labels(tmp_path):
    ds = blobs(20)
    flipped = ds.map(lambda r: {"labels": (r["labels"] + 1) % 3})
    results = []
    for i, data in enumerate((ds, flipped)):
        model = tiny_resnet()
        args = SSDConfig(
            output_dir=str(tmp_path / str(i)), label_free=True, selection_weighting=2.0, **COMMON
        )
        SSDTrainer(model=model, args=args, forget_dataset=data.select(range(5)), retain_dataset=data).train()
        results.append([p.detach() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_ssd_on_a_causal_lm_with_qa_data(tmp_path):
    data, tok, model = demo_world()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = SSDConfig(output_dir=str(tmp_path), importance_batch_size=4, selection_weighting=5.0, **COMMON)
    trainer = SSDTrainer(
        model=model,
        args=args,
        forget_dataset=data["forget"],
        retain_dataset=data["retain"],
        processing_class=tok,
    )
    assert trainer.train().metrics["dampened_parameters"] > 0
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and set(changed) <= {n for n, c in trainer.dampened.items() if c}


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(selection_weighting=0.0), "selection_weighting"),
        (dict(selection_weighting=-1.0), "selection_weighting"),
        (dict(dampening_constant=-0.1), "dampening_constant"),
        (dict(importance_batch_size=0), "importance_batch_size"),
        (dict(importance_definition="hessian"), "importance_definition"),
        (dict(selection="auto"), "selection"),
        (dict(adaptive_percentile=0.0), "adaptive_percentile"),
    ],
)
def test_ssd_config_rejects_impossible_values(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        SSDConfig(output_dir=str(tmp_path), **COMMON, **kw)


def test_ssd_bad_data(tmp_path):
    args = SSDConfig(output_dir=str(tmp_path), **COMMON)
    ds = blobs(9)
    with pytest.raises(ValueError, match="labels \\[5\\] that the model does not have"):
        SSDTrainer(
            model=tiny_resnet(), args=args, forget_dataset=ds.map(lambda r: {"labels": 5}), retain_dataset=ds
        )
    with pytest.raises(ValueError, match="forget_dataset is empty"):
        SSDTrainer(model=tiny_resnet(), args=args, forget_dataset=ds.select([]), retain_dataset=ds)
    with pytest.raises(ValueError, match="retain_dataset is empty"):
        SSDTrainer(model=tiny_resnet(), args=args, forget_dataset=ds, retain_dataset=ds.select([]))
    with pytest.raises(ValueError, match="needs the full-data importance"):
        SSDTrainer(model=tiny_resnet(), args=args, forget_dataset=ds)
    from transformers import ResNetModel

    with pytest.raises(
        TypeError, match="ResNetModel is not a causal language model .* or an image/text classifier"
    ):
        SSDTrainer(model=ResNetModel(tiny_resnet().config), args=args, forget_dataset=ds, retain_dataset=ds)
    with pytest.raises(TypeError, match="merge the adapter first"):
        from peft import LoraConfig

        data, tok, lm = demo_world()
        lora = LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")
        SSDTrainer(
            model=lm,
            args=args,
            forget_dataset=data["forget"],
            retain_dataset=data["retain"],
            processing_class=tok,
            peft_config=lora,
        )
    with pytest.raises(ValueError, match="no label column"):
        SSDTrainer(
            model=tiny_resnet(), args=args, forget_dataset=ds.remove_columns("labels"), retain_dataset=ds
        )


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.environ.get("VIRTUAL_ENV"), reason="no torchrun"
)
def test_ssd_two_processes_equal_one_process(tmp_path):
    src = tmp_path / "src"
    tiny_resnet().save_pretrained(src)
    blobs(30).save_to_disk(str(src / "data"))
    for nproc in (1, 2):
        run_torchrun(Path(__file__).with_name("dist_ssd.py"), src, tmp_path / f"out{nproc}", nproc=nproc)
    one, two = (load_file(str(tmp_path / f"out{n}" / "model.safetensors")) for n in (1, 2))
    src_w = load_file(str(src / "model.safetensors"))
    assert any(not torch.equal(one[k], src_w[k]) for k in one)  # the edit did something
    for k in one:
        assert torch.allclose(one[k], two[k], rtol=1e-5, atol=1e-7), k
    r0, r1 = ((tmp_path / "out2" / f"rank{r}.txt").read_text() for r in (0, 1))
    assert r0 == r1  # both ranks applied the same edit


def test_per_sample_importance_on_a_causal_lm_falls_back_to_the_exact_loop(tmp_path):
    data, tok, model = demo_world()
    args = SSDConfig(
        output_dir=str(tmp_path), importance_definition="per_sample", importance_batch_size=3, **COMMON
    )
    trainer = SSDTrainer(
        model=model,
        args=args,
        forget_dataset=data["forget"].select(range(5)),
        retain_dataset=data["retain"],
        processing_class=tok,
    )
    fast = trainer.importance(trainer.train_dataset.views["forget"])  # vmap fails on Llama: per-row loop
    sums, n = accumulate_importance(
        model, trainer.rank_batches(trainer.train_dataset.views["forget"], 1), "per_sample", vectorize=False
    )
    assert n == 5 and all(torch.allclose(fast[k], sums[k] / 5, rtol=1e-4, atol=1e-12) for k in sums)
