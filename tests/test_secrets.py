"""An API key named by engine.endpoint.api_key_env reaches the server and nothing else: no file a command writes
(datatrove's executor.json and Slurm pickle, request caches, stats, manifests, logs) and no console output holds
it. The commands run against a small OpenAI-compatible server on the loopback interface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from humpback.core import records

KEY_ENV = "HUMPBACK_TEST_API_KEY"


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers /v1/models, chat and text completions (with or without the /v1 prefix) with a fixed question, and
    records the Authorization header of every request."""

    seen: list[str] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "served", "object": "model", "owned_by": "test"}]})

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        FakeOpenAI.seen.append(self.headers.get("Authorization", ""))
        usage = {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}
        text = "What does this passage explain about the topic?"
        if self.path.endswith("/chat/completions"):
            self._send({"id": "c1", "object": "chat.completion", "created": 0, "model": payload.get("model"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop"}], "usage": usage})
        else:
            self._send({"id": "c2", "object": "text_completion", "created": 0, "model": payload.get("model"),
                        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                        "usage": usage})


@pytest.fixture
def server():
    # 127.0.0.2 (loopback, but not "localhost" to datatrove): its endpoint server then uses the OpenAI client,
    # which is what sends the key; for localhost datatrove sends no key at all
    httpd = ThreadingHTTPServer(("127.0.0.2", 0), FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    FakeOpenAI.seen = []
    yield f"http://127.0.0.2:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _segments(folder: Path) -> Path:
    texts = ["Basil needs six hours of bright light a day and soil that is moist but never wet.",
             "A list comprehension builds a list from an iterable in a single readable expression."]
    rows = [{"segment_id": f"s{i}", "text": t, "heading": "H", "doc_id": f"d{i}", "url": None, "source": "t",
             "char_start": 0, "char_end": len(t), "lang": "en", "lang_score": 1.0} for i, t in enumerate(texts)]
    records.write_parquet(rows, folder / "segments" / "00000.parquet", "segment")
    return folder


def _humpback(args: list[str], tmp: Path, marker: str) -> subprocess.CompletedProcess:
    env = {**os.environ, KEY_ENV: marker, "HUMPBACK_CACHE": str(tmp / "cache")}
    proc = subprocess.run([sys.executable, "-m", "humpback", "-v", *args], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _files_holding(root: Path, marker: str) -> list[Path]:
    needle = marker.encode()
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _config(tmp: Path, name: str, engine: dict, **extra) -> Path:
    cfg = {"generation": {"max_tokens": 8}, "engine": {"progress": False, **engine}, "executor": {"workers": 1},
           "filters": {"request_patterns": [], "reject_patterns": [], "min_chars": 0, "max_copy_overlap": 1.0},
           **extra}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_api_key_reaches_the_server_and_no_file(server, tmp_path, tiny_model_dir):
    marker = f"hb-secret-{uuid.uuid4().hex}"
    segs = _segments(tmp_path / "prepared")
    endpoint = {"base_url": server + "/v1", "api_key_env": KEY_ENV, "tokenizer": tiny_model_dir}
    outputs = []

    # the endpoint engine (humpback's own HTTP client, request cache and token ledger)
    cfg = _config(tmp_path, "endpoint", {"kind": "endpoint", "endpoint": {**endpoint, "max_retries": 0}})
    outputs.append(_humpback(["augment", str(segs), "--model", "served", "-o", str(tmp_path / "a-endpoint"),
                              "--config", str(cfg)], tmp_path, marker))
    assert FakeOpenAI.seen and set(FakeOpenAI.seen) == {f"Bearer {marker}"}
    sent = len(FakeOpenAI.seen)

    # the vllm engine with server: endpoint (datatrove's InferenceRunner; executor.json is written)
    cfg = _config(tmp_path, "vllm", {"kind": "vllm", "endpoint": endpoint,
                                     "vllm": {"server": "endpoint", "records_per_chunk": 2}})
    outputs.append(_humpback(["augment", str(segs), "--model", "served", "-o", str(tmp_path / "a-vllm"),
                              "--config", str(cfg)], tmp_path, marker))
    assert len(FakeOpenAI.seen) > sent and set(FakeOpenAI.seen) == {f"Bearer {marker}"}
    executor_json = list((tmp_path / "a-vllm").rglob("executor.json"))
    assert executor_json, "the InferenceRunner step ran through a datatrove executor"
    assert any('"api_key": null' in p.read_text() for p in executor_json)  # the runner's config, without it

    # the same stage submitted to Slurm (dry run): the pickled executor the nodes would load
    cfg = _config(tmp_path, "slurm", {"kind": "vllm", "endpoint": endpoint, "vllm": {"server": "endpoint"}},
                  executor={"kind": "slurm", "slurm": {"partition": "gpu", "dry_run": True}})
    outputs.append(_humpback(["augment", str(segs), "--model", "served", "-o", str(tmp_path / "a-slurm"),
                              "--config", str(cfg)], tmp_path, marker))
    assert list((tmp_path / "a-slurm").rglob("executor.pik"))

    assert _files_holding(tmp_path, marker) == []
    for proc in outputs:
        assert marker not in proc.stdout + proc.stderr


def test_a_missing_key_variable_is_named_before_any_request(server, tmp_path):
    segs = _segments(tmp_path / "prepared")
    cfg = _config(tmp_path, "vllm", {"kind": "vllm", "endpoint": {"base_url": server, "api_key_env": KEY_ENV},
                                     "vllm": {"server": "endpoint"}})
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    proc = subprocess.run([sys.executable, "-m", "humpback", "augment", str(segs), "--model", "served", "-o",
                           str(tmp_path / "a"), "--config", str(cfg)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: engine.endpoint.api_key_env: environment variable {KEY_ENV} is not set")
    assert FakeOpenAI.seen == []
