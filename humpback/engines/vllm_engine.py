"""``vllm`` engine: model servers that datatrove's InferenceRunner starts inside every task.

On a GPU cluster each datatrove task (a Slurm array job or a Ray task) starts its own vLLM (or SGLang) server,
sends the stage's requests to it with bounded concurrency, checkpoints finished documents in chunks and keeps a
request cache, so a killed task resumes where it stopped. The augment and curate stages plug their tasks into it
(``model_step.TaskRollout`` of ``augment.AugmentTask``, ``curate.ScoreTask``); the requests are built and read by
the same ``OpenAICompatEngine`` code as the ``endpoint`` engine, through ``CallbackEngine`` below.

``server: endpoint`` points the same machinery at an external OpenAI-compatible server, which is how the path is
tested on a CPU machine. For the small synchronous jobs of a stage (curate's self-check) ``make_engine`` returns
a ``VLLMEngine``, which starts one server through datatrove's server classes and talks to it as an endpoint.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import math
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.config import EngineConfig
from .base import CHOICE_LOGPROBS, CONTINUATION_LOGPROBS, GENERATE, Engine, EngineCapabilityError
from .openai_compat import CHAT, OpenAICompatEngine, count_parameters

ADAPTER_NAME = "humpback-adapter"  # the served name of a LoRA adapter loaded next to its base model
_LOGPROBS_KEY = "humpback_logprobs"
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def served_model(model: str, server: str) -> tuple[str, dict[str, Any]]:
    """What a vLLM/SGLang server is started on (a local folder, or an HF id), plus the server flags a LoRA
    adapter folder needs (vLLM loads the adapter next to its base model)."""
    if server == "endpoint":
        return model, {}
    from ..core.models import ModelResolutionError, resolve

    try:
        resolved = resolve(model, cached_only=False)  # the server fetches an HF id itself
    except ModelResolutionError as e:
        raise EngineCapabilityError(str(e)) from None
    if resolved.kind != "adapter":
        return resolved.path, {}
    if server != "vllm":
        raise EngineCapabilityError(f"{model}: a LoRA adapter folder needs server 'vllm'; merge it for {server}")
    rank = int(json.loads((Path(resolved.path) / "adapter_config.json").read_text()).get("r", 16))
    return resolved.base, {"enable-lora": True, "lora-modules": f"{ADAPTER_NAME}={resolved.path}",
                           "max-lora-rank": next((r for r in _LORA_RANKS if r >= rank), rank)}


def check_server_installed(config: EngineConfig) -> None:
    server = config.vllm.server
    if server in ("vllm", "sglang") and importlib.util.find_spec(server) is None:
        raise EngineCapabilityError(
            f"engine kind 'vllm' with server '{server}' needs the {server} package where the tasks run "
            f"(a GPU machine): pip install -e '.[gpu]' (see docs/scale_out.md); server 'endpoint' uses a running "
            "OpenAI-compatible server instead")


def inference_config(model: str, config: EngineConfig, *, use_chat: bool, work_dir: str | os.PathLike | None,
                     requests_per_document: int = 1):
    """datatrove's InferenceConfig for a stage, from the engine config."""
    from datatrove.pipeline.inference.run_inference import InferenceConfig

    vc, ep = config.vllm, config.endpoint
    name, lora_flags = served_model(model, vc.server)
    endpoint_url = None
    if vc.server == "endpoint":
        from .endpoint import normalize_base_url

        if not ep.base_url:
            raise EngineCapabilityError("engine.vllm.server 'endpoint' needs engine.endpoint.base_url")
        endpoint_url = normalize_base_url(ep.base_url)
    if ep.api_key_env and not os.environ.get(ep.api_key_env):
        raise EngineCapabilityError(f"engine.endpoint.api_key_env: environment variable {ep.api_key_env} is not set")
    delay = 5.0
    log_folder = vc.server_log_folder or (str(Path(work_dir) / "server-logs") if work_dir else None)
    return InferenceConfig(
        server_type=vc.server, model_name_or_path=name, model_max_context=vc.model_max_context, use_chat=use_chat,
        # never the key itself: datatrove writes this config into logs/executor.json (and Slurm's executor.pik);
        # the runner reads the key from the environment when it starts the server (api_key_from_env)
        endpoint_url=endpoint_url, api_key=None, metric_interval=vc.metric_interval_s, tp=vc.tp, dp=vc.dp,
        pp=vc.pp, max_concurrent_generations=vc.max_concurrent_generations,
        max_concurrent_documents=vc.max_concurrent_documents or max(
            1, vc.max_concurrent_generations // max(1, requests_per_document)),
        request_timeout=vc.request_timeout_s, model_kwargs={**lora_flags, **vc.server_args} or None,
        server_log_folder=log_folder, server_ready_max_attempts=max(1, math.ceil(vc.server_start_timeout_s / delay)),
        server_ready_delay_sec=delay)


def _runner_class():
    from datatrove.pipeline.inference.run_inference import InferenceRunner

    class LogprobInferenceRunner(InferenceRunner):
        """InferenceRunner whose results keep the server's log-probabilities.

        datatrove hands a rollout only the text, finish reason and usage of a response; the log-probabilities
        the scorers need ride along inside ``usage``, which datatrove also stores in its request cache, so a
        resumed task replays them too. Requests for a LoRA adapter are addressed to the adapter's name."""

        api_key_env: str | None = None  # the name of the variable holding the endpoint's API key

        def _init_server(self, rank: int):
            server = self._server_with_key(rank)
            inner = server.make_request
            adapter = bool(self.config.model_kwargs and "lora-modules" in self.config.model_kwargs)

            async def make_request(payload: dict) -> dict:
                if adapter:
                    payload = {**payload, "model": ADAPTER_NAME}
                response = await inner(payload)
                usage = dict(response.get("usage") or {})
                choice = (response.get("choices") or [{}])[0]
                if choice.get("logprobs") is not None:
                    usage[_LOGPROBS_KEY] = choice["logprobs"]
                response["usage"] = usage
                return response

            server.make_request = make_request
            return server

        def _server_with_key(self, rank: int):
            """The server, given the API key read from the environment now (inside the task); the step's own
            config, which is serialised, never holds it."""
            if not self.api_key_env:
                return super()._init_server(rank)
            key = os.environ.get(self.api_key_env)
            if not key:
                raise EngineCapabilityError(f"engine.endpoint.api_key_env: environment variable {self.api_key_env} "
                                            "is not set where the task runs")
            config = self.config
            self.config = dataclasses.replace(config, api_key=key)
            try:
                return super()._init_server(rank)
            finally:
                self.config = config

    return LogprobInferenceRunner


def inference_step(rollout, model: str, config: EngineConfig, work_dir: str | os.PathLike, *, use_chat: bool,
                   shared_context=None, requests_per_document: int = 1):
    """The InferenceRunner step of a stage: results go to ``work_dir/rollouts`` as JSONL, one file per chunk,
    checkpoints (and datatrove's request cache) to ``work_dir/checkpoints``."""
    from datatrove.pipeline.writers import JsonlWriter

    work = Path(work_dir)
    writer = JsonlWriter(str(work / "rollouts"), output_filename="${rank}_chunk_${chunk_index}.jsonl",
                         compression=None)
    runner = _runner_class()(
        rollout_fn=rollout, config=inference_config(model, config, use_chat=use_chat, work_dir=work,
                                                    requests_per_document=requests_per_document),
        output_writer=writer, shared_context=shared_context, checkpoints_local_dir=str(work / "checkpoints"),
        records_per_chunk=config.vllm.records_per_chunk)
    runner.api_key_env = config.endpoint.api_key_env
    return runner


def iter_rollouts(folder: str | os.PathLike, rank: int = 0, world_size: int = 1):
    """The documents an InferenceRunner step wrote, as dicts (text, id, metadata with rollout_results)."""
    import orjson

    files = sorted(Path(folder).glob("*.jsonl")) if Path(folder).is_dir() else []
    for f in files[rank::world_size]:
        with open(f, "rb") as fh:
            for line in fh:
                if line.strip():
                    yield orjson.loads(line)


def count_rollouts(folder: str | os.PathLike) -> int:
    return sum(1 for _ in iter_rollouts(folder))


def inference_stats(logging_dir: str | os.PathLike) -> dict[str, float]:
    """Request and token counters of an InferenceRunner step, summed over its tasks' datatrove stats, plus
    the documents its reader read and the seconds spent on requests (summed over tasks)."""
    wanted = {"prompt_tokens", "completion_tokens", "successful_requests", "documents_processed",
              "failed_documents", "requests", "skipped_bad_requests", "inference_time"}
    totals: dict[str, float] = {}

    def add(key: str, value) -> None:
        total = value.get("total", 0) if isinstance(value, dict) else value
        totals[key] = totals.get(key, 0) + total

    stats_dir = Path(logging_dir) / "stats"
    for f in sorted(stats_dir.glob("*.json")) if stats_dir.is_dir() else []:
        for step in json.loads(f.read_text()):
            name = step.get("name", "")
            if name.endswith("rows reader") and "read" in step.get("stats", {}):
                add("documents_read", step["stats"]["read"])
            if "Inference" in name:
                for key, value in step.get("stats", {}).items():
                    if key in wanted:
                        add(key, value)
    return {k: (round(v, 3) if k == "inference_time" else int(v)) for k, v in totals.items()}


class CallbackEngine(OpenAICompatEngine):
    """The engine a rollout hands to stage code: requests go through InferenceRunner's ``generate`` callback.

    Coroutines (``agenerate`` …) run on the runner's event loop; the synchronous methods are for code running
    in a worker thread (the scorers), which waits while the loop does the requests."""

    capabilities = frozenset({GENERATE, CHOICE_LOGPROBS, CONTINUATION_LOGPROBS})

    def __init__(self, model: str, generate, loop: asyncio.AbstractEventLoop, *, use_chat: bool,
                 tokenizer: str | None = None, shared_tokenizer=None, tokenizer_lock=None,
                 token_prompts: bool = True, echo_logprobs: bool = True) -> None:
        super().__init__(model, tokenizer=tokenizer, chat_template="server" if use_chat else "local",
                         shared_tokenizer=shared_tokenizer, tokenizer_lock=tokenizer_lock,
                         token_prompts=token_prompts, echo_logprobs=echo_logprobs)
        self.generate_callback, self.loop, self.use_chat = generate, loop, use_chat

    async def _post(self, path: str, payload: dict[str, Any], sample: int = 0) -> dict[str, Any]:
        if (path == CHAT) != self.use_chat:
            raise EngineCapabilityError(
                f"this InferenceRunner step sends every request to {'chat' if self.use_chat else 'text'} "
                f"completions, not to {path}")
        result = await self.generate_callback(dict(payload))
        usage = dict(result.usage or {})
        logprobs = usage.pop(_LOGPROBS_KEY, None)
        choice: dict[str, Any] = {"finish_reason": result.finish_reason}
        if self.use_chat:
            choice["message"] = {"role": "assistant", "content": result.text}
        else:
            choice["text"] = result.text
            choice["logprobs"] = logprobs
        return {"choices": [choice], "usage": usage}

    def _run(self, coro):
        if threading.current_thread() is threading.main_thread() and self.loop.is_running():
            raise RuntimeError("CallbackEngine's synchronous methods must be called from a worker thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


@contextmanager
def rollout_context(tokenizer_ref: str | None, threads: int):
    """Shared by a task's rollouts: one tokenizer, its lock, and the threads that run synchronous stage code."""
    from concurrent.futures import ThreadPoolExecutor

    tokenizer = None
    if tokenizer_ref:
        from ..core.models import load_tokenizer, resolve

        tokenizer = load_tokenizer(resolve(tokenizer_ref, cached_only=False))
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="humpback-rollout")
    try:
        yield {"pool": pool, "tokenizer": tokenizer, "tokenizer_lock": threading.Lock()}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def tokenizer_ref_for(model: str, config: EngineConfig) -> str | None:
    """The local reference a stage loads its tokenizer from (None when there is no local copy)."""
    if config.endpoint.tokenizer:
        return config.endpoint.tokenizer
    from ..core.models import ModelResolutionError, resolve

    try:
        resolved = resolve(model, cached_only=False)
    except ModelResolutionError:
        return None
    if resolved.kind == "hf" and config.vllm.server == "endpoint":
        return None
    return model


class VLLMEngine(Engine):
    """One server started through datatrove's server classes, used as an endpoint (started on first use)."""

    capabilities = frozenset({GENERATE, CHOICE_LOGPROBS, CONTINUATION_LOGPROBS})

    def __init__(self, model: str, config: EngineConfig, run_dir: str | os.PathLike | None = None) -> None:
        super().__init__(model)
        check_server_installed(config)
        self.config, self.run_dir = config, run_dir
        self.inference = inference_config(model, config, use_chat=True, work_dir=run_dir)
        self._endpoint = None
        self._server = None
        self._loop = None
        self._tokenizer = None

    @property
    def num_parameters(self) -> int | None:
        from ..core.models import ModelResolutionError, resolve

        try:
            return count_parameters(resolve(self.model_ref).path)
        except ModelResolutionError:
            return None

    def _ensure(self):
        if self._endpoint is None:
            from .endpoint import EndpointEngine, _LoopThread

            self._loop = _LoopThread()
            self._server = self._loop.run(self._start())
            lora = self.inference.model_kwargs and "lora-modules" in self.inference.model_kwargs
            ep = self.config.endpoint.model_copy(update={
                "base_url": self._server.get_base_url(),
                "tokenizer": self.config.endpoint.tokenizer or self.model_ref})
            self._endpoint = EndpointEngine(ADAPTER_NAME if lora else self.inference.model_name_or_path,
                                            self.config.model_copy(update={"kind": "endpoint", "endpoint": ep}),
                                            run_dir=self.run_dir)
        return self._endpoint

    async def _start(self):
        from datatrove.pipeline.inference.servers import SGLangServer, VLLMServer

        server = {"vllm": VLLMServer, "sglang": SGLangServer}[self.config.vllm.server](self.inference, 0)
        await server.__aenter__()
        await server._server_ready  # datatrove sets it when the server answers, or fails it with the reason
        return server

    def generate(self, requests):
        return self._ensure().generate(requests)

    def choice_logprobs(self, prompts, choices):
        return self._ensure().choice_logprobs(prompts, choices)

    def continuation_logprobs(self, prompts, continuations):
        return self._ensure().continuation_logprobs(prompts, continuations)

    def format_chat(self, messages, add_generation_prompt: bool = True) -> str:
        if self._tokenizer is None:  # rendering needs no server
            from ..core.models import load_tokenizer, resolve

            self._tokenizer = load_tokenizer(resolve(self.config.endpoint.tokenizer or self.model_ref))
        from ..core.prompts import apply_chat_template

        return apply_chat_template(self._tokenizer, messages, add_generation_prompt=add_generation_prompt)

    def close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            try:
                self._loop.run(self._server.__aexit__(None, None, None))
            finally:
                self._loop.close()
            self._endpoint = self._server = self._loop = None


def make_vllm_engine(model: str | None, config: EngineConfig, run_dir: str | os.PathLike | None = None) -> Engine:
    if not model:
        raise EngineCapabilityError("engine kind 'vllm' needs a model")
    if config.vllm.server == "endpoint":
        from .endpoint import EndpointEngine

        return EndpointEngine(model, config.model_copy(update={"kind": "endpoint"}), run_dir=run_dir)
    return VLLMEngine(model, config, run_dir=run_dir)
