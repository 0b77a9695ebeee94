"""humpback eval: scorer quality, held-out NLL, pairwise judging, diversity, decontamination."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from humpback.cli import main
from humpback.core.config import EngineConfig
from humpback.evaluate.common import (
    EvalConfig,
    auroc,
    bootstrap_ci,
    cached_chunks,
    load_items,
    spearman,
)
from humpback.core.records import RecordError, write_jsonl, write_parquet



def slow_auroc(positives, negatives):
    """The definition, pair by pair: P(positive > negative), ties counted half, None values left out."""
    pos = [p for p in positives if p is not None]
    neg = [n for n in negatives if n is not None]
    if not pos or not neg:
        return None
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


CFG = EvalConfig(engine=EngineConfig(dtype="float32", progress=False), bootstrap=200)

PAIRS = [
    ("Write a short poem about the sea.", "Waves fold over waves,\nsalt on the wind, gulls calling,\nthe tide."),
    ("Explain what a hash table is.", ("A hash table stores key-value pairs in an array indexed by a hash of the key, "
                                      "so lookups take constant time on average.")),
    ("Give me three tips for sleeping better.", ("Keep a regular schedule, avoid screens before bed, and keep the "
                                                "bedroom cool and dark.")),
    ("How do I boil an egg?", "Put the egg in boiling water for seven to nine minutes, then cool it in cold water."),
    ("List the planets of the solar system.", "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune."),
    ("Translate 'good morning' into French.", "Bonjour."),
    ("Summarize the plot of Hamlet in one sentence.", ("A Danish prince avenges his father's murder by his uncle, "
                                                      "and nearly everyone dies.")),
    ("What is the capital of Japan?", "Tokyo is the capital of Japan."),
]


def _pairs_file(tmp_path: Path, name: str = "pairs.jsonl") -> Path:
    path = tmp_path / name
    write_jsonl([{"id": f"p{i}", "instruction": a, "output": b} for i, (a, b) in enumerate(PAIRS)], path)
    return path


# ------------------------------------------------------------------------------------------- statistics
def test_rank_auroc_matches_pairwise_definition():
    rng = random.Random(0)
    for _ in range(20):
        pos = [rng.choice([None, 1.0, 2.0, 2.0, 3.5, rng.random()]) for _ in range(rng.randint(1, 15))]
        neg = [rng.choice([None, 1.0, 2.0, rng.random()]) for _ in range(rng.randint(1, 15))]
        fast, slow = auroc(pos, neg), slow_auroc(pos, neg)
        assert (fast is None and slow is None) or fast == pytest.approx(slow)
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small, large = rng.normal(1.0, 1.0, 20), rng.normal(1.0, 1.0, 2000)
    lo_s, hi_s = bootstrap_ci(lambda idx: float(small[idx].mean()), len(small), 500, 0.95, 0)
    lo_l, hi_l = bootstrap_ci(lambda idx: float(large[idx].mean()), len(large), 500, 0.95, 0)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    assert bootstrap_ci(lambda idx: 1.0, 1, 500, 0.95, 0) is None  # one unit: no interval


def test_spearman_ignores_missing_and_constant():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, None, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1, 1], [1, 2, 3, 4]) is None


def test_cached_chunks_resume_only_missing_chunks(tmp_path):
    calls = []

    def compute(idx):
        calls.append(list(idx))
        return [i * 10 for i in idx]

    ids = [f"x{i}" for i in range(7)]
    assert cached_chunks(tmp_path / "w", ids, compute, 3, "t") == [0, 10, 20, 30, 40, 50, 60]
    (tmp_path / "w" / "00001.json").unlink()  # as if killed before the second chunk was written
    calls.clear()
    assert cached_chunks(tmp_path / "w", ids, compute, 3, "t") == [0, 10, 20, 30, 40, 50, 60]
    assert calls == [[3, 4, 5]]
    calls.clear()  # other ids in a chunk: recomputed, never mixed with stale results
    cached_chunks(tmp_path / "w", ids[:6] + ["other"], compute, 3, "t")
    assert calls == [[6]]


def test_load_items_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hi there", "output": "x"}) + "\n" + json.dumps({"text": "no"}) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2: no instruction text"):
        load_items(bad, need_output=False)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"problem": "Solve x+1=2"}) + "\n")
    with pytest.raises(RecordError, match=r"p.jsonl:1: no output text"):
        load_items(prompts, need_output=True)
    [item] = load_items(prompts, need_output=False)
    assert item.instruction == "Solve x+1=2" and item.output is None


# ------------------------------------------------------------------------------------------- eval scorer
def test_eval_scorer_auroc_agreement_histograms_and_cache(tmp_path, tiny_model_dir, monkeypatch):
    from humpback.evaluate.scorer import evaluate_scorers, format_scorer_summary, parse_scorer_specs

    pairs = _pairs_file(tmp_path)
    specs = parse_scorer_specs(["pmi", "rubric"], tiny_model_dir)
    out = tmp_path / "out"
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl([{"text": f"A page about {topic}, written as a page: see the links below for more."}
                 for topic in ("the sea", "hash tables", "sleep", "eggs", "planets", "French", "Hamlet", "Tokyo")],
                corpus)
    summary = evaluate_scorers(pairs, specs, out, sample=6, config=CFG, corpus=str(corpus))
    assert summary["n"] == 6 and summary["pairs_available"] == 8
    assert summary["negatives"] == ["shuffled", "neighbor", "truncated", "boilerplate", "web-voice"]
    saved = json.loads((out / "scorer_eval.json").read_text())
    for label in ("pmi@tiny-llama", "rubric@tiny-llama"):
        s = saved["scorers"][label]
        assert 0.0 <= s["auroc"] <= 1.0
        assert s["auroc_ci"] is None or s["auroc_ci"][0] <= s["auroc"] <= s["auroc_ci"][1]
        assert set(s["negatives"]) == set(summary["negatives"])
        assert s["negatives"]["shuffled"]["auroc"] == s["auroc"]  # the top-level figure is the shuffled one
        for kind, k in s["negatives"].items():
            assert 0.0 <= k["auroc"] <= 1.0 and k["n"] == 6, kind
    assert sum(summary["scorers"]["rubric@tiny-llama"]["scores_real"].values()) == 6
    [agreement] = summary["agreement"]
    assert agreement["a"] == "pmi@tiny-llama" and agreement["n"] == 6
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["instruction"] != r["shuffled_instruction"] for r in rows)
    assert (out / "scorer_hist.png").stat().st_size > 1000
    table = format_scorer_summary(summary)
    assert "web-voice" in table and "boilerplate" in table

    # every model call is cached: a rerun needs no model at all and gives the same numbers
    from humpback.evaluate import common

    monkeypatch.setattr(common, "load_engine", lambda *a, **k: pytest.fail("model loaded on a cached rerun"))
    again = evaluate_scorers(pairs, [s for s in specs if s.kind == "pmi"], out, sample=6, config=CFG,
                             corpus=str(corpus))
    assert again["scorers"]["pmi@tiny-llama"]["auroc"] == summary["scorers"]["pmi@tiny-llama"]["auroc"]
    # ... unless what decides the scorer's values besides its config (fitted weights) changed
    from humpback.stages.scorers import PMIScorer

    monkeypatch.setattr(PMIScorer, "revision", "refit")
    with pytest.raises(pytest.fail.Exception, match="model loaded on a cached rerun"):
        evaluate_scorers(pairs, [s for s in specs if s.kind == "pmi"], out, sample=6, config=CFG, corpus=str(corpus))


def test_negatives_are_deterministic_real_and_never_the_pairs_own_output():
    from humpback.core.config import ConfigError
    from humpback.evaluate.negatives import boilerplate_snippets, build_negatives, parse_kinds, truncate

    pairs = [{"pair_id": f"p{i}", "instruction": a, "output": b} for i, (a, b) in enumerate(PAIRS)]
    corpus = ["The sea is a large body of salt water. Tides come twice a day.",
              "Hash functions map keys to buckets; collisions are resolved by chaining.",
              PAIRS[0][1]]  # a copy of a pair's own output must never be its web-voice negative
    kinds = parse_kinds(None, have_corpus=True)
    a = build_negatives(pairs, kinds, seed=3, corpus=corpus)
    b = build_negatives(pairs, kinds, seed=3, corpus=corpus)
    assert a == b and set(a) == set(kinds)
    snippets = set(boilerplate_snippets())
    for i, p in enumerate(pairs):
        assert a["shuffled"][i]["instruction"] != p["instruction"] and a["shuffled"][i]["output"] == p["output"]
        for kind in ("neighbor", "truncated", "boilerplate", "web-voice"):
            assert a[kind][i]["instruction"] == p["instruction"] and a[kind][i]["output"] != p["output"], kind
        assert a["neighbor"][i]["output"] in {q["output"] for q in pairs}
        assert a["truncated"][i]["output"] and p["output"].startswith(a["truncated"][i]["output"])
        assert all(piece in snippets for piece in a["boilerplate"][i]["output"].split("\n\n"))
        assert a["web-voice"][i]["output"] in corpus
    assert a["web-voice"][0]["output"] != PAIRS[0][1]
    assert build_negatives(pairs, ["boilerplate"], seed=4)["boilerplate"] != a["boilerplate"]
    assert len(snippets) >= 30
    assert truncate("First sentence here. " + "More words follow in a long second part. " * 5) == "First sentence here."
    long_first = "word " * 100
    assert len(truncate(long_first)) <= 0.15 * len(long_first.strip()) + 1
    assert parse_kinds(None, have_corpus=False) == ["shuffled", "neighbor", "truncated", "boilerplate"]
    assert parse_kinds("truncated", have_corpus=False) == ["shuffled", "truncated"]
    with pytest.raises(ConfigError, match="needs --corpus"):
        parse_kinds("web-voice", have_corpus=False)
    with pytest.raises(ConfigError, match="unknown kind"):
        parse_kinds("bogus", have_corpus=True)


def test_parse_scorer_specs_errors():
    from humpback.core.config import ConfigError
    from humpback.evaluate.scorer import parse_scorer_specs

    assert [s.model for s in parse_scorer_specs(["pmi", "rubric@other"], "m")] == ["m", "other"]
    with pytest.raises(ConfigError, match="unknown scorer 'judge'"):
        parse_scorer_specs(["judge"], "m")
    with pytest.raises(ConfigError, match="no model"):
        parse_scorer_specs(["pmi"], None)


@pytest.mark.slow
def test_pmi_scorer_separates_real_from_shuffled_with_smollm2(tmp_path, smollm2_dir):
    from humpback.evaluate.scorer import ScorerSpec, evaluate_scorers

    summary = evaluate_scorers(_pairs_file(tmp_path), [ScorerSpec("pmi", smollm2_dir)], tmp_path / "o", sample=None,
                               config=EvalConfig())
    [s] = summary["scorers"].values()
    assert s["auroc"] >= 0.8, s


# ------------------------------------------------------------------------------------------- eval heldout
def _run_dir(tmp_path: Path, tiny_model_dir: str) -> Path:
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    write_parquet([{"id": f"s{i}", "instruction": a, "output": b, "source": "t"} for i, (a, b) in enumerate(PAIRS)],
                  run / "seed.parquet", "seed")
    write_parquet([{"id": f"h{i}", "instruction": a, "output": b, "source": "t"}
                   for i, (a, b) in enumerate(PAIRS[:5])], run / "seed.heldout.parquet", "seed")
    shutil.copytree(tiny_model_dir, run / "models" / "m0")
    return run


def test_eval_heldout_nll_matches_engine_and_compares_models(tmp_path, tiny_model_dir, tiny_engine):
    from humpback.evaluate.heldout import evaluate_heldout, format_heldout_summary
    from humpback.core.models import build_tiny_model
    from humpback.stages.train.data import forward_messages

    run = _run_dir(tmp_path, tiny_model_dir)
    other = str(build_tiny_model(tmp_path / "tiny-other", seed=1, tokenizer_from=tiny_model_dir))
    summary = evaluate_heldout(run, ["m0", other], tmp_path / "out", systems=["both", "none"], config=CFG)
    assert summary["n"] == 5 and set(summary["models"]) == {"m0", "tiny-other"}

    # the token-weighted NLL is exactly what the engine says about the reference outputs
    prompts = [tiny_engine.format_chat(forward_messages(a, "both")) for a, _ in PAIRS[:5]]
    scores = tiny_engine.continuation_logprobs(prompts, [b for _, b in PAIRS[:5]])
    expected = -sum(s.sum for s in scores) / sum(s.n_tokens for s in scores)
    m0 = summary["models"]["m0"]["systems"]
    assert m0["both"]["nll"] == pytest.approx(expected, rel=1e-4)
    assert m0["both"]["perplexity"] == pytest.approx(math.exp(expected), rel=1e-4)
    assert m0["both"]["nll"] != m0["none"]["nll"]  # the system tag is part of the prompt
    lo, hi = m0["both"]["nll_ci"]
    assert lo <= m0["both"]["nll"] <= hi

    diffs = {(d["system"], d["a"], d["b"]): d for d in summary["differences"]}
    d = diffs[("both", "m0", "tiny-other")]
    other_nll = summary["models"]["tiny-other"]["systems"]["both"]["nll"]
    assert d["nll_b_minus_a"] == pytest.approx(other_nll - m0["both"]["nll"])
    assert (tmp_path / "out" / "heldout_nll.png").is_file()
    rows = [json.loads(x) for x in (tmp_path / "out" / "per_example.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and "m0[both]" in rows[0]
    assert "paired differences" in format_heldout_summary(summary)


def test_parse_systems():
    from humpback.core.config import ConfigError
    from humpback.evaluate.heldout import parse_systems

    assert parse_systems("S_a,web,both,none,seed") == ["S_a", "S_w", "both", "none"]
    with pytest.raises(ConfigError, match="expected S_a, S_w, both or none"):
        parse_systems("all")


# ------------------------------------------------------------------------------------------- eval judge
def test_parse_verdict_is_strict():
    from humpback.evaluate.judge import parse_verdict

    assert parse_verdict("A is clearer.\nVerdict: A") == ("A", None)
    assert parse_verdict("reasoning\n**Verdict: b**") == ("B", None)
    assert parse_verdict("B") == ("B", None)
    assert parse_verdict("Both are fine.") == (None, "unparseable")
    assert parse_verdict("Verdict: A or B") == (None, "unparseable")
    assert parse_verdict("  ") == (None, "empty_output")


def test_judge_scoring_counts_orders_ties_and_unparseable():
    from humpback.evaluate.common import Item
    from humpback.evaluate.judge import _summarise

    items = [Item(str(i), f"q{i}", None, "f", i) for i in range(5)]
    answers = {"model": ["m0", "m1", "m2", "same", "m4"], "baseline": ["b0", "b1", "b2", "same", "b4"]}

    def o(v):
        return {"verdict": v, "p_a": None, "raw": "", "problem": None if v else "unparseable"}

    judgments = [
        {"identical": False, "orders": [o("A"), o("B")]},  # model wins in both orders -> 1
        {"identical": False, "orders": [o("B"), o("A")]},  # baseline wins in both -> 0
        {"identical": False, "orders": [o("A"), o("A")]},  # position bias -> 0.5
        {"identical": True, "orders": []},  # identical answers -> tie
        {"identical": False, "orders": [o("A"), o(None)]},  # one unparseable order counts half -> 0.75
    ]
    s = _summarise(items, [it.id for it in items], answers, judgments, CFG)
    assert [r["score"] for r in s["rows"]] == [1.0, 0.0, 0.5, 0.5, 0.75]
    assert s["win_rate"] == pytest.approx(2.75 / 5)
    assert (s["wins"], s["losses"], s["ties"], s["identical_answers"]) == (2, 1, 2, 1)
    assert s["unparseable_verdicts"] == {"unparseable": 1}
    assert s["position_consistent"] == pytest.approx(2 / 3)  # of the 3 prompts with both verdicts parsed
    assert s["first_position_rate"] == pytest.approx(4 / 6)


def test_eval_judge_end_to_end_logprobs_and_generate(tmp_path, tiny_model_dir):
    from humpback.evaluate.judge import JudgeConfig, evaluate_judge, format_judge_summary
    from humpback.core.models import build_tiny_model

    prompts = tmp_path / "prompts.jsonl"
    write_jsonl([{"question_id": i, "prompt": a} for i, (a, _) in enumerate(PAIRS[:4])], prompts)
    other = str(build_tiny_model(tmp_path / "tiny-other", seed=2, tokenizer_from=tiny_model_dir))
    jcfg = JudgeConfig(generation={"temperature": 0.0, "top_p": 1.0, "max_tokens": 12})
    summary = evaluate_judge(tiny_model_dir, other, tiny_model_dir, prompts, tmp_path / "j", config=CFG,
                             judge_config=jcfg)
    assert summary["n"] == 4 and summary["wins"] + summary["losses"] + summary["ties"] == 4
    assert 0.0 <= summary["win_rate"] <= 1.0 and summary["mean_preference"] is not None
    rows = [json.loads(x) for x in (tmp_path / "j" / "judgments.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {"0", "1", "2", "3"}
    assert all(r["p_a_model_first"] is not None for r in rows if not r.get("identical"))
    assert "win rate" in format_judge_summary(summary)

    # a random model never writes "Verdict: A|B": every verdict is counted as unparseable, none dropped
    gen = evaluate_judge(tiny_model_dir, other, tiny_model_dir, prompts, tmp_path / "g", config=CFG,
                         judge_config=jcfg.model_copy(update={"mode": "generate", "max_reason_tokens": 8}))
    judged = gen["judged"]
    assert sum(gen["unparseable_verdicts"].values()) == 2 * judged
    assert gen["win_rate"] == pytest.approx(0.5)

    # the same model against itself: identical greedy answers are ties without asking the judge
    same = evaluate_judge(tiny_model_dir, tiny_model_dir, tiny_model_dir, prompts, tmp_path / "s", config=CFG,
                          judge_config=jcfg)
    assert same["identical_answers"] == 4 and same["win_rate"] == 0.5


# ------------------------------------------------------------------------------------------- eval diversity
def test_verb_noun_heuristic():
    from humpback.evaluate.diversity import verb_noun

    assert verb_noun("Write a short poem about the sea.") == ("write", "poem", "imperative")
    assert verb_noun("Please give me three tips for sleeping better") == ("give", "tip", "imperative")
    assert verb_noun("Can you explain the difference between TCP and UDP?") == ("explain", "difference",
                                                                                  "imperative")
    assert verb_noun("List the planets of the solar system.") == ("list", "planet", "imperative")
    assert verb_noun("Explain how vaccines work") == ("explain", None, "imperative")
    assert verb_noun("What is the capital of Japan?") == (None, None, "question")
    assert verb_noun("The weather is nice today.") == (None, None, "other")
    assert verb_noun("") == (None, None, "other")


def test_distinct_n_and_embedding_spread():
    from humpback.evaluate.diversity import distinct_n, embedding_spread

    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["a"], 2) is None
    same = np.tile(np.array([[1.0, 0.0]]), (4, 1))
    assert embedding_spread(same)["mean_pairwise_distance"] == pytest.approx(0.0)
    ortho = np.eye(3)
    assert embedding_spread(ortho)["mean_pairwise_distance"] == pytest.approx(1.0)


def test_eval_diversity_on_a_run_dir(tmp_path, tiny_model_dir):
    from humpback.evaluate.diversity import discover_sets, evaluate_diversity, format_diversity_summary

    run = _run_dir(tmp_path, tiny_model_dir)
    pair_rows = [{"pair_id": f"c{i}", "instruction": a, "output": b, "segment_id": None, "doc_id": None,
                  "url": None, "backward_model": "m", "gen_params": "{}", "round": 1}
                 for i, (a, b) in enumerate(PAIRS)]
    write_parquet(pair_rows, run / "augment" / "pairs" / "00000.parquet", "pair")
    dull = [{**r, "instruction": "Write a poem about the sea."} for r in pair_rows]
    write_parquet(dull, run / "curate" / "r1" / "curated" / "00000.parquet", "pair")
    write_parquet(pair_rows[:3], run / "curate" / "r2" / "curated" / "00000.parquet", "pair")
    names = [n for n, _ in discover_sets([run])]
    assert names == ["seed", "candidates", "curated r1", "curated r2"]

    summary = evaluate_diversity([run], tmp_path / "div", sample=None, config=CFG)
    sets = summary["sets"]
    assert sets["seed"]["n"] == 8 and sets["curated r2"]["n"] == 3
    # eight copies of one instruction: one verb-noun pair, no spread, low distinct-2
    assert sets["curated r1"]["unique_verb_noun_pairs"] == 1
    assert sets["curated r1"]["mean_pairwise_distance"] == pytest.approx(0.0, abs=1e-5)
    assert sets["candidates"]["mean_pairwise_distance"] > 0.5
    assert sets["curated r1"]["distinct_2"] < sets["candidates"]["distinct_2"]
    assert ["write poem", 8] in sets["curated r1"]["top_verb_noun_pairs"]
    assert (tmp_path / "div" / "diversity.png").stat().st_size > 1000
    assert "top verb-noun in seed" in format_diversity_summary(summary)


# ------------------------------------------------------------------------------------------- eval decontam
def test_eval_decontam_flags_overlap_with_eval_prompts(tmp_path, tiny_model_dir):
    from humpback.evaluate.decontam import DecontamConfig, decontaminate, format_decontam_summary

    run = _run_dir(tmp_path, tiny_model_dir)
    leaked = "Describe the main causes of the French Revolution and explain how they were connected to each other."
    curated = [{"pair_id": "leak", "instruction": "PLEASE: describe the main causes of the French revolution, and "
                                                  "explain how they were connected to each other!", "output": "..."},
               {"pair_id": "short", "instruction": "A question",
                "output": "Someone asked: what does 3 + 3 equal exactly? Six."},
               {"pair_id": "clean", "instruction": "Write a haiku about autumn leaves.", "output": "Red leaves fall."}]
    write_parquet([{**r, "segment_id": None, "doc_id": None, "url": None, "backward_model": None,
                    "gen_params": None, "round": 1} for r in curated],
                  run / "curate" / "r1" / "curated" / "00000.parquet", "pair")
    # candidates are not training data: an overlap there is not reported
    write_parquet([{**curated[0], "pair_id": "cand", "segment_id": None, "doc_id": None, "url": None,
                    "backward_model": None, "gen_params": None, "round": 1}],
                  run / "augment" / "pairs" / "00000.parquet", "pair")
    evals = tmp_path / "eval.jsonl"
    write_jsonl([{"id": "e1", "instruction": leaked}, {"id": "e2", "prompt": "What does 7 + 7 equal exactly?"},
                 {"id": "e3", "prompt": "Hi there"}], evals)
    stats = decontaminate(run, [evals], tmp_path / "flagged.jsonl", DecontamConfig(n=8))
    assert stats["checked"] == {"seed": 8, "curated r1": 3}
    assert stats["eval_items_too_short"] == 1  # "Hi there" would match everywhere
    rows = [json.loads(x) for x in (tmp_path / "flagged.jsonl").read_text().splitlines()]
    by_id = {r["pair_id"]: r for r in rows}
    assert set(by_id) == {"leak", "short"}
    m = by_id["leak"]["matches"][0]
    assert m["eval_id"] == "e1" and m["field"] == "instruction" and m["overlap"] == 1.0
    # a prompt shorter than n words is matched whole, numbers normalised as datatrove does
    assert by_id["short"]["matches"][0]["eval_id"] == "e2" and by_id["short"]["matches"][0]["field"] == "output"
    assert json.loads((tmp_path / "flagged.stats.json").read_text())["flagged_total"] == 2
    assert "--exclude" in format_decontam_summary(stats)

    strict = decontaminate(run, [evals], tmp_path / "strict.jsonl", DecontamConfig(n=8, min_overlap=0.9,
                                                                                   fields=["instruction"]))
    assert [r["pair_id"] for r in strict["rows"]] == ["leak"]


# ------------------------------------------------------------------------------------------- CLI
def test_cli_eval_commands(tmp_path, tiny_model_dir):
    run = _run_dir(tmp_path, tiny_model_dir)
    runner = CliRunner()
    res = runner.invoke(main, ["eval", "heldout", "--models", "m0", "--data", str(run), "--system", "none",
                               "--dtype", "float32", "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    assert "m0" in res.output and (run / "eval" / "heldout" / "heldout.json").is_file()

    res = runner.invoke(main, ["eval", "diversity", str(run / "seed.parquet"), "--no-embeddings",
                               "-o", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "dist-2" in res.output and (tmp_path / "d" / "diversity.png").is_file()

    evals = tmp_path / "e.jsonl"
    write_jsonl([{"instruction": PAIRS[0][0] + " Make it rhyme, please, and keep it short."}], evals)
    res = runner.invoke(main, ["eval", "decontam", str(run), "--against", str(evals), "--n", "5",
                               "--output", str(tmp_path / "f.jsonl")])
    assert res.exit_code == 0, res.output
    assert "flagged 1 pair(s)" in res.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "no instruction"}) + "\n")
    res = runner.invoke(main, ["eval", "decontam", str(run), "--against", str(bad)])
    assert res.exit_code == 2 and "bad.jsonl:1: no instruction text" in res.output

    res = runner.invoke(main, ["eval", "heldout", "--models", "m0", "--data", str(run), "--system", "all"])
    assert res.exit_code == 2 and "expected S_a, S_w, both or none" in res.output

    cfg = tmp_path / "eval.yaml"
    cfg.write_text("bootstrap: 10\njudge:\n  mode: logprobs\n  temprature: 0.5\n")
    res = runner.invoke(main, ["eval", "judge", "--model", "m", "--baseline", "b", "--judge", "j", "--prompts",
                               str(evals), "--config", str(cfg)])
    assert res.exit_code == 2 and "judge.temprature: unknown key" in res.output


def test_decontam_fields_take_a_comma_list_and_refuse_none():
    from humpback.evaluate.decontam import DecontamConfig

    assert DecontamConfig(fields="instruction, output").fields == ["instruction", "output"]
    result = CliRunner().invoke(main, ["eval", "decontam", "x", "--against", "y.jsonl", "--fields", " , "])
    assert result.exit_code == 2 and "decontam.fields" in result.output and "Traceback" not in result.output
