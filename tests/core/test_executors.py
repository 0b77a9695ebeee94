"""Executors: `prepare` and `augment` on a local Ray instance give the local executor's output; Slurm configs
render the expected sbatch settings and job dependencies (dry run: datatrove's real launch code, with sbatch
replaced by a recorder)."""

from __future__ import annotations

import os
from pathlib import Path

import dill
import pytest

from humpback.core import records
from humpback.stages.augment import AugmentConfig, run_augment
from humpback.core.config import ConfigError, EngineConfig, GenerationConfig, validate_config
from humpback.stages.prepare import run_prepare
from humpback.stages.curate import CurateConfig, run_curate
from humpback.stages.scorers import ScorerConfig
from humpback.core.shards import ExecutorConfig

FAST = EngineConfig(dtype="float32", progress=False, batch_size=8)


def _segments(folder: Path, n: int = 10) -> Path:
    rows = []
    for i in range(n):
        text = (f"Section {i}: water the basil when the top of the soil is dry, give it six hours of light, and "
                f"pinch off the flower buds so that it keeps growing leaves for longer (note {i}).")
        rows.append({"segment_id": f"seg{i:03d}", "text": text, "heading": f"H{i}", "doc_id": f"d{i % 3}",
                     "url": None, "source": "fixture", "char_start": 0, "char_end": len(text), "lang": "en",
                     "lang_score": 0.9})
    half = n // 2
    records.write_parquet(rows[:half], folder / "00000.parquet", "segment")
    records.write_parquet(rows[half:], folder / "00001.parquet", "segment")
    return folder


def _pairs(out: Path) -> dict[str, str]:
    rows = records.read_rows(out / "pairs") + (records.read_rows(out / "rejected") if (out / "rejected").exists()
                                               else [])
    return {r["pair_id"]: r["instruction"] for r in rows}


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=150 * 2**20)
    yield ray
    ray.shutdown()


def test_prepare_on_ray_equals_local(tmp_path, local_ray):
    from sample_corpus import resume_corpus

    src = resume_corpus(tmp_path)
    # MinHash off: its 14 bucket tasks would each be a Ray job; exact dedup still makes it a 3-stage run
    base = {"progress": False, "tasks": 2, "dedup.minhash": False}
    local = run_prepare([str(src)], tmp_path / "local", overrides={**base, "workers": 1})
    on_ray = run_prepare([str(src)], tmp_path / "ray", overrides={**base, "executor": "ray",
                                                                   "ray.mem_per_cpu_gb": 0.5})
    assert on_ray.stats["stages_run"] == ["1-segment", "2-exact-find", "6-write"]
    # a loaded machine once cost pages here: a slow start of the extractor process counted as their timeout
    assert on_ray.stats["documents"]["quarantined"] == local.stats["documents"]["quarantined"] == {}
    assert on_ray.num_segments == local.num_segments > 0
    key = lambda r: r["segment_id"]  # noqa: E731
    assert sorted(records.read_rows(on_ray.segments_dir), key=key) == sorted(
        records.read_rows(local.segments_dir), key=key)
    assert on_ray.stats["segments"]["dropped"] == local.stats["segments"]["dropped"]


def test_augment_on_ray_equals_local(tmp_path, local_ray, tiny_model_dir):
    segs = _segments(tmp_path / "segments")
    base = dict(engine=FAST, generation=GenerationConfig(max_tokens=8), chunk_size=4)
    local = run_augment(str(segs), tiny_model_dir, str(tmp_path / "local"),
                        AugmentConfig(**base, executor={"tasks": 2}))
    on_ray = run_augment(str(segs), tiny_model_dir, str(tmp_path / "ray"), AugmentConfig(
        **base, executor={"kind": "ray", "tasks": 2, "ray": {"mem_per_cpu_gb": 0.5}}))
    assert on_ray["pairs_generated"] == local["pairs_generated"] == 10
    assert on_ray["dropped"] == local["dropped"]
    assert _pairs(tmp_path / "ray") == _pairs(tmp_path / "local")


def _recorded(folder: Path) -> list[tuple[str, list[str]]]:
    return [(f.read_text(), f.with_suffix(".args").read_text().split()) for f in sorted(folder.glob("*.sbatch"))]


def _directives(script: str) -> dict[str, str]:
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --"):].partition("=")
            out[key] = value
    return out


def test_slurm_augment_renders_arrays_gpus_and_dependencies(tmp_path):
    segs = _segments(tmp_path / "segments")
    path_before = os.environ["PATH"]
    cfg = AugmentConfig(
        engine=EngineConfig(kind="vllm", vllm={"tp": 2, "model_max_context": 4096}),
        executor={"kind": "slurm", "tasks": 8, "workers": 4, "slurm": {
            "partition": "gpu", "time": "12:00:00", "cpus_per_task": 8, "gpus_per_task": 2, "mem_per_cpu_gb": 4,
            "qos": "high", "sbatch_args": {"account": "proj"}, "dry_run": True}})
    out = tmp_path / "aug"
    result = run_augment(str(segs), "HuggingFaceTB/SmolLM2-135M-Instruct", str(out), cfg, depends="4242")
    assert os.environ["PATH"] == path_before
    assert result["submitted"] and result["dry_run"] and result["job_id"] == "dryrun-5"
    jobs = _recorded(out / ".work" / "slurm-dry-run")
    # generate array, pairs array, finish job, each followed by datatrove's stats merge job
    assert len(jobs) == 6
    (gen, gen_args), (merge, _), (pairs, pairs_args), _, (finish, finish_args), _ = jobs
    d = _directives(gen)
    assert d["array"] == "0-7%4" and d["partition"] == "gpu" and d["gpus"] == "2" and d["time"] == "12:00:00"
    assert d["cpus-per-task"] == "8" and d["mem-per-cpu"] == "4G" and d["qos"] == "high" and d["account"] == "proj"
    assert d["job-name"] == "humpback-augment-generate"
    assert "--dependency=afterok:4242" in gen_args  # waits for the stage submitted before it
    assert "launch_pickled_pipeline" in gen and "bin/activate" in gen
    assert _directives(merge)["dependency"] == "afterok:dryrun-1"
    p = _directives(pairs)
    assert "gpus" not in p and p["array"] == "0-7%4" and "--dependency=afterok:dryrun-1" in pairs_args
    assert _directives(finish)["array"] == "0-0" and "--dependency=afterok:dryrun-3" in finish_args
    # the pickled job is what the nodes run: InferenceRunner configured for vLLM with tensor parallelism 2
    with open(out / ".work" / "augment-vllm" / "logs" / "executor.pik", "rb") as f:
        executor = dill.load(f)
    runner = executor.pipeline[1]
    assert runner.config.server_type == "vllm" and runner.config.tp == 2
    assert runner.config.model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert runner.config.model_max_context == 4096


def test_slurm_curate_and_prepare_chain_their_jobs(tmp_path):
    from sample_corpus import resume_corpus

    sl = {"partition": "cpu", "dry_run": True}
    src = resume_corpus(tmp_path)
    prep = run_prepare([str(src)], tmp_path / "prep", overrides={"progress": False, "tasks": 4, "executor": "slurm",
                                                                  "slurm": sl})
    assert "dry run" in prep.summary()
    jobs = _recorded(tmp_path / "prep" / "work" / "slurm-dry-run")
    arrays = [(s, a) for s, a in jobs if "merge_stats" not in s]
    assert [_directives(s)["job-name"] for s, _ in arrays] == [
        "humpback-prepare-1-segment", "humpback-prepare-2-exact-find", "humpback-prepare-3-minhash-sign",
        "humpback-prepare-4-minhash-buckets", "humpback-prepare-5-minhash-cluster", "humpback-prepare-6-write",
        "humpback-prepare-7-finish"]
    ids = [f"dryrun-{i + 1}" for i, (s, _) in enumerate(jobs) if "merge_stats" not in s]
    for (script, args), previous in zip(arrays[1:], ids):
        assert f"--dependency=afterok:{previous}" in args
    assert not (tmp_path / "prep" / "segments").exists()  # the last job publishes them

    # curate queued after that augment job: its pairs do not exist yet, the self-check job gets the GPU
    cur = run_curate(str(tmp_path / "aug"), "HuggingFaceTB/SmolLM2-1.7B-Instruct", str(tmp_path / "cur"),
                     CurateConfig(scorer=ScorerConfig(kind="rubric"), engine=EngineConfig(
                         kind="vllm", endpoint={"tokenizer": "smollm2-135m-instruct"}),
                         executor={"kind": "slurm", "tasks": 2, "slurm": {**sl, "gpus_per_task": 1}}),
                     depends=prep.stats["job_id"])
    assert cur["submitted"] and cur["scorer"] == "rubric"
    jobs = [(s, a) for s, a in _recorded(tmp_path / "cur" / ".work" / "slurm-dry-run") if "merge_stats" not in s]
    score, rows, finish = jobs
    assert f"--dependency=afterok:{prep.stats['job_id']}" in score[1]
    assert _directives(score[0])["gpus"] == "1" and "gpus" not in _directives(rows[0])
    assert _directives(finish[0])["gpus"] == "1"


def test_executor_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="slurm.partition"):
        validate_config(ExecutorConfig, {"kind": "slurm"})
    with pytest.raises(ConfigError, match="ray.adress: unknown key"):
        validate_config(ExecutorConfig, {"kind": "ray", "ray": {"adress": "auto"}})
