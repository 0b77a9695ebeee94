"""The one model step: a task's chunks are checkpointed, replayed after a kill, metered and counted."""

from __future__ import annotations

import pyarrow as pa
from datatrove.data import Document

from humpback.core.config import EngineConfig
from humpback.core.model_step import ChunkStore, ModelStep, Task, run_chunks

SCHEMA = pa.schema([("pair_id", pa.string()), ("output", pa.string())])


class FakeEngine:
    def __init__(self) -> None:
        self.counters = {"requests": 0}
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Upper(Task):
    name = "upper"
    schema = SCHEMA
    stage = "test"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, engine, docs):
        self.calls.append([d.id for d in docs])
        engine.counters["requests"] += len(docs)
        return [{"pair_id": d.id, "output": d.text.upper()} for d in docs], 3 * len(docs)

    def reject_reason(self, row):
        return "short" if len(row["output"]) < 2 else None


def _step(tmp_path, task, engines):
    step = ModelStep(task, "m", EngineConfig(), str(tmp_path / "chunks"), total=5, chunk_size=2)

    def make_engine(model, config, run_dir=None):
        engines.append(FakeEngine())
        return engines[-1]

    return step, make_engine


def test_chunks_are_checkpointed_and_replayed_without_the_engine(tmp_path, monkeypatch):
    import humpback.engines as engines_mod

    docs = [Document(text=t, id=f"d{i}") for i, t in enumerate(["ab", "c", "de", "fg", "hi"])]
    engines: list = []
    task = Upper()
    step, make_engine = _step(tmp_path, task, engines)
    monkeypatch.setattr(engines_mod, "make_engine", make_engine)
    out = list(step.run(iter(docs)))
    assert [d.metadata["row"]["output"] for d in out] == ["AB", "C", "DE", "FG", "HI"]
    assert [d.metadata["reject_reason"] for d in out] == [None, "short", None, None, None]
    # each computed chunk's engine counters ride on its first document
    assert [d.metadata.get("counters") for d in out] == [{"engine:requests": 2}, None, {"engine:requests": 2},
                                                         None, {"engine:requests": 1}]
    assert task.calls == [["d0", "d1"], ["d2", "d3"], ["d4"]] and len(engines) == 1 and engines[0].closed

    task.calls.clear()
    again = list(step.run(iter(docs)))  # every chunk is on disk: no engine is even built
    assert [d.metadata["row"] for d in again] == [d.metadata["row"] for d in out]
    assert task.calls == [] and len(engines) == 1
    assert all("counters" not in d.metadata for d in again)


def test_run_chunks_recomputes_a_chunk_whose_ids_changed(tmp_path):
    store = ChunkStore(tmp_path, SCHEMA)
    rows = lambda chunk: [{"pair_id": x, "output": x * 2} for x in chunk]  # noqa: E731
    first = list(run_chunks(rows, [["a", "b"], ["c"]], store, str))
    assert [computed for _, _, computed in first] == [True, True]
    second = list(run_chunks(rows, [["a", "b"], ["z"]], store, str))
    assert [(r, computed) for _, r, computed in second] == [
        ([{"pair_id": "a", "output": "aa"}, {"pair_id": "b", "output": "bb"}], False),
        ([{"pair_id": "z", "output": "zz"}], True)]
