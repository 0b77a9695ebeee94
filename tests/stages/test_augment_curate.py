"""Self-augmentation and self-curation: schemas, drop reasons, resume after kill -9, scorer quality."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from humpback.core import records
from humpback.stages.augment import AugmentConfig, PairFilter, PairFilterConfig, clean_instruction, run_augment
from humpback.core.config import EngineConfig, GenerationConfig
from humpback.stages.curate import CurateConfig, run_curate
from humpback.evaluate.common import auroc
from humpback.stages.scorers import (
    PMIScorer,
    RubricGenerateScorer,
    RubricScorer,
    ScorerConfig,
    parse_generated_score,
    pmi_to_scores,
    shuffled_pairs,
)
from humpback.stages.seed import BUILTIN_SEED_PATH

FAST = EngineConfig(dtype="float32", progress=False, batch_size=8)

TOPICS = [
    ("How do I keep basil alive indoors?",
     "Basil needs at least six hours of bright light a day, so a south-facing window or a grow light works best. "
     "Water when the top centimetre of soil is dry, and pinch off flower buds so the plant keeps making leaves."),
    ("What is a Python list comprehension?",
     "A list comprehension builds a list from an iterable in one expression: [x * x for x in range(5)] gives "
     "[0, 1, 4, 9, 16]. You can add a condition, as in [x for x in items if x > 0]."),
    ("Why is the sky blue?",
     "Sunlight is scattered by the molecules of the air, and shorter wavelengths scatter much more strongly "
     "than longer ones (Rayleigh scattering). Blue light is therefore spread across the whole sky."),
    ("Give me tips for a first marathon.",
     "Build your weekly distance slowly, do one long run each week, practise eating and drinking on long runs, "
     "and start the race slower than you think you should. Taper for two weeks before race day."),
]


def _segments(folder: Path, n: int = 12) -> Path:
    rows = []
    for i in range(n):
        _, text = TOPICS[i % len(TOPICS)]
        text = f"{text} (section {i})"
        rows.append({"segment_id": f"seg{i:03d}", "text": text, "heading": f"Heading {i}", "doc_id": f"doc{i // 3}",
                     "url": f"https://example.org/{i // 3}", "source": "fixture", "char_start": 0,
                     "char_end": len(text), "lang": "en", "lang_score": 0.95})
    records.write_parquet(rows, folder / "00000.parquet", "segment")
    return folder


def _aug_cfg(**kw) -> AugmentConfig:
    kw.setdefault("generation", GenerationConfig(max_tokens=12))
    return AugmentConfig(engine=FAST, chunk_size=4, **kw)


def _all_pairs(out: Path) -> list[dict]:
    rows = records.read_rows(out / "pairs") if (out / "pairs").exists() else []
    rej = records.read_rows(out / "rejected") if (out / "rejected").exists() else []
    return rows + rej


# ----------------------------------------------------------------------------- augment
def test_augment_writes_pairs_with_provenance_and_counts_drops(tmp_path, tiny_model_dir):
    seg = _segments(tmp_path / "segments")
    stats = run_augment(str(seg), tiny_model_dir, str(tmp_path / "out"), _aug_cfg(generation=GenerationConfig(
        max_tokens=12, n=2)))
    out = tmp_path / "out"
    pairs = records.read_table(out / "pairs", "pair").to_pylist()
    rejected = pq.read_table(out / "rejected").to_pylist()
    assert stats["segments_in"] == 12
    assert stats["pairs_generated"] == 24 == len(pairs) + len(rejected)
    assert stats["pairs_written"] == len(pairs)
    assert sum(stats["dropped"].values()) == len(rejected)
    assert all(r["reject_reason"] for r in rejected)
    assert json.loads((out / "stats.json").read_text())["pairs_generated"] == 24
    every = pairs + rejected
    assert len({r["pair_id"] for r in every}) == 24
    segs = {r["segment_id"]: r for r in records.read_rows(seg)}
    for r in every:
        assert r["output"] == segs[r["segment_id"]]["text"] and r["url"] == segs[r["segment_id"]]["url"]
        assert r["backward_model"] == tiny_model_dir and json.loads(r["gen_params"])["temperature"] == 0.7
    assert not any((out / ".work" / "augment").glob("*/*.parquet"))  # checkpoints dropped once published


def test_augment_is_deterministic_and_a_rerun_is_a_no_op(tmp_path, tiny_model_dir):
    seg = _segments(tmp_path / "segments", 6)
    run_augment(str(seg), tiny_model_dir, str(tmp_path / "a"), _aug_cfg())
    run_augment(str(seg), tiny_model_dir, str(tmp_path / "b"), _aug_cfg())
    key = lambda rows: sorted((r["pair_id"], r["instruction"]) for r in rows)  # noqa: E731
    assert key(_all_pairs(tmp_path / "a")) == key(_all_pairs(tmp_path / "b"))
    before = (tmp_path / "a" / "pairs" / "00000.parquet").stat().st_mtime_ns
    run_augment(str(seg), tiny_model_dir, str(tmp_path / "a"), _aug_cfg())
    assert (tmp_path / "a" / "pairs" / "00000.parquet").stat().st_mtime_ns == before


def test_pair_filters_name_each_reason():
    f = PairFilter(PairFilterConfig())
    seg = "Basil needs at least six hours of bright light a day, so a south-facing window works best."
    assert f.reason("", seg) == "empty_instruction"
    assert f.reason("How? " + "x" * 2000, seg) == "instruction_too_long"
    assert f.reason("Basil needs at least six hours of bright light a day", seg) == "copies_segment"
    assert f.reason("Sure, here is the answer you wanted.", seg) == "not_a_request"
    assert f.reason("Basil plants on a windowsill in summer.", seg) == "not_a_request"
    assert f.reason("I'm ready to help. What's the user's task?", seg) == "not_a_request"
    assert f.reason("I'm ready to assist. Please provide the instruction or question.", seg) == "not_a_request"
    assert f.reason("I'm planting basil indoors; how much light does it need?", seg) is None
    assert f.reason("How much light does basil need indoors?", seg) is None
    assert f.reason("Explain how to keep basil alive indoors", seg) is None
    assert clean_instruction('Instruction: "How do I grow basil?"') == "How do I grow basil?"


# ----------------------------------------------------------------------------- curate
def _pairs_jsonl(path: Path, n: int = 12) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            ins, out = TOPICS[i % len(TOPICS)]
            f.write(json.dumps({"instruction": f"{ins} ({i})", "output": out}) + "\n")
    return path


def test_curate_pmi_writes_scores_tier_histogram_and_self_check(tmp_path, tiny_model_dir):
    src = _pairs_jsonl(tmp_path / "pairs.jsonl")
    cfg = CurateConfig(engine=FAST, scorer=ScorerConfig(kind="pmi"), min_score=4, self_check_sample=8,
                       chunk_size=5)
    stats = run_curate(str(src), tiny_model_dir, str(tmp_path / "cur"), cfg)
    scores = records.read_table(tmp_path / "cur" / "scores", "score").to_pylist()
    curated = records.read_table(tmp_path / "cur" / "curated", "curated").to_pylist()
    assert len(scores) == 12 == stats["pairs_scored"] == sum(stats["histogram"].values())
    assert all(s["pmi"] is not None and s["score"] in {1.0, 2.0, 3.0, 4.0, 5.0} for s in scores)
    assert {c["pair_id"] for c in curated} == {s["pair_id"] for s in scores if s["score"] >= 4}
    assert stats["selected"] == len(curated) == stats["tiers"][">=4"]
    assert stats["self_check"]["n"] == 8 and 0.0 <= stats["self_check"]["auroc"] <= 1.0
    assert (tmp_path / "cur" / "score_hist.png").stat().st_size > 1000
    # a new --min-score re-selects from the checkpointed scores without scoring again
    again = run_curate(str(src), tiny_model_dir, str(tmp_path / "cur"), cfg.model_copy(update={"min_score": 1}))
    assert again["selected"] == 12
    assert records.read_rows(tmp_path / "cur" / "scores") == scores


def test_curate_reads_an_augment_folder_and_rubric_generate_keeps_nulls(tmp_path, tiny_model_dir):
    seg = _segments(tmp_path / "segments", 4)
    run_augment(str(seg), tiny_model_dir, str(tmp_path / "aug"), _aug_cfg(filters=PairFilterConfig(
        request_patterns=[], reject_patterns=[], min_chars=0, max_copy_overlap=1.0)))
    cfg = CurateConfig(engine=FAST, scorer=ScorerConfig(kind="rubric-generate", max_rationale_tokens=8),
                       self_check_sample=0)
    stats = run_curate(str(tmp_path / "aug"), tiny_model_dir, str(tmp_path / "cur"), cfg)
    scores = records.read_rows(tmp_path / "cur" / "scores")
    # a random model never writes "Score: N": every pair is kept with a null score and a counted reason
    assert len(scores) == 4 and all(s["score"] is None for s in scores)
    assert stats["histogram"]["null"] == 4 and sum(stats["null_scores"].values()) == 4
    assert all(s["rationale"].startswith("[") for s in scores)


def test_curate_names_missing_columns(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "output": "y"}) + "\n")
    with pytest.raises(records.RecordError, match=r"bad.jsonl: record 1 has no column\(s\) \['instruction'\]"):
        run_curate(str(bad), tiny_model_dir, str(tmp_path / "cur"), CurateConfig(engine=FAST))


def test_parse_generated_score_is_strict():
    assert parse_generated_score("Clear and complete.\nScore: 5") == (5, None)
    assert parse_generated_score("Good.\n**Score:** 4") == (4, None)
    assert parse_generated_score("ok\nScore: 3/5.") == (3, None)
    assert parse_generated_score("Score: 7") == (None, "out_of_range")
    assert parse_generated_score("Score: 4.5") == (None, "out_of_range")
    assert parse_generated_score("I would give it a 4.") == (None, "unparseable")
    assert parse_generated_score("Score: 4\nThat is my view.") == (None, "unparseable")
    assert parse_generated_score("   ") == (None, "empty_output")


def test_score_helpers():
    assert auroc([3, 4, 5], [1, 2, 3]) == pytest.approx((3 + 3 + 2.5) / 9)
    assert auroc([None], [1]) is None
    pairs = [{"instruction": str(i), "output": str(i)} for i in range(10)]
    sh = shuffled_pairs(pairs, seed=3)
    assert all(s["instruction"] != s["output"] for s in sh)
    assert sorted(s["instruction"] for s in sh) == sorted(p["instruction"] for p in pairs)
    scores, cuts = pmi_to_scores([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, None], ScorerConfig())
    assert scores[-1] is None and scores[0] == 1.0 and scores[9] == 5.0 and len(cuts) == 4


# ----------------------------------------------------------------------------- real SmolLM2
def _seed_pairs(n: int) -> list[dict]:
    rows = [json.loads(line) for line in (BUILTIN_SEED_PATH).read_text().splitlines()]
    step = max(len(rows) // n, 1)  # spread over categories
    return rows[::step][:n]


def test_smollm2_pmi_separates_real_from_shuffled_pairs(smollm2_dir):
    from humpback.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(smollm2_dir, EngineConfig(progress=False))
    pairs = _seed_pairs(24)
    scorer = PMIScorer(engine, ScorerConfig(kind="pmi", max_output_chars=600))
    real = [r["pmi"] for r in scorer.score(pairs)]
    fake = [r["pmi"] for r in scorer.score(shuffled_pairs(pairs, seed=0))]
    assert auroc(real, fake) >= 0.9
    rubric = RubricScorer(engine, ScorerConfig(kind="rubric", max_output_chars=600)).score(pairs[:3])
    for r in rubric:
        assert sum(r["score_probs"]) == pytest.approx(1.0, abs=1e-6)
        assert 1.0 <= r["expected_score"] <= 5.0 and r["score"] in {1.0, 2.0, 3.0, 4.0, 5.0}


def test_rubric_generate_needs_generation_and_pmi_needs_logprobs(tiny_engine):
    assert RubricGenerateScorer(tiny_engine, ScorerConfig()).kind == "rubric-generate"
