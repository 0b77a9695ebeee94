"""`humpback run` (manifest, skip/re-run/resume), `humpback export` (load_dataset round trip, Hub upload to a
recording local endpoint) and `humpback stats`, on the tiny random Llama."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from humpback.cli import main
from humpback.core.config import ConfigError
from humpback.core.faults import ENV as FAULT_ENV
from humpback.init import CONFIGS, STARTER
from humpback.loop import Layout, RunConfig, build_stages, load_run_config, run_loop
from humpback.core.records import parquet_files
from humpback.core.results import card_row, describe
from humpback.core.runs import StageContext
from runconfig import tiny_run_config

REPO = Path(__file__).resolve().parent.parent


_config = tiny_run_config


def _rows(folder: Path, columns: list[str]) -> list[tuple]:
    rows = [tuple(r[c] for c in columns) for f in parquet_files(folder) for r in pq.read_table(f).to_pylist()]
    return sorted(rows)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("loop")
    cfg = _config(tmp, tiny_model_dir)
    run = run_loop(cfg, run_dir=str(tmp / "run"))
    return tmp, cfg, run


def test_run_executes_every_stage_and_writes_the_layout(finished_run):
    tmp, _, run = finished_run
    root = tmp / "run"
    assert [r["status"] for r in run.summary_rows()] == ["done"] * 14
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["config_hash"] and manifest["versions"]["transformers"]
    assert set(manifest["stages"]["prepare"]["inputs"]) == {str(tmp / "corpus.jsonl")}
    assert not (root / "corpus").exists()  # only built for the `quickstart` corpus
    for rel in ("prepared/segments", "seed.parquet", "seed.heldout.parquet", "augment/pairs", "curate/r1/curated",
                "curate/r2/curated", "export/README.md"):
        assert (root / rel).exists(), rel
    for m in ("backward", "m0", "m1", "m2"):
        assert (root / "models" / m / "humpback_train.json").is_file()
    pairs = _rows(root / "augment" / "pairs", ["pair_id"])
    assert len(pairs) == 8 and len(set(pairs)) == 8
    # M1 trains on seed + the round-1 tier, M2 on seed + the round-2 tier
    s1 = json.loads((root / "models" / "m1" / "humpback_train.json").read_text())
    selected = manifest["stages"]["curate-r1"]["result"]["selected"]
    # (long examples beyond max_length are dropped by the training, so <=)
    assert 0 < s1["data"]["examples_by_origin"].get("augmented", 0) <= selected
    assert str(root / "curate" / "r1" / "curated") in json.dumps(s1["data"]["sources"])
    assert manifest["stages"]["curate-r2"]["result"]["model"] == str(root / "models" / "m1")


def test_rerun_of_a_finished_run_does_nothing(finished_run):
    tmp, cfg, run = finished_run
    before = json.loads((tmp / "run" / "manifest.json").read_text())["stages"]
    again = run_loop(cfg, run_dir=str(tmp / "run"))
    assert set(again.timings.values()) == {0.0}
    after = json.loads((tmp / "run" / "manifest.json").read_text())["stages"]
    assert {k: v["finished"] for k, v in before.items()} == {k: v["finished"] for k, v in after.items()}


def test_changed_stage_config_reruns_it_and_what_follows(finished_run, tiny_model_dir):
    tmp, _, _ = finished_run
    import shutil

    shutil.copytree(tmp / "run", tmp / "run-changed")
    cfg = _config(tmp, tiny_model_dir, **{"curate.min_score": 3})
    run = run_loop(cfg, run_dir=str(tmp / "run-changed"))
    rerun = {k for k, v in run.timings.items() if v > 0}
    assert rerun == {"curate-r1", "m1", "eval-m1", "curate-r2", "m2", "eval-m2", "export"}


def test_from_and_until_select_stages(finished_run, tiny_model_dir):
    tmp, cfg, _ = finished_run
    import shutil

    shutil.copytree(tmp / "run", tmp / "run-from")
    run = run_loop(cfg, run_dir=str(tmp / "run-from"), start="m2")
    assert {k for k, v in run.timings.items() if v > 0} == {"m2", "eval-m2", "export"}
    part = run_loop(cfg, run_dir=str(tmp / "run-until"), until="seed")
    assert list(part.timings) == ["prepare", "seed"]
    with pytest.raises(Exception, match="unknown stage; stages are: prepare, seed"):
        run_loop(cfg, run_dir=str(tmp / "run-until"), until="nope")


def test_the_loop_is_a_table_whose_stages_name_what_they_read(tmp_path):
    stages = build_stages(RunConfig(rounds=2), Layout(tmp_path))
    names = [st.name for st in stages]
    assert names == ["corpus", "prepare", "seed", "backward", "eval-backward", "augment", "m0", "eval-m0",
                     "curate-r1", "m1", "eval-m1", "curate-r2", "m2", "eval-m2", "export"]
    for i, st in enumerate(stages):  # what a scheduler chains jobs by: each reads only stages before it
        # (export reads the result round's stages, known once the stages before it have results)
        after = st.depends_on(StageContext(None, {n: {} for n in names[:i]})) if callable(st.depends_on) \
            else st.depends_on
        assert set(after) <= set(names[:i]), st.name
    assert dict((st.name, list(st.depends_on)) for st in stages if not callable(st.depends_on))["curate-r2"] == \
        ["augment", "m1"]
    cfg = RunConfig(rounds=1, corpus={"inputs": [str(tmp_path)]}, export={"enabled": False},
                    evaluate={"backward": False, "forward": False})
    assert [st.name for st in build_stages(cfg, Layout(tmp_path))] == ["prepare", "seed", "backward", "augment",
                                                                       "m0", "curate-r1", "m1"]


def test_a_stage_result_gives_both_its_summary_line_and_its_card_row():
    r = {"scored": 5, "selected": 3, "tiers": {">=4": 3}, "scorer": "humpback", "min_score": 4, "auroc": 0.9,
         "auroc_n": 10, "auroc_by_kind": {}}
    assert describe("curate-r1", r) == "3 of 5 selected (score >= 4); tiers {'>=4': 3}; AUROC shuffled 0.900 (n=10)"
    assert card_row("curate-r1", r) == "3 of 5 pairs with score ≥ 4 (humpback); self-check AUROC 0.900"
    assert describe("m1", {"output": "models/m1"}) == "models/m1"  # no loss figures: where it is
    assert describe("export", {}) == "" and card_row("export", {"rows": 3}) is None


def test_unknown_key_and_missing_input_are_named(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncurate:\n  min_scroe: 4\n")
    with pytest.raises(ConfigError, match=r"curate.min_scroe: unknown key"):
        load_run_config(bad)
    missing = _config(tmp_path, tiny_model_dir, **{"corpus.inputs": ["/nonexistent/corpus.jsonl"]})
    with pytest.raises(ConfigError, match=r"corpus.inputs\[0\]: /nonexistent/corpus.jsonl"):
        run_loop(missing, run_dir=str(tmp_path / "r"))
    result = CliRunner().invoke(main, ["run", str(bad)])
    assert result.exit_code == 2 and "min_scroe: unknown key" in result.output


def test_shipped_configs_are_valid():
    for name in ("quickstart.yaml", "paper.yaml"):
        load_run_config(CONFIGS / name)
    cfg = load_run_config(STARTER)
    assert cfg.rounds == 1 and cfg.corpus.inputs == ["quickstart"] and cfg.seed.path == "builtin"


def _run_cli(cfg: Path, root: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """`humpback run` in a process group of its own; with ``fault``, it kills itself at that point."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV} | {"PYTHONUNBUFFERED": "1"}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "humpback", "run", str(cfg), "--run-dir", str(root), *args],
                          env=env, capture_output=True, text=True, timeout=900, start_new_session=True)


def _killed_copy(finished_run, tmp_path: Path, stage: str, fault: str) -> tuple[Path, Path, Path]:
    """A copy of the finished run with ``stage`` re-run and killed at ``fault``; returns (copy, ref, cfg)."""
    tmp, cfg, _ = finished_run
    ref, root = tmp / "run", tmp_path / "run"
    shutil.copytree(ref, root)
    killed = _run_cli(cfg, root, "--from", stage, "--until", stage, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    stages = json.loads((root / "manifest.json").read_text())["stages"]
    assert stages[stage]["status"] == "running"
    return root, ref, cfg


def _resume(cfg: Path, root: Path, stage: str) -> None:
    done = _run_cli(cfg, root, "--until", stage)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"[{stage}] resuming an interrupted run" in done.stderr
    assert json.loads((root / "manifest.json").read_text())["stages"][stage]["status"] == "done"


def _replayed(logs: Path) -> int:
    """How many documents a datatrove stage took from chunk checkpoints instead of the model."""
    stats = json.loads((logs / "stats.json").read_text())
    return sum(s.get("stats", {}).get("replayed_from_checkpoint", {}).get("total", 0) for s in stats)


def test_kill_in_augment_after_the_first_chunk_then_rerun_resumes(finished_run, tmp_path):
    root, ref, cfg = _killed_copy(finished_run, tmp_path, "augment", "augment.chunk_saved")
    chunks = sorted((root / "augment" / ".work" / "augment").rglob("*.parquet"))
    assert len(chunks) == 1  # the kill came right after the first of two chunks was checkpointed
    assert not list((root / "augment" / "pairs").glob("*.parquet"))  # shards are published only when complete
    _resume(cfg, root, "augment")
    assert _replayed(root / "augment" / ".work" / "augment-logs") == 4  # the checkpointed chunk, not regenerated
    # Every segment has its pairs once. (Pair ids name the backward model's path, which differs in the copy.)
    got = _rows(root / "augment" / "pairs", ["segment_id"]) + _rows(root / "augment" / "rejected", ["segment_id"])
    want = _rows(ref / "augment" / "pairs", ["segment_id"]) + _rows(ref / "augment" / "rejected", ["segment_id"])
    assert sorted(got) == sorted(want) and len(got) == 8
    ids = _rows(root / "augment" / "pairs", ["pair_id"])
    assert len(ids) == len(set(ids))


def test_kill_in_curate_after_the_first_chunk_then_rerun_resumes(finished_run, tmp_path):
    root, ref, cfg = _killed_copy(finished_run, tmp_path, "curate-r1", "curate.chunk_saved")
    assert len(list((root / "curate" / "r1" / ".work").rglob("*.parquet"))) >= 1
    _resume(cfg, root, "curate-r1")
    scored = _rows(root / "curate" / "r1" / "scores", ["pair_id"])
    assert scored == _rows(root / "augment" / "pairs", ["pair_id"]) and len(set(scored)) == len(scored) == 8
    assert all(s is not None for (s,) in _rows(root / "curate" / "r1" / "scores", ["score"]))


def test_kill_in_training_after_a_checkpoint_then_rerun_resumes_from_it(finished_run, tmp_path):
    root, ref, cfg = _killed_copy(finished_run, tmp_path, "m1", "train.checkpoint_saved")
    state = root / "models" / "m1.partial" / "checkpoints" / "checkpoint-1" / "trainer_state.json"
    assert json.loads(state.read_text())["global_step"] == 1 and not (root / "models" / "m1").exists()
    _resume(cfg, root, "m1")
    summary = json.loads((root / "models" / "m1" / "humpback_train.json").read_text())
    assert summary["results"]["resumed_from_step"] == 1 and summary["results"]["global_step"] == 2
    reference = json.loads((ref / "models" / "m1" / "humpback_train.json").read_text())
    assert summary["data"]["examples_by_origin"] == reference["data"]["examples_by_origin"]

def test_export_round_trips_through_load_dataset(finished_run, tmp_path):
    from datasets import load_dataset

    tmp, _, _ = finished_run
    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["export", str(tmp / "run"), "--to-dir", str(out), "--with-seed",
                                       "--license", "cc-by-4.0"])
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "cc-by-4.0" and meta["task_categories"] == ["text-generation"]
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*"
    assert "score_hist.png" in card and "Scorer self-check" in card and "AUROC" in card
    assert (out / "score_hist.png").stat().st_size > 1000 and (out / "lengths.png").is_file()
    ours = pq.read_table(parquet_files(out / "data")[0]).to_pylist()
    ds = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert ds.to_list() == ours
    origins = {r["origin"] for r in ours}
    assert origins == {"seed", "augmented"}
    aug = [r for r in ours if r["origin"] == "augmented"]
    assert all(r["score"] >= 2 and r["round"] == 2 for r in aug)
    assert aug[0]["messages"][0] == {"role": "system", "content": "Answer with knowledge from web search."}
    assert aug[0]["messages"][2]["content"] == aug[0]["output"]


def test_export_min_score_and_exclusions(finished_run, tmp_path):
    from humpback.stages.export import export_dataset

    tmp, _, _ = finished_run
    everything = export_dataset(tmp / "run" / "curate" / "r1", tmp_path / "all", min_score=1)
    ids = [r["pair_id"] for r in pq.read_table(tmp_path / "all" / "data").to_pylist()]
    assert everything.rows == len(ids) == 8
    flagged = tmp_path / "flagged.jsonl"
    flagged.write_text("\n".join(json.dumps({"pair_id": i, "ngram": "x"}) for i in ids[:3]) + "\n")
    fewer = export_dataset(tmp / "run" / "curate" / "r1", tmp_path / "fewer", min_score=1, exclude=[flagged])
    assert fewer.rows == 5 and fewer.excluded == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pair_id": "a"}\n{"id": "b"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: field 'pair_id' missing"):
        export_dataset(tmp / "run", tmp_path / "x", exclude=[bad])


class _RecordingHub(BaseHTTPRequestHandler):
    """Just enough of the Hub API for create_repo + upload_folder; records every request."""

    log: list = []

    def log_message(self, *args):
        pass

    def _reply(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.log.append(("POST", self.path, self.headers.get("Authorization"), data))
        if self.path.startswith("/api/repos/create"):
            name = json.loads(data)["name"]
            org = json.loads(data).get("organization") or "me"
            return self._reply({"url": f"http://127.0.0.1:{self.server.server_port}/datasets/{org}/{name}",
                                "name": name})
        if self.path.startswith("/api/validate-yaml"):  # the Hub checks the card's metadata before a commit
            meta = yaml.safe_load(json.loads(data)["content"].split("---")[1])
            errors = [] if meta.get("configs") and meta.get("license") else [{"message": "bad card metadata"}]
            return self._reply({"errors": errors, "warnings": []}, 400 if errors else 200)
        if "/preupload/" in self.path:
            files = json.loads(data)["files"]
            return self._reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in files]})
        if "/commit/" in self.path:
            repo = self.path.split("/api/datasets/")[1].split("/commit/")[0]
            return self._reply({"commitUrl": f"http://127.0.0.1:{self.server.server_port}/datasets/{repo}/commit/"
                                             + "a" * 40, "commitOid": "a" * 40, "success": True})
        return self._reply({"error": f"unexpected {self.path}"}, 404)

    def do_GET(self):
        self.log.append(("GET", self.path, self.headers.get("Authorization"), b""))
        return self._reply({"error": "not found"}, 404)


def test_export_to_hub_uploads_to_a_local_endpoint(finished_run, tmp_path):
    tmp, _, _ = finished_run
    _RecordingHub.log = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", MY_TOKEN="hf_secret_token_123")
    try:
        proc = subprocess.run([sys.executable, "-m", "humpback", "export", str(tmp / "run"), "--to-dir",
                               str(tmp_path / "local"), "--to-hub", "me/humpback-test", "--private",
                               "--token-env", "MY_TOKEN"], env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hf_secret_token_123" not in proc.stdout + proc.stderr
    create = [e for e in _RecordingHub.log if e[1].startswith("/api/repos/create")]
    body = json.loads(create[0][3])
    # huggingface_hub >= 1 sends `visibility`, older versions `private`
    assert (body.get("visibility") == "private" or body.get("private") is True) and body["type"] == "dataset"
    # the repo creation and the commit are authenticated with the token from --token-env
    assert all(e[2] == "Bearer hf_secret_token_123" for e in _RecordingHub.log
               if e[1].startswith("/api/repos/create") or "/commit/" in e[1] or "/preupload/" in e[1])
    commit = [e for e in _RecordingHub.log if "/commit/" in e[1]]
    assert commit and "/api/datasets/me/humpback-test/commit/main" in commit[0][1]
    sent = {}
    for line in commit[0][3].decode().splitlines():
        op = json.loads(line)
        if op["key"] == "file":
            sent[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
    local = tmp_path / "local"
    expected = {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()}
    assert set(sent) == expected and "README.md" in sent
    assert sent["README.md"] == (local / "README.md").read_bytes()


def test_export_to_hub_without_network_keeps_the_local_export(finished_run, tmp_path):
    tmp, _, _ = finished_run
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_x")  # port 9: nothing listens
    proc = subprocess.run([sys.executable, "-m", "humpback", "export", str(tmp / "run"), "--to-dir",
                           str(tmp_path / "local"), "--to-hub", "me/x"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "failed" in proc.stderr and "local export in" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "local" / "README.md").is_file() and parquet_files(tmp_path / "local" / "data")


# ------------------------------------------------------------------------------------------------ stats
def test_stats_describes_every_stage_of_a_run(finished_run, tmp_path):
    from humpback.analysis.stats import collect_stats

    tmp, _, _ = finished_run
    results = {r["name"]: r for r in collect_stats(tmp / "run")}
    assert {"seed.parquet", "prepared/segments", "augment/pairs", "curate/r1/scores", "curate/r1/curated",
            "export/data"} <= set(results)
    pairs = results["augment/pairs"]
    assert pairs["kind"] == "pairs" and pairs["rows"] == 8 and pairs["duplicate_rate"] == 0.0
    scores = results["curate/r1/scores"]
    assert sum(scores["score_histogram"].values()) + scores["null_scores"] == 8
    curated = results["curate/r1/curated"]
    assert curated["rows"] == scores["tiers"][">=3"] + scores["score_histogram"]["2"]  # min_score 2
    result = CliRunner().invoke(main, ["stats", str(tmp / "run" / "augment" / "pairs"), "--plot",
                                       str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    # (the tiny random model writes no verbs, so no top-verbs block here; test_stats_counts_... covers it)
    assert "duplicate rate" in result.output and "distinct-2" in result.output
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_stats_counts_duplicates_and_verbs(tmp_path):
    from humpback.analysis.stats import collect_stats

    rows = [{"instruction": "Write a poem about the sea.", "output": "Waves."},
            {"instruction": "write a poem  about the sea.", "output": "Waves again."},
            {"instruction": "Explain the tides.", "output": "The moon."},
            {"instruction": "Write a story about a dog.", "output": "Woof."}]
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    [r] = collect_stats(f)
    assert r["kind"] == "seed" and r["rows"] == 4 and r["duplicate_rate"] == 0.25
    assert r["top_verbs"]["write"] == 3 and r["top_verb_noun"]["write poem"] == 2
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"a": 1}\n')
    result = CliRunner().invoke(main, ["stats", str(bad)])
    assert result.exit_code == 2 and "not segments, pairs" in result.output


def test_config_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "config_reference.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
