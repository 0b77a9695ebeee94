"""The `humpback` scorer (the default below 1B parameters) and curate's per-kind self-check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from humpback.core import records
from humpback.core.config import EngineConfig
from humpback.stages.curate import CurateConfig, run_curate
from humpback.evaluate.negatives import build_negatives
from humpback.evaluate.common import auroc
from humpback.stages.scorers import (
    HUMPBACK_WEIGHTS,
    NEUTRAL_END,
    HumpbackScorer,
    ScorerConfig,
    make_scorer,
    turn_end,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FAST = EngineConfig(dtype="float32", progress=False, batch_size=8)
PAIRS = [
    ("How do I water tomato seedlings?", "Water them at the base in the morning, so the leaves stay dry. Give "
     "them a deep soak twice a week rather than a little every day; shallow watering keeps roots near the top."),
    ("What grind should I use for a French press?", "Use a coarse grind, like breadcrumbs. Fine coffee slips "
     "through the mesh and over-extracts, which makes the cup muddy and bitter. Steep for four minutes."),
    ("How often should I oil a bicycle chain?", "Every few hundred kilometres, or after any ride in the rain. "
     "Wipe the chain first, put one drop on each roller, then wipe off the excess so it does not pick up grit."),
    ("Why do bees swarm?", "Swarming is how a colony reproduces: the old queen leaves with about half of the "
     "workers to found a new nest, and the colony left behind raises a new queen from the cells they prepared."),
    ("How do I keep bread from going stale?", "Keep it cut side down on a board for a day or two, or in a paper "
     "bag. For longer, slice and freeze it, then toast the slices straight from the freezer."),
    ("What should I pack for a first night camping?", "A tent you have pitched once at home, a sleeping bag "
     "rated for the night's low, a mat, a head torch, water, and food that needs no more than boiling water."),
]


def _pairs() -> list[dict]:
    return [{"pair_id": f"p{i}", "instruction": a, "output": b} for i, (a, b) in enumerate(PAIRS)]


def test_turn_end_is_the_templates_end_of_assistant_marker(tiny_engine):
    assert turn_end(tiny_engine) == "<|im_end|>"


def test_humpback_rows_have_the_blend_of_named_features(tiny_engine):
    scorer = HumpbackScorer(tiny_engine, ScorerConfig(kind="humpback"))
    pairs = _pairs()
    feats = scorer.features(pairs)
    rows = scorer.score(pairs)
    assert len(rows) == len(pairs)
    for f, r in zip(feats, rows):
        assert set(HUMPBACK_WEIGHTS) <= set(f) and f["tokens"] > 0
        assert math.isfinite(r["pmi"]) and r["score"] is None and r["expected_score"] is None
        assert r["pmi"] == pytest.approx(sum(w * f[k] for k, w in HUMPBACK_WEIGHTS.items()))
        assert all(f"{k}=" in r["rationale"] for k in HUMPBACK_WEIGHTS)
        assert f["end"] < 0 and f["end"] != NEUTRAL_END  # complete outputs: p(end of turn) was measured
    # the same pair scores the same alone or in a batch (no state leaks between pairs)
    alone = scorer.score(pairs[2:3])[0]["pmi"]
    assert alone == pytest.approx(rows[2]["pmi"], abs=1e-4)


def test_humpback_end_feature_is_neutral_for_a_cut_output_and_nulls_are_kept(tiny_engine):
    scorer = HumpbackScorer(tiny_engine, ScorerConfig(kind="humpback", max_output_chars=100))
    long_pair = {"instruction": "Tell me about tomatoes.", "output": "Tomatoes like sun. " * 20}
    [f] = scorer.features([long_pair])
    assert f["end"] == NEUTRAL_END  # the output was cut: where it ends says nothing about completeness
    empty = {"instruction": "Say nothing.", "output": ""}
    [row] = scorer.score([empty])
    assert row["pmi"] is None and row["rationale"] == "no tokens"


def test_auto_is_humpback_below_a_billion_parameters(tiny_engine):
    assert make_scorer(tiny_engine, ScorerConfig()).kind == "humpback"
    assert make_scorer(tiny_engine, ScorerConfig(auto_params_threshold=10)).kind == "rubric"


def test_curate_with_the_default_scorer_maps_to_tiers_and_checks_every_kind(tmp_path, tiny_model_dir):
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"instruction": f"{a} ({i})", "output": b}) + "\n"
                           for i, (a, b) in enumerate(PAIRS * 2)))
    cfg = CurateConfig(engine=FAST, min_score=4, self_check_sample=8, chunk_size=5)
    stats = run_curate(str(src), tiny_model_dir, str(tmp_path / "cur"), cfg)
    assert stats["scorer"] == "humpback"
    scores = records.read_rows(tmp_path / "cur" / "scores")
    assert len(scores) == 12 and all(s["score"] in {1.0, 2.0, 3.0, 4.0, 5.0} for s in scores)
    assert all(s["scorer"] == "humpback" and s["pmi"] is not None for s in scores)
    chk = stats["self_check"]
    assert set(chk["negatives"]) == {"shuffled", "neighbor", "truncated", "boilerplate"}
    assert chk["auroc"] == chk["negatives"]["shuffled"]["auroc"]
    assert all(0.0 <= v["auroc"] <= 1.0 for v in chk["negatives"].values())
    # a random model cannot tell good from bad: the warning names the kinds that failed
    weak = [k for k, v in chk["negatives"].items() if v["auroc"] < 0.75]
    assert weak and all(k in chk["warning"] for k in weak)


def test_self_check_kinds_are_configurable_and_cached_per_choice(tmp_path, tiny_model_dir):
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"instruction": a, "output": b}) + "\n" for a, b in PAIRS))
    cfg = CurateConfig(engine=FAST, self_check_sample=6, self_check_negatives=["truncated"])
    stats = run_curate(str(src), tiny_model_dir, str(tmp_path / "cur"), cfg)
    assert set(stats["self_check"]["negatives"]) == {"shuffled", "truncated"}
    again = run_curate(str(src), tiny_model_dir, str(tmp_path / "cur"),
                       cfg.model_copy(update={"self_check_negatives": ["boilerplate"]}))
    assert set(again["self_check"]["negatives"]) == {"shuffled", "boilerplate"}


def test_a_refit_of_the_blend_is_never_answered_from_cached_scores(tmp_path, tiny_model_dir, monkeypatch):
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"instruction": a, "output": b}) + "\n" for a, b in PAIRS))
    cfg = CurateConfig(engine=FAST, self_check_sample=0)
    run_curate(str(src), tiny_model_dir, str(tmp_path / "cur"), cfg)
    before = {r["pair_id"]: r["pmi"] for r in records.read_rows(tmp_path / "cur" / "scores")}
    # what a refit does to the source: new weights, hence a new revision
    monkeypatch.setitem(HUMPBACK_WEIGHTS, "pmi", HUMPBACK_WEIGHTS["pmi"] + 1.0)
    monkeypatch.setattr(HumpbackScorer, "revision", HumpbackScorer.revision + ",refit")
    run_curate(str(src), tiny_model_dir, str(tmp_path / "cur"), cfg)
    after = {r["pair_id"]: r for r in records.read_rows(tmp_path / "cur" / "scores")}
    assert after.keys() == before.keys()
    for pid, row in after.items():
        feats = dict(kv.split("=") for kv in row["rationale"].split())
        assert row["pmi"] == pytest.approx(before[pid] + float(feats["pmi"]), abs=1e-3)


@pytest.mark.slow
def test_smollm2_humpback_scorer_on_held_out_faq_pairs(smollm2_dir):
    """30 Python FAQ pairs from the test split (nobody on the team wrote them; never used to fit the blend)."""
    from humpback.engines.transformers_engine import TransformersEngine

    pairs = [json.loads(line) for line in (FIXTURES / "python_faq_heldout30.jsonl").read_text().splitlines()]
    pairs = [{"pair_id": p["id"], "instruction": p["instruction"], "output": p["output"]} for p in pairs]
    engine = TransformersEngine(smollm2_dir, EngineConfig(progress=False))
    scorer = HumpbackScorer(engine, ScorerConfig(kind="humpback", max_output_chars=2000))
    real = [r["pmi"] for r in scorer.score(pairs)]
    negs = build_negatives(pairs, ["shuffled", "truncated", "boilerplate"], seed=0)
    got = {k: auroc(real, [r["pmi"] for r in scorer.score(batch)]) for k, batch in negs.items()}
    assert got["shuffled"] >= 0.9, got
    assert got["boilerplate"] >= 0.9 and got["truncated"] >= 0.7, got
