"""Endpoint throughput: augment's backward generations through the `endpoint` engine (a `transformers serve`
process on 127.0.0.1) vs the in-process transformers engine, on the same prompts, sampling and seeds.
Model loading and server start-up are left out on both sides; the ratio is endpoint / in-process.

On a GPU machine with vLLM, ``--vllm-segments N`` also runs `humpback augment` with engine kind vllm (datatrove's
InferenceRunner starting vLLM) and compares its output tokens/s with datatrove's published per-H100 baseline
for this kind of job: 28.4k tok/s with default settings, 45.5k tuned.

    .venv/bin/python tools/bench/endpoint.py [--segments 16] [--max-tokens 32] [--concurrency 8]
    .venv/bin/python tools/bench/endpoint.py --no-cpu --vllm-segments 20000     # GPU machine
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from humpback.stages.augment import AugmentConfig, backward_requests, run_augment
from humpback.core.config import EngineConfig, GenerationConfig
from humpback.stages.prepare import run_prepare
from humpback.engines import make_engine
from humpback.core.models import resolve
from humpback.stages.prepare.quickstart import build_quickstart_corpus
from humpback.core.records import read_rows, write_parquet

DATATROVE_H100_TOK_S = {"default settings": 28_400, "tuned": 45_500}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_transformers_serve(model_dir: str, tmp: Path, continuous_batching: bool) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    (tmp / "hub").mkdir(exist_ok=True)
    argv = [str(Path(sys.executable).parent / "transformers"), "serve", model_dir, "--host", "127.0.0.1", "--port",
            str(port), "--device", "cpu", "--dtype", "float32"]
    if continuous_batching:
        # without a bound the paged KV cache takes a share of all free RAM (14 GB on a 24 GB box, OOM-killed);
        # 512 blocks x 32 tokens hold 16k tokens (~0.75 GB in float32 for SmolLM2-135M)
        argv += ["--continuous-batching", "--cb-block-size", "32", "--cb-num-blocks", "512",
                 "--cb-max-batch-tokens", "2048"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hub")}
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited:\n{(tmp / 'serve.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("transformers serve did not start")


def segments_for(tmp: Path, n: int) -> list[dict]:
    build_quickstart_corpus(tmp / "corpus.jsonl")
    run_prepare([str(tmp / "corpus.jsonl")], tmp / "prepared", overrides={"progress": False})
    rows = read_rows(tmp / "prepared" / "segments")
    # repeat the corpus under new ids when more segments are asked for than it has
    return [{**rows[i % len(rows)], "segment_id": f"{rows[i % len(rows)]['segment_id']}-{i}"} for i in range(n)]


def cpu_comparison(args, segments: list[dict], tmp: Path) -> None:
    model_dir = resolve(args.model).path
    cfg = AugmentConfig(generation=GenerationConfig(max_tokens=args.max_tokens))
    reqs = [backward_requests(s["segment_id"], s["text"], cfg) for s in segments]
    n = len(reqs)

    local = make_engine(args.model, EngineConfig(dtype="float32", progress=False))
    t0 = time.perf_counter()
    res_local = local.generate(reqs)
    t_local = time.perf_counter() - t0
    tok_local = sum(sum(r.completion_tokens) for r in res_local)
    del local

    proc, url = start_transformers_serve(model_dir, tmp, args.continuous_batching)
    try:
        engine = make_engine(model_dir, EngineConfig(kind="endpoint", progress=False, endpoint={
            "base_url": url, "cache": False, "max_concurrency": args.concurrency}))
        engine.generate(reqs[:1])  # first request pays for lazy set-up inside the server
        t0 = time.perf_counter()
        res_ep = engine.generate(reqs)
        t_ep = time.perf_counter() - t0
        tok_ep = sum(sum(r.completion_tokens) for r in res_ep)
        engine.close()
    except Exception:
        print((tmp / "serve.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        proc.kill()
        proc.wait()
    mode = "continuous batching" if args.continuous_batching else "one request at a time"
    print(f"model={args.model} segments={n} max_tokens={args.max_tokens} concurrency={args.concurrency} "
          f"(transformers serve: {mode}, float32, CPU)")
    print(f"in-process transformers: {n / t_local:.3f} segments/s, {tok_local / t_local:.1f} output tok/s "
          f"({t_local:.1f}s)")
    print(f"endpoint:                {n / t_ep:.3f} segments/s, {tok_ep / t_ep:.1f} output tok/s ({t_ep:.1f}s)")
    print(f"ratio endpoint / in-process (segments/s): {t_local / t_ep:.2f}")


def vllm_run(args, segments: list[dict], tmp: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None or shutil.which("nvidia-smi") is None:
        print("vllm: skipped (needs vLLM and an NVIDIA GPU)")
        return
    write_parquet(segments, tmp / "segments" / "00000.parquet", "segment")
    engine = EngineConfig(kind="vllm", progress=False, vllm={
        "model_max_context": 4096, "max_concurrent_generations": args.vllm_concurrency,
        "records_per_chunk": 5000, "server_args": {"gpu-memory-utilization": 0.9}})
    cfg = AugmentConfig(generation=GenerationConfig(max_tokens=args.max_tokens), engine=engine,
                        filters={"request_patterns": []})
    t0 = time.perf_counter()
    stats = run_augment(str(tmp / "segments"), args.model, str(tmp / "vllm-aug"), cfg)
    wall = time.perf_counter() - t0
    e = stats["engine"]
    tok_s = e["completion_tokens"] / e["inference_time"]
    print(f"vllm via InferenceRunner: {len(segments)} segments, {e['completion_tokens']} output tokens in "
          f"{e['inference_time']:.1f}s of requests ({wall:.1f}s wall, server start included): {tok_s:,.0f} tok/s; "
          f"{(e['prompt_tokens'] + e['completion_tokens']) / e['inference_time']:,.0f} tok/s prompt+output")
    for label, ref in DATATROVE_H100_TOK_S.items():
        print(f"  vs datatrove's per-H100 baseline ({label}, {ref:,} tok/s): {tok_s / ref:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--segments", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--continuous-batching", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=True, help="the CPU comparison")
    ap.add_argument("--vllm-segments", type=int, default=0, help="also run the vLLM measurement (GPU)")
    ap.add_argument("--vllm-concurrency", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        segments = segments_for(tmp, max(args.segments, args.vllm_segments))
        if args.cpu:
            cpu_comparison(args, segments[: args.segments], tmp)
        if args.vllm_segments:
            vllm_run(args, segments[: args.vllm_segments], tmp)


if __name__ == "__main__":
    main()
