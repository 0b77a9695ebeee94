"""`humpback eval backward` and best-of-k backtranslation, on the tiny random Llama (and the real SmolLM2, slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from humpback.stages.augment import AugmentConfig, PairFilter, PairFilterConfig, best_of_k, run_augment
from humpback.cli import main
from humpback.core.config import EngineConfig, GenerationConfig
from humpback.evaluate.backward import (
    METRICS,
    derangement,
    evaluate_backward,
    k_values,
    rouge_l,
    select,
)
from humpback.evaluate.common import EvalConfig
from humpback.init import STARTER
from humpback.core.records import parquet_files, write_jsonl, write_parquet
from humpback.stages.scorers import conditional_logprobs, pmi_of

CFG = EvalConfig(engine=EngineConfig(dtype="float32", progress=False), bootstrap=100, chunk_size=3)
# a random model writes no requests: with the default filters every candidate would be rejected
OPEN_FILTERS = {"request_patterns": [], "reject_patterns": [], "min_chars": 1, "max_copy_overlap": 1.0}

PAIRS = [
    ("How do I keep basil alive indoors?", "Give basil six hours of bright light, water when the top soil is dry, "
     "and pinch off flower buds so the leaves keep coming."),
    ("Why does bread go stale?", "Starch in bread recrystallises as it cools and loses water, which makes the "
     "crumb firm and dry; toasting reverses part of it."),
    ("What is a hash table?", "A hash table stores key-value pairs in an array indexed by a hash of the key, so a "
     "lookup takes constant time on average."),
    ("How can I stop a bike chain squeaking?", "Clean the chain with a degreaser, dry it, then put one drop of "
     "chain oil on each roller and wipe off the excess."),
    ("What do honey bees do in winter?", "They cluster around the queen and shiver their flight muscles to keep "
     "the centre of the cluster warm, eating stored honey."),
    ("How long should I brew green tea?", "Two to three minutes in water around 80 degrees; longer or hotter "
     "brewing draws out bitter tannins."),
]


def _pairs(tmp_path: Path) -> Path:
    path = tmp_path / "heldout.jsonl"
    write_jsonl([{"id": f"h{i}", "instruction": q, "output": a} for i, (q, a) in enumerate(PAIRS)], path)
    return path


def _aug(**kw) -> AugmentConfig:
    return AugmentConfig(generation=GenerationConfig(max_tokens=10), filters=OPEN_FILTERS, **kw)


def test_helpers():
    assert k_values(1) == [1] and k_values(4) == [1, 2, 4] and k_values(6) == [1, 2, 4, 6]
    perm = derangement(7, seed=3)
    assert sorted(perm) == list(range(7)) and all(perm[i] != i for i in range(7))
    assert derangement(7, seed=3) == perm
    p, r = 4 / 5, 4 / 6  # "how I grow basil" is common to both
    assert rouge_l("how do I grow basil", "how can I grow basil indoors") == pytest.approx(2 * p * r / (p + r))
    assert rouge_l("", "x") == 0.0
    # the accepted candidate with the highest PMI among the first k; rejected ones never win
    assert select([0.1, 0.9, 0.5], [None, "copies_segment", None], 3) == 2
    assert select([0.1, 0.9, 0.5], [None, None, None], 1) == 0
    assert select([0.1, 0.9], ["x", "y"], 2) is None


def test_eval_backward_schema_intervals_and_resume(tmp_path, tiny_model_dir, monkeypatch):
    data = _pairs(tmp_path)
    out = tmp_path / "eval"
    summary = evaluate_backward(data, tiny_model_dir, out, k=2, config=CFG, augment=_aug())
    saved = json.loads((out / "backward_eval.json").read_text())
    for m in METRICS:
        assert set(saved[m]) >= {"value", "ci"}, m
    assert saved["k"] == 2 and set(saved["by_k"]) == {"1", "2"} and saved["n"] == len(PAIRS)
    assert saved["acceptance"]["value"] == 1.0  # open filters accept everything a random model writes
    auc = saved["relevance_auroc_human"]
    assert 0.0 <= auc["value"] <= 1.0 and auc["ci"][0] <= auc["value"] <= auc["ci"][1]
    # recovery is undefined (None) where the human instructions explain nothing on average, as with a random model
    rec = saved["recovery"]["value"]
    assert (rec is None) == (saved["by_k"]["2"]["mean_pmi_human"] <= 0) and -1.0 <= saved["similarity"]["value"] <= 1
    assert len(saved["examples"]) == len(PAIRS) and {"human", "generated", "output_start"} <= set(saved["examples"][0])
    assert (out / "backward_eval.png").stat().st_size > 1000
    assert "| acceptance |" in (out / "backward_eval.md").read_text()
    cands = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(cands) == len(PAIRS) and all(len(c["candidates"]) == 2 for c in cands)
    # k=2 keeps, for each output, the better of the two candidates that k=1 chose from
    for c in cands:
        pmis = [x["pmi"] for x in c["candidates"]]
        assert c["kept"]["1"] == 0 and pmis[c["kept"]["2"]] == max(pmis)

    # a rerun recomputes nothing: every model call comes from the chunk checkpoints
    import humpback.evaluate.common as common

    def no_models(*a, **k):
        raise AssertionError("a model was loaded on the rerun")

    monkeypatch.setattr(common, "load_engine", no_models)
    again = evaluate_backward(data, tiny_model_dir, out, k=2, config=CFG, augment=_aug())
    assert {m: again[m] for m in METRICS} == {m: summary[m] for m in METRICS}


def test_eval_backward_counts_rejections_and_ignores_them(tmp_path, tiny_model_dir):
    out = tmp_path / "eval"
    strict = AugmentConfig(generation=GenerationConfig(max_tokens=10))  # default filters: a random model fails
    summary = evaluate_backward(_pairs(tmp_path), tiny_model_dir, out, k=1, config=CFG, augment=strict)
    assert summary["acceptance"]["value"] < 0.5 and sum(summary["rejected"].values()) >= 3
    if summary["acceptance"]["value"] == 0:
        assert summary["relevance_auroc"]["value"] is None and summary["recovery"]["value"] is None


def test_cli_eval_backward(tmp_path, tiny_model_dir):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(json.dumps({"engine": {"dtype": "float32", "progress": False}, "bootstrap": 50,
                               "augment": {"generation": {"max_tokens": 8}, "filters": OPEN_FILTERS}}))
    res = CliRunner().invoke(main, ["eval", "backward", str(_pairs(tmp_path)), "--model", tiny_model_dir,
                                    "--k", "2", "-o", str(tmp_path / "e"), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "| relevance_auroc |" in res.output and (tmp_path / "e" / "backward_eval.json").is_file()


def test_best_of_k_keeps_the_highest_pmi_accepted_candidate_and_records_all(tiny_engine):
    segment = PAIRS[0][1]
    texts = ["Basil", "How do I keep basil alive?", "Give basil six hours of bright light, water when the top",
             "Tell me about tea."]
    flt = PairFilter(PairFilterConfig(request_patterns=[], min_chars=8))
    [(kept, info)] = best_of_k([segment], [texts], flt, tiny_engine, max_output_chars=2000)
    assert [c["instruction"] for c in info] == texts
    assert info[0]["reject_reason"] == "empty_instruction" and info[2]["reject_reason"] == "copies_segment"
    assert info[0]["pmi"] is None and info[2]["pmi"] is None  # rejected candidates are not scored
    [(u, conds)] = conditional_logprobs(tiny_engine, [segment], [[texts[1], texts[3]]], max_output_chars=2000)
    expected = {texts[1]: pmi_of(u, conds[0]), texts[3]: pmi_of(u, conds[1])}
    assert kept == max(expected, key=expected.get)
    assert info[1]["pmi"] == pytest.approx(expected[texts[1]], abs=1e-4)
    # nothing accepted: the first candidate is kept, to be rejected with its reason
    [(kept, _)] = best_of_k([segment], [["x", "y"]], flt, tiny_engine, max_output_chars=2000)
    assert kept == "x"


def test_augment_with_candidates_writes_provenance(tmp_path, tiny_model_dir):
    seg = tmp_path / "segments"
    write_parquet([{"segment_id": f"s{i}", "text": a, "heading": None, "doc_id": f"d{i}", "url": None,
                    "source": "test", "char_start": 0, "char_end": len(a), "lang": "en", "lang_score": 1.0}
                   for i, (_, a) in enumerate(PAIRS)], seg / "00000.parquet", "segment")
    cfg = _aug(candidates=3, engine=EngineConfig(dtype="float32", progress=False))
    stats = run_augment(str(seg), tiny_model_dir, str(tmp_path / "a"), cfg)
    assert stats["pairs_written"] == len(PAIRS)
    rows = [r for f in parquet_files(tmp_path / "a" / "pairs") for r in pq.read_table(f).to_pylist()]
    for r in rows:
        cands = json.loads(r["candidates"])
        assert len(cands) == 3
        best = max((c for c in cands if c["reject_reason"] is None), key=lambda c: c["pmi"])
        assert r["instruction"] == best["instruction"]
        assert json.loads(r["gen_params"])["candidates"] == 3
    with pytest.raises(Exception, match="must be 1 when candidates"):
        AugmentConfig(candidates=2, generation=GenerationConfig(n=2))


@pytest.mark.slow
def test_smollm2_backward_model_writes_relevant_requests(tmp_path, smollm2_dir):
    """The quickstart's backward recipe on the real SmolLM2, judged on held-out human pairs."""
    from humpback.loop import load_run_config
    from humpback.stages.seed import import_seed
    from humpback.stages.train import train_backward

    repo = Path(__file__).resolve().parents[2]
    cfg = load_run_config(STARTER)
    import_seed("builtin", tmp_path / "seed.parquet", heldout_fraction=0.1, seed=0)
    model = train_backward(str(tmp_path / "seed.parquet"), tmp_path / "backward", config=cfg.training("backward"))
    summary = evaluate_backward(tmp_path / "seed.heldout.parquet", str(model.output), tmp_path / "eval",
                                config=EvalConfig(engine=EngineConfig(progress=False), bootstrap=200),
                                augment=cfg.augment)
    assert summary["acceptance"]["value"] >= 0.8
    assert summary["relevance_auroc"]["value"] >= summary["relevance_auroc_human"]["value"] - 0.1
    # and on 30 Python FAQ pairs nobody on the team wrote (tests/fixtures/README.md)
    faq = evaluate_backward(repo / "tests" / "fixtures" / "python_faq_heldout30.jsonl", str(model.output),
                            tmp_path / "eval-faq", config=EvalConfig(engine=EngineConfig(progress=False),
                                                                     bootstrap=200), augment=cfg.augment)
    assert faq["acceptance"]["value"] >= 0.8
    assert faq["relevance_auroc"]["value"] >= faq["relevance_auroc_human"]["value"] - 0.1
    assert faq["recovery"]["value"] >= 0.6
