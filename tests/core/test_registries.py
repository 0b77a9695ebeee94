"""Scorers, engines and corpus formats are registries: a toy entry registered here is used through the public
entry point (make_scorer, make_engine, prepare), and an unknown name is one error naming the key
(docs/extending.md)."""

from __future__ import annotations

import pytest

from humpback.core.config import ConfigError, validate_config
from humpback.stages.prepare import PrepareConfig, run_prepare
from humpback.stages.prepare.readers import CORPUS_FORMATS, CorpusFormat
from humpback.stages.curate import CurateConfig
from humpback.engines import ENGINES, GENERATE, Engine, EngineConfig, GenerationResult, make_engine
from humpback.core.registry import Registry
from humpback.rest.rewards import REWARDS
from humpback.stages.scorers import SCORERS, Scorer, ScorerConfig, make_scorer, register_scorer


@pytest.fixture(autouse=True)
def restore_registries(monkeypatch):
    """Toy entries stay in this test: each registry gets a copy of its entries for its duration."""
    for registry in (SCORERS, ENGINES, CORPUS_FORMATS, REWARDS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))


def _invalid_line(model, data) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(model, data, source="cfg.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == "cfg.yaml: invalid configuration" and len(lines) == 2
    return lines[1]


def test_registry_lookup_lazy_entries_and_errors():
    reg: Registry[int] = Registry("widget", "widget.kind")
    reg.register("one", 1)
    reg.register("path", "os.path:join")  # imported when first used
    assert reg.get("one") == 1 and reg["path"] is __import__("os").path.join
    assert reg.names() == ("one", "path") and "one" in reg and list(reg) == ["one", "path"] and len(reg) == 2
    with pytest.raises(ConfigError, match=r"^widget\.kind: unknown widget 'two'; known: one, path$"):
        reg.get("two")


class ToyEngine(Engine):
    capabilities = frozenset({GENERATE})

    def __init__(self, model, config, run_dir=None):
        super().__init__(model)
        self.config, self.run_dir = config, run_dir

    def generate(self, requests):
        return [GenerationResult(["toy"], ["stop"], 1, [1]) for _ in requests]


def test_a_toy_engine_is_made_by_make_engine_and_accepted_by_configs(tmp_path):
    ENGINES.register("toy", ToyEngine)
    engine = make_engine("m", EngineConfig(kind="toy"), run_dir=tmp_path)
    assert isinstance(engine, ToyEngine) and engine.model_ref == "m" and engine.run_dir == tmp_path
    assert validate_config(CurateConfig, {"engine": {"kind": "toy"}}).engine.kind == "toy"
    assert _invalid_line(CurateConfig, {"engine": {"kind": "nope"}}) == (
        "  engine.kind: Input should be 'transformers', 'endpoint', 'vllm' or 'toy' (got 'nope')")
    with pytest.raises(ConfigError, match=r"^engine\.kind: unknown engine 'nope'; known: endpoint, toy, "):
        ENGINES.get("nope")


class LengthScorer(Scorer):
    """A toy: longer outputs score higher; needs nothing from the engine."""

    kind = "toy-length"

    def score(self, pairs):
        return [{"score": float(min(5, 1 + len(p["output"]) // 10)), "score_probs": None, "expected_score": None,
                 "pmi": None, "rationale": "length"} for p in pairs]

    @staticmethod
    def continuous(row):
        return row["score"]


def test_a_toy_scorer_is_made_by_make_scorer_and_named_in_configs():
    register_scorer(LengthScorer)
    scorer = make_scorer(ToyEngine("m", EngineConfig()), ScorerConfig(kind="toy-length"))
    assert isinstance(scorer, LengthScorer)
    assert [r["score"] for r in scorer.score([{"instruction": "q", "output": "x" * 25}])] == [3.0]
    assert _invalid_line(CurateConfig, {"scorer": {"kind": "nope"}}) == (
        "  scorer.kind: Input should be 'auto', 'rubric', 'rubric-generate', 'pmi', 'humpback' or 'toy-length' "
        "(got 'nope')")
    with pytest.raises(ConfigError, match=r"^scorer\.kind: unknown scorer 'nope'; known: humpback, pmi, "):
        SCORERS.get("nope")


def read_toy(reader, unit):
    """``.toy`` files: one document per line, ``ID<TAB>TEXT``."""
    with open(unit.url, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            doc_id, _, text = line.rstrip("\n").partition("\t")
            yield reader.make_doc(unit, text, doc_id or f"{unit.rel}:{lineno}", position=lineno)


def test_a_toy_corpus_format_is_read_by_prepare(tmp_path):
    CORPUS_FORMATS.register("toy", CorpusFormat({"toy": (".toy",)}, read_toy))
    src = tmp_path / "corpus.toy"
    src.write_text("a\tHoney bees live in colonies of many thousands of workers.\nb\t   \n")
    for fmt in ("toy", "auto"):  # named, or found by its extension
        out = tmp_path / f"out-{fmt}"
        result = run_prepare([str(src)], out, overrides={"read.format": fmt, "progress": False})
        docs = result.stats["documents"]
        assert docs["in"] == 2 and docs["quarantined"] == {"empty_document": 1}
    assert _invalid_line(PrepareConfig, {"read": {"format": "nope"}}) == (
        "  read.format: Input should be 'auto', 'jsonl', 'parquet', 'warc', 'files', 'hf-disk' or 'toy' "
        "(got 'nope')")
    with pytest.raises(ConfigError, match=r"^read\.format: unknown corpus format 'nope'; known: files, hf-disk, "):
        CORPUS_FORMATS.get("nope")
