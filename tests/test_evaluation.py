"""Tests of hf_unlearn.evaluation: hand-computed metric values, perturbed answers, end-to-end TOFU
evaluation of tiny models, real TOFU rows (skipped without ../shared/data/tofu) and evaluate modules."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"

import inspect  # noqa: E402
import math  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from utils import demo_world  # noqa: E402

from hf_unlearn.data.tofu import load_tofu  # noqa: E402
from hf_unlearn.evaluation import (  # noqa: E402
    answer_logprobs,
    build_perturbed_answers,
    evaluate_tofu,
    forget_quality,
    generate_answers,
    harmonic_mean,
    log_normalised_probability,
    metric_path,
    mia_auc,
    min_k_mia,
    min_k_percent_score,
    model_truth_ratios,
    probability_score,
    rouge_l_recall,
    token_logprobs,
    truth_ratio_score,
    truth_ratios,
)
from hf_unlearn.tiny import tiny_llama, train_tokenizer  # noqa: E402

TOFU_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"
log = math.log


# --- pure functions ------------------------------------------------------------------------------


def test_token_logprobs_by_hand():
    # vocab of 2; position t predicts token t + 1
    logits = torch.tensor(
        [
            [[0.0, log(3)], [0.0, log(4)], [5.0, 5.0]],  # p(1) = 3/4, then p(0) = 1/5
            [[1.0, 2.0], [0.0, log(9)], [0.0, 0.0]],  # only the last token is scored: p(1) = 9/10
        ]
    )
    labels = torch.tensor([[-100, 1, 0], [-100, -100, 1]])
    logprobs, mask = token_logprobs(logits, labels)
    assert mask.tolist() == [[True, True], [False, True]]
    expected = torch.tensor([[log(3 / 4), log(1 / 5)], [0.0, log(9 / 10)]])
    torch.testing.assert_close(logprobs, expected)


def test_length_normalised_probability():
    lp = log_normalised_probability([torch.tensor([log(0.5), log(0.125)]), torch.tensor([log(0.9)])])
    torch.testing.assert_close(lp.exp(), torch.tensor([0.25, 0.9], dtype=torch.float64))  # sqrt(.5 * .125)
    with pytest.raises(ValueError, match="no answer tokens"):
        log_normalised_probability([torch.tensor([])])


def test_probability_score_absolute_and_relative():
    log_p = torch.tensor([0.25, 0.5]).log()
    assert probability_score(log_p) == pytest.approx(0.375)
    # relative: mean(.25 / (.25 + .25 + .25), .5 / (.5 + .25 + .25)) = (1/3 + 1/2) / 2
    pert = torch.tensor([[0.25, 0.25], [0.25, 0.25]]).log()
    assert probability_score(log_p, pert) == pytest.approx(5 / 12)
    # NaN marks a missing perturbed answer: mean(.25 / .5, .5 / 1.5)
    ragged = torch.tensor([[0.25, math.nan], [0.5, 0.5]]).log()
    assert probability_score(log_p, ragged) == pytest.approx(5 / 12)


def test_truth_ratio_and_scores():
    log_p = torch.tensor([0.5, 0.2]).log()
    pert = torch.tensor([[0.1, 0.3], [0.4, math.nan]]).log()
    r = truth_ratios(log_p, pert)
    torch.testing.assert_close(r, torch.tensor([0.4, 2.0], dtype=torch.float64))  # .2/.5, .4/.2
    assert truth_ratio_score(r) == pytest.approx((0.6 + 0.0) / 2)  # max(0, 1 - R)
    assert truth_ratio_score(r, forget=True) == pytest.approx((0.4 + 0.5) / 2)  # min(R, 1/R)
    # probabilities far below float range: computed in log space, no 0/0
    tiny = truth_ratios(torch.tensor([-2000.0]), torch.tensor([[-2001.0, -2001.0]]))
    assert tiny.item() == pytest.approx(math.exp(-1))
    with pytest.raises(ValueError, match="at least one perturbed"):
        truth_ratios(log_p, torch.tensor([[0.1], [math.nan]]).log())


def test_truth_ratio_arithmetic_and_geometric_means_by_hand():
    log_p = torch.tensor([0.5, 0.2]).log()
    pert = torch.tensor([[0.1, 0.4], [0.4, math.nan]]).log()
    # TOFU paper: arithmetic mean of the perturbed P_norm: (.1 + .4) / 2 / .5, .4 / .2
    arith = truth_ratios(log_p, pert, truth_ratio_mean="arithmetic")
    torch.testing.assert_close(arith, torch.tensor([0.5, 2.0], dtype=torch.float64))
    # TOFU's code (aggregate_eval_stat.py) and open-unlearning (exp of the mean per-token loss):
    # geometric mean sqrt(.1 * .4) = .2, so .2 / .5; one perturbed answer: the same .4 / .2
    geo = truth_ratios(log_p, pert, truth_ratio_mean="geometric")
    torch.testing.assert_close(geo, torch.tensor([0.4, 2.0], dtype=torch.float64))
    torch.testing.assert_close(truth_ratios(log_p, pert), arith)  # the default: arithmetic (paper)
    tiny = truth_ratios(
        torch.tensor([-2000.0]), torch.tensor([[-2001.0, -2003.0]]), truth_ratio_mean="geometric"
    )
    assert tiny.item() == pytest.approx(math.exp(-2))
    with pytest.raises(ValueError, match="geometric"):
        truth_ratios(log_p, pert, truth_ratio_mean="harmonic")


def test_harmonic_mean():
    assert harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)  # 3 / (1 + 2 + 4)
    assert harmonic_mean([0.9, 0.0, 0.8]) == 0.0
    for bad in ([], [0.5, -0.1], [math.nan]):
        with pytest.raises(ValueError):
            harmonic_mean(bad)


def test_min_k_percent_score():
    lp = torch.tensor([-1.0, -5.0, -2.0, -0.5, -3.0, -4.0, -0.1, -0.2, -0.3, -0.4])
    assert min_k_percent_score(lp, k=0.2) == pytest.approx(-4.5)  # the 2 lowest: -5, -4
    assert min_k_percent_score(lp, k=0.05) == pytest.approx(-5.0)  # at least one token
    assert min_k_percent_score(lp, k=1.0) == pytest.approx(lp.mean().item())
    with pytest.raises(ValueError):
        min_k_percent_score(lp, k=0.0)
    with pytest.raises(ValueError):
        min_k_percent_score(lp[None], k=0.2)


def test_min_k_percent_score_open_unlearning_k():
    # 9 tokens (10 minus the EOS), k = 0.4: floor(3.6) = 3 lowest: -5, -4, -3
    lp = torch.tensor([-1.0, -5.0, -2.0, -0.5, -3.0, -4.0, -0.1, -0.2, -0.3])
    assert min_k_percent_score(lp, k=0.4) == pytest.approx(-4.0)


def test_mia_auc():
    assert mia_auc([3.0, 2.0, 1.0, 0.0], [1, 1, 0, 0]) == 1.0
    assert mia_auc([0.0, 1.0, 2.0, 3.0], [1, 1, 0, 0]) == 0.0
    assert mia_auc([1.0, 2.0, 1.0, 2.0], [1, 1, 0, 0]) == 0.5
    with pytest.raises(ValueError, match="both 0"):
        mia_auc([1.0, 2.0], [1, 1])


def test_forget_quality_identical_and_disjoint():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(200, generator=gen).tolist()
    same = forget_quality(a, a)
    assert same == {"forget_quality": 1.0, "ks_statistic": 0.0}
    resampled = forget_quality(a, torch.rand(200, generator=gen).tolist())
    assert resampled["forget_quality"] > 0.05
    disjoint = forget_quality([x + 2 for x in a[:50]], a[:50])
    assert disjoint["ks_statistic"] == 1.0
    assert disjoint["forget_quality"] < 1e-10


def test_rouge_l_recall():
    scores = rouge_l_recall(["born in Paris", "She was born in Paris", ""], ["She was born in Paris"] * 3)
    assert scores == pytest.approx([3 / 5, 1.0, 0.0])
    with pytest.raises(ValueError):
        rouge_l_recall(["a"], ["a", "b"])


# --- perturbed answers ---------------------------------------------------------------------------


def _grouped(n_authors, n_rows, group_column="author_index"):
    rows = [
        {"question": f"q{g}-{k}", "answer": f"a{g}-{k}", group_column: g}
        for g in range(n_authors)
        for k in range(n_rows)
    ]
    return Dataset.from_list(rows)


def test_perturbed_answers_same_position_of_other_authors():
    ds = _grouped(4, 3)
    out = build_perturbed_answers(ds, n=3)
    for row, pert in zip(ds, out, strict=True):
        g, k = row["author_index"], int(row["answer"].split("-")[1])
        assert sorted(pert) == sorted(f"a{h}-{k}" for h in range(4) if h != g)  # all 3 other authors
    ds = _grouped(6, 4)
    out = build_perturbed_answers(ds, n=2, seed=1)
    assert out == build_perturbed_answers(ds, n=2, seed=1)  # deterministic
    assert out != build_perturbed_answers(ds, n=2, seed=2)
    for row, pert in zip(ds, out, strict=True):
        k = row["answer"].split("-")[1]
        assert len(set(pert)) == 2 and row["answer"] not in pert
        assert all(p.split("-")[1] == k for p in pert)  # same position
    assert ds.column_names == ["question", "answer", "author_index"]  # pure


def test_perturbed_answers_top_up_and_no_group_column():
    ds = _grouped(2, 4)  # only one other author per position: the rest comes from other rows
    for row, pert in zip(ds, build_perturbed_answers(ds, n=3), strict=True):
        g, k = row["answer"][1], row["answer"].split("-")[1]
        assert pert[0] == f"a{1 - int(g)}-{k}"
        assert len(set(pert)) == 3 and row["answer"] not in pert
    plain = ds.remove_columns("author_index")
    for row, pert in zip(plain, build_perturbed_answers(plain, n=3), strict=True):
        assert len(set(pert)) == 3 and row["answer"] not in pert
    # the text of a row's own answer is never picked, even from another row
    dup = Dataset.from_dict({"question": list("abcde"), "answer": ["x", "x", "y", "z", "w"]})
    for row, pert in zip(dup, build_perturbed_answers(dup, n=2, group_column=None), strict=True):
        assert row["answer"] not in pert
    with pytest.raises(ValueError, match="distinct answers"):
        build_perturbed_answers(dup, n=4)


# --- tiny models on demo data --------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    ds, tok, trained = demo_world()  # the shared tiny Llama fine-tuned on forget ∪ retain (tests/utils.py)
    untrained = tiny_llama(tok, seed=1).eval()
    # stand-ins for real_authors / world_facts: questions with a perturbed_answer column
    probe = ds["retain"].select(range(6))
    probe = probe.add_column("perturbed_answer", build_perturbed_answers(probe, n=2, group_column=None))
    return {"ds": ds, "tok": tok, "untrained": untrained, "trained": trained, "probe": probe}


KW = dict(max_new_tokens=24, batch_size=8, group_column="person", disable_tqdm=True)


def test_answer_logprobs_and_generation_do_not_depend_on_batching(demo):
    model, tok, forget = demo["trained"], demo["tok"], demo["ds"]["forget"]
    one = answer_logprobs(model, tok, forget["question"], forget["answer"], batch_size=1, disable_tqdm=True)
    many = answer_logprobs(model, tok, forget["question"], forget["answer"], batch_size=5, disable_tqdm=True)
    for a, b in zip(one, many, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    model.train()  # restored afterwards
    gen1 = generate_answers(
        model, tok, forget["question"], max_new_tokens=24, batch_size=1, disable_tqdm=True
    )
    gen5 = generate_answers(
        model, tok, forget["question"], max_new_tokens=24, batch_size=5, disable_tqdm=True
    )
    assert model.training
    model.eval()
    assert gen1 == gen5  # left padding + attention mask leave greedy answers unchanged


def test_evaluate_tofu_end_to_end(demo):
    ds, tok, probe = demo["ds"], demo["tok"], demo["probe"]
    splits = {"forget": ds["forget"], "retain": ds["retain"], "real_authors": probe, "world_facts": probe}
    retain_ratios = model_truth_ratios(
        demo["trained"], tok, ds["forget"], group_column="person", disable_tqdm=True
    )
    trained = evaluate_tofu(demo["trained"], tok, splits, retain_truth_ratios=retain_ratios, **KW)
    untrained = evaluate_tofu(demo["untrained"], tok, {"forget": ds["forget"]}, **KW)

    assert set(trained) == {
        "splits",
        "model_utility",
        "forget_truth_ratios",
        "forget_quality",
        "ks_statistic",
    }
    assert set(untrained) == {"splits", "forget_truth_ratios"}
    assert set(trained["splits"]["forget"]) == {"probability", "rouge_l_recall", "truth_ratio", "num_samples"}
    assert trained["splits"]["forget"]["num_samples"] == len(ds["forget"])
    # the fine-tuned model knows the forget set; the untrained one does not
    t, u = trained["splits"]["forget"], untrained["splits"]["forget"]
    assert t["probability"] > 0.2 > 0.01 > u["probability"]
    assert t["rouge_l_recall"] > 0.5 and u["rouge_l_recall"] < 0.2
    # same model, same split: the truth ratios match (up to float noise from other batch sizes), so
    # the KS test cannot tell them apart
    assert trained["forget_truth_ratios"] == pytest.approx(retain_ratios)
    assert trained["forget_quality"] == 1.0 and trained["ks_statistic"] <= 1 / len(ds["forget"])
    nine = [
        trained["splits"][s][m]
        for s in ("retain", "real_authors", "world_facts")
        for m in ("probability", "rouge_l_recall", "truth_ratio")
    ]
    assert trained["model_utility"] == pytest.approx(harmonic_mean(nine))
    assert 0 < trained["model_utility"] <= 1
    # splits with perturbed_answer get TOFU's relative probability P(a) / (P(a) + sum P(pert))
    flat = answer_logprobs(
        demo["trained"],
        tok,
        list(probe["question"]) * 3,
        list(probe["answer"]) + [p for ps in zip(*probe["perturbed_answer"], strict=True) for p in ps],
        disable_tqdm=True,
    )
    p = log_normalised_probability(flat).exp().view(3, -1)  # [answer / pert 1 / pert 2, N]
    assert trained["splits"]["real_authors"]["probability"] == pytest.approx((p[0] / p.sum(0)).mean().item())


def test_min_k_mia_separates_members(demo):
    ds, tok = demo["ds"], demo["tok"]
    res = min_k_mia(demo["trained"], tok, ds["forget"], ds["holdout"], k=0.2, disable_tqdm=True)
    assert len(res["member_scores"]) == len(ds["forget"]) and len(res["nonmember_scores"]) == len(
        ds["holdout"]
    )
    assert res["auc"] > 0.8
    lps = answer_logprobs(
        demo["trained"], tok, ds["holdout"]["question"], ds["holdout"]["answer"], disable_tqdm=True
    )
    assert res["nonmember_scores"] == pytest.approx([min_k_percent_score(lp, 0.2) for lp in lps])


class _Bigram(torch.nn.Module):
    """Stub causal LM: the next-token logits depend only on the current token (``table[token]``)."""

    def __init__(self, vocab_size, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab_size, vocab_size, generator=g) * 3)

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[input_ids])


def _bigram_answer_logprobs_by_hand(model, tok, question, answer):
    """Plain-Python log p of every answer token (EOS last) of ``encode_qa``'s row, and the ids."""
    from hf_unlearn.data.qa import encode_qa

    row = encode_qa(tok, question, answer, max_length=256)
    logp = torch.log_softmax(model.table.detach().double(), dim=-1)
    ids, labels = row["input_ids"], row["labels"]
    scored = [(ids[t - 1], ids[t]) for t in range(1, len(ids)) if labels[t] != -100]
    return [logp[a, b].item() for a, b in scored], [b for _, b in scored]


def _min_k_by_hand(values, k):
    lowest = sorted(values)[: max(1, int(k * len(values)))]
    return sum(lowest) / len(lowest)


def test_min_k_mia_conventions_by_hand(demo):
    ds, tok = demo["ds"], demo["tok"]
    model = _Bigram(len(tok))
    members, nonmembers = ds["forget"].select(range(4)), ds["holdout"].select(range(4))
    by_hand = {"members": [], "nonmembers": []}
    for name, split in (("members", members), ("nonmembers", nonmembers)):
        for q, a in zip(split["question"], split["answer"], strict=True):
            values, targets = _bigram_answer_logprobs_by_hand(model, tok, q, a)
            assert targets[-1] == tok.eos_token_id  # the answer ends with EOS
            by_hand[name].append(values)
    kw = dict(disable_tqdm=True)
    # default convention "hf_unlearn": k = 0.2 over every answer token, the EOS included
    res = min_k_mia(model, tok, members, nonmembers, **kw)
    assert (res["convention"], res["k"], res["include_eos"]) == ("hf_unlearn", 0.2, True)
    assert res["member_scores"] == pytest.approx([_min_k_by_hand(v, 0.2) for v in by_hand["members"]])
    assert res["nonmember_scores"] == pytest.approx([_min_k_by_hand(v, 0.2) for v in by_hand["nonmembers"]])
    # open-unlearning (src/evals/metrics/mia/min_k.py, configs/eval/tofu_metrics/mia_min_k.yaml):
    # k = 0.4, the EOS prediction dropped (utils.tokenwise_logprobs)
    res = min_k_mia(model, tok, members, nonmembers, convention="open-unlearning", **kw)
    assert (res["convention"], res["k"], res["include_eos"]) == ("open-unlearning", 0.4, False)
    assert res["member_scores"] == pytest.approx([_min_k_by_hand(v[:-1], 0.4) for v in by_hand["members"]])
    assert res["nonmember_scores"] == pytest.approx(
        [_min_k_by_hand(v[:-1], 0.4) for v in by_hand["nonmembers"]]
    )
    # explicit k / include_eos override the convention's values
    res = min_k_mia(model, tok, members, nonmembers, k=0.5, include_eos=False, **kw)
    assert (res["k"], res["include_eos"]) == (0.5, False)
    assert res["member_scores"] == pytest.approx([_min_k_by_hand(v[:-1], 0.5) for v in by_hand["members"]])
    with pytest.raises(ValueError, match="open-unlearning"):
        min_k_mia(model, tok, members, nonmembers, convention="nope", **kw)


def test_answer_logprobs_include_eos_false_drops_only_the_eos(demo):
    tok = demo["tok"]
    model = _Bigram(len(tok))
    q, a = demo["ds"]["forget"]["question"][:2], demo["ds"]["forget"]["answer"][:2]
    full = answer_logprobs(model, tok, q, a, disable_tqdm=True)
    no_eos = answer_logprobs(model, tok, q, a, include_eos=False, disable_tqdm=True)
    for f, n, question, answer in zip(full, no_eos, q, a, strict=True):
        values, _ = _bigram_answer_logprobs_by_hand(model, tok, question, answer)
        assert f.tolist() == pytest.approx(values, abs=1e-5)
        torch.testing.assert_close(n, f[:-1])
    # an answer cut by max_length has no EOS: nothing is dropped
    from hf_unlearn.data.qa import encode_qa

    cut_at = len(encode_qa(tok, q[0], a[0], max_length=256)["input_ids"]) - 2  # EOS and 1 token cut off
    kw = dict(max_length=cut_at, disable_tqdm=True)
    cut = answer_logprobs(model, tok, q[:1], a[:1], **kw)[0]
    assert cut.numel() == full[0].numel() - 2
    torch.testing.assert_close(answer_logprobs(model, tok, q[:1], a[:1], include_eos=False, **kw)[0], cut)


def test_truth_ratio_mean_option_in_model_level_routines(demo):
    ds, tok = demo["ds"], demo["tok"]
    model, forget = demo["trained"], ds["forget"]
    kw = dict(group_column="person", disable_tqdm=True)
    perturbed = build_perturbed_answers(forget, n=3, group_column="person", seed=0)
    logp = {}
    for mean in ("arithmetic", "geometric"):
        logp[mean] = model_truth_ratios(model, tok, forget, truth_ratio_mean=mean, **kw)
    for i, (q, a, pert) in enumerate(zip(forget["question"], forget["answer"], perturbed, strict=True)):
        lps = answer_logprobs(model, tok, [q] * (1 + len(pert)), [a, *pert], disable_tqdm=True)
        p = [math.exp(lp.double().mean().item()) for lp in lps]  # P_norm of the answer, then perturbed
        arith = sum(p[1:]) / len(p[1:]) / p[0]
        geo = math.exp(sum(math.log(x) for x in p[1:]) / len(p[1:])) / p[0]
        assert logp["arithmetic"][i] == pytest.approx(arith, rel=1e-4)
        assert logp["geometric"][i] == pytest.approx(geo, rel=1e-4)
    assert model_truth_ratios(model, tok, forget, **kw) == pytest.approx(logp["arithmetic"])  # default
    res = evaluate_tofu(model, tok, {"forget": forget}, truth_ratio_mean="geometric", **KW)
    assert res["forget_truth_ratios"] == pytest.approx(logp["geometric"], rel=1e-4)
    assert res["splits"]["forget"]["truth_ratio"] == pytest.approx(
        truth_ratio_score(logp["geometric"], forget=True), rel=1e-4
    )
    with pytest.raises(ValueError, match="truth_ratio_mean"):
        evaluate_tofu(model, tok, {"forget": forget}, truth_ratio_mean="median", **KW)


def test_evaluate_tofu_validates_inputs(demo):
    model, tok, forget = demo["trained"], demo["tok"], demo["ds"]["forget"]
    with pytest.raises(ValueError, match="'retain' is empty"):
        evaluate_tofu(model, tok, {"forget": forget, "retain": forget.select([])}, **KW)
    with pytest.raises(ValueError, match=r"'forget' is missing column\(s\) \['answer'\]"):
        evaluate_tofu(model, tok, {"forget": forget.remove_columns("answer")}, **KW)
    with pytest.raises(ValueError, match="no 'forget' split"):
        evaluate_tofu(model, tok, {"retain": forget}, retain_truth_ratios=[1.0] * len(forget), **KW)
    with pytest.raises(ValueError, match="same forget split"):
        evaluate_tofu(model, tok, {"forget": forget}, retain_truth_ratios=[1.0, 2.0], **KW)
    bad = forget.add_column("perturbed_answer", [["fine"], []] + [["fine"]] * (len(forget) - 2))
    with pytest.raises(ValueError, match="'real_authors' row 1: 'perturbed_answer'"):
        evaluate_tofu(model, tok, {"real_authors": bad}, **KW)
    with pytest.raises(ValueError, match="splits is empty"):
        evaluate_tofu(model, tok, {}, **KW)


# --- real TOFU rows ------------------------------------------------------------------------------


@pytest.mark.skipif(not TOFU_DIR.is_dir(), reason="real TOFU data (../shared/data/tofu) not available")
def test_real_tofu_rows():
    forget10 = load_tofu("forget10", TOFU_DIR)
    # the substitute perturbed answers on the full forget10: same position, other authors, never its own
    authors, answers = list(forget10["author_index"]), list(forget10["answer"])
    position = [authors[:i].count(a) for i, a in enumerate(authors)]  # row's place within its author
    row_of = {a: i for i, a in enumerate(answers)}
    for i, pert in enumerate(build_perturbed_answers(forget10, n=3)):
        assert len(set(pert)) == 3 and answers[i] not in pert
        for p in pert:
            assert position[row_of[p]] == position[i] and authors[row_of[p]] != authors[i]

    forget = load_tofu("forget01", TOFU_DIR).select([0, 1, 2, 20, 21, 22])
    splits = {"forget": forget} | {
        s: load_tofu(s, TOFU_DIR).select(range(4)) for s in ("retain", "real_authors", "world_facts")
    }
    tok = train_tokenizer(
        [r["question"] + " " + r["answer"] for s in splits.values() for r in s], vocab_size=600
    )
    retain_model, unlearned = tiny_llama(tok, seed=0).eval(), tiny_llama(tok, seed=1).eval()
    kw = dict(max_new_tokens=8, batch_size=8, disable_tqdm=True)
    retain_ratios = model_truth_ratios(retain_model, tok, forget, batch_size=8, disable_tqdm=True)
    res = evaluate_tofu(unlearned, tok, splits, retain_truth_ratios=retain_ratios, **kw)
    assert len(res["forget_truth_ratios"]) == 6 and all(r > 0 for r in res["forget_truth_ratios"])
    for name, scores in res["splits"].items():
        for metric in ("probability", "rouge_l_recall", "truth_ratio"):
            assert 0 <= scores[metric] <= 1, (name, metric)
    # real_authors has 3 perturbed answers: a random model gives the true one about a quarter of the mass
    assert 0.1 < res["splits"]["real_authors"]["probability"] < 0.5
    assert 0 <= res["model_utility"] <= 1 and 0 <= res["forget_quality"] <= 1


# --- evaluate modules ----------------------------------------------------------------------------

MODULE_CASES = {
    # disjoint samples of 4: D = 1, exact p = 2 / C(8, 4)
    "forget_quality": (
        dict(predictions=[0.1, 0.2, 0.3, 0.4], references=[1.1, 1.2, 1.3, 1.4]),
        {"forget_quality": 2 / 70, "ks_statistic": 1.0},
    ),
    "model_utility": (dict(predictions=[1.0, 0.5, 0.25]), {"model_utility": 3 / 7}),
    "min_k_mia": (dict(predictions=[-1.0, -2.0, -1.5, -3.0], references=[1, 0, 0, 1]), {"auc": 0.5}),
    "rouge_l_recall": (
        dict(
            predictions=["born in Paris", "She was born in Paris"], references=["She was born in Paris"] * 2
        ),
        {"rouge_l_recall": 0.8},
    ),
}


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", sorted(MODULE_CASES))
def test_evaluate_modules_load_offline(name, no_network, tmp_path):
    import evaluate

    inputs, expected = MODULE_CASES[name]
    metric = evaluate.load(metric_path(name), cache_dir=str(tmp_path))
    # evaluate imports a copy of the script from its modules cache, not the file in the package
    assert Path(inspect.getfile(type(metric))).parent != Path(metric_path(name))
    assert metric.compute(**inputs) == pytest.approx(expected)


def test_metric_path_unknown_name():
    with pytest.raises(ValueError, match="forget_quality"):
        metric_path("nope")
