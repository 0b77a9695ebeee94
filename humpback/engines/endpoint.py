"""``endpoint`` engine: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, ``transformers serve``).

Requests go out asynchronously, at most ``max_concurrency`` at a time, from an event loop on a private thread
(so the engine also works when its caller already runs an event loop). A request that meets a 429, a 5xx, a
timeout or a refused connection is retried with exponential backoff, long enough to ride out a server restart.
Every finished response is stored in a request cache keyed by the request payload, so a rerun (or a resumed
datatrove task) replays finished requests without sending them. A run's tokens are counted in a ledger and
the run stops with a clear error once its budget is used.

Log-probability support differs between servers (``transformers serve`` has none, llama.cpp's server takes
no token-id prompts), so before the first scoring call a probe of a few tiny requests finds out what the
server can do, and an operation it cannot do is refused before any work starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from pathlib import Path
from typing import Any

from ..core.config import EngineConfig
from .base import CHOICE_LOGPROBS, CONTINUATION_LOGPROBS, GENERATE, EngineCapabilityError
from .openai_compat import COMPLETIONS, OpenAICompatEngine, echoed_logprobs, top_logprobs_of
from .request_cache import RequestCache, TokenLedger, request_key

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429}
PROBE_PROMPT = "The capital of France is"


class EndpointError(RuntimeError):
    """The server refused a request, or stayed unreachable through every retry."""


def normalize_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url.removesuffix("/v1")


class _LoopThread:
    """An event loop on a daemon thread; synchronous callers wait for coroutines submitted to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="humpback-endpoint", daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class EndpointEngine(OpenAICompatEngine):
    def __init__(self, model: str | None, config: EngineConfig | None = None,
                 run_dir: str | os.PathLike | None = None) -> None:
        config = config or EngineConfig(kind="endpoint")
        ep = config.endpoint
        if not model:
            raise EngineCapabilityError("engine kind 'endpoint' needs a model: the name the server serves it under")
        if not ep.base_url:
            raise EngineCapabilityError(
                "engine kind 'endpoint' needs engine.endpoint.base_url (e.g. http://127.0.0.1:8000) of an "
                "OpenAI-compatible server")
        super().__init__(model, tokenizer=ep.tokenizer, chat_template=ep.chat_template,
                         top_logprobs=ep.top_logprobs, progress=config.progress)
        self.config = config
        self.ep = ep
        self.base_url = normalize_base_url(ep.base_url)
        self.headers = {}
        if ep.api_key_env:
            key = os.environ.get(ep.api_key_env)
            if not key:
                raise EngineCapabilityError(f"engine.endpoint.api_key_env: environment variable {ep.api_key_env} "
                                            "is not set")
            self.headers["Authorization"] = f"Bearer {key}"
        from ..core.models import cache_dir

        cache_root = Path(ep.cache_dir) if ep.cache_dir else (
            Path(run_dir) / "requests" if run_dir else cache_dir() / "requests")
        self.cache = RequestCache(cache_root / "requests.sqlite") if ep.cache else None
        self.ledger = TokenLedger(Path(run_dir) / "token-ledger.sqlite" if run_dir else None, ep.token_budget)
        self.capabilities = frozenset({GENERATE})
        self._probe_reasons: dict[str, str | None] | None = None
        self._loop: _LoopThread | None = None
        self._client = None
        self._sem: asyncio.Semaphore | None = None

    # ------------------------------------------------------------------ transport
    def _run(self, coro):
        if self._loop is None:
            self._loop = _LoopThread()
        return self._loop.run(coro)

    def _http(self):
        if self._client is None:
            import httpx

            n = self.ep.max_concurrency
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.ep.timeout_s, connect=min(self.ep.timeout_s, 30.0)),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n), headers=self.headers)
            self._sem = asyncio.Semaphore(n)
        return self._client

    async def _send(self, path: str, payload: dict[str, Any], retries: int | None = None,
                    budgeted: bool = False) -> dict[str, Any]:
        """POST with retries on transient failures; returns the decoded JSON of a 200 answer. A budgeted
        request checks the token ledger when it gets its slot, so requests that queued while the budget ran
        out are never sent (at most max_concurrency requests in flight can overshoot it)."""
        import httpx

        client = self._http()
        url = self.base_url + path
        retries = self.ep.max_retries if retries is None else retries
        last = ""
        for attempt in range(retries + 1):
            wait_at_least = 0.0
            try:
                async with self._sem:
                    if budgeted and attempt == 0:
                        self.ledger.check()
                    r = await client.post(url, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code == 200:
                    return r.json()
                body = r.text[:500]
                if r.status_code not in RETRY_STATUS and r.status_code < 500:
                    raise EndpointError(f"POST {url}: HTTP {r.status_code}: {body}")
                last = f"HTTP {r.status_code}: {body}"
                try:
                    wait_at_least = float(r.headers.get("retry-after", 0))
                except ValueError:
                    pass
            if attempt == retries:
                break
            wait = max(wait_at_least, min(self.ep.max_backoff_s, self.ep.backoff_s * 2**attempt) *
                       (0.5 + random.random() / 2))
            self.counters["retries"] += 1
            log.info("endpoint: %s failed (%s); retry %d/%d in %.1fs", url, last, attempt + 1, retries, wait)
            await asyncio.sleep(wait)
        self.counters["failed_requests"] += 1
        raise EndpointError(f"POST {url}: gave up after {retries + 1} attempts; last error: {last}")

    async def _post(self, path: str, payload: dict[str, Any], sample: int = 0) -> dict[str, Any]:
        key = request_key(path, payload, sample) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.counters["cache_hits"] += 1
                return hit
        resp = await self._send(path, payload, budgeted=True)
        usage = resp.get("usage") or {}
        tokens = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
        self.counters["requests_sent"] += 1
        self.counters["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        self.counters["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        self.ledger.add(tokens)
        if key is not None:
            self.cache.put(key, resp, tokens)
        return resp

    # ------------------------------------------------------------------ capabilities
    def require(self, *operations: str) -> None:
        if {CHOICE_LOGPROBS, CONTINUATION_LOGPROBS} & set(operations):
            self._probe()
        for op in operations:
            if op not in self.capabilities:
                reason = (self._probe_reasons or {}).get(op) or "not supported"
                raise EngineCapabilityError(
                    f"the server at {self.base_url} (model '{self.model_ref}') cannot do {op}: {reason}. Use a "
                    "server that returns log-probabilities for token-id prompts (vLLM, SGLang), or the "
                    "transformers engine")

    def _probe(self) -> None:
        if self._probe_reasons is None:
            self._probe_reasons = self._run(self._aprobe())
            ok = {op for op, why in self._probe_reasons.items() if why is None}
            self.capabilities = frozenset({GENERATE} | ok)
            log.info("endpoint %s: log-probability probe: %s", self.base_url, self._probe_reasons)

    async def _aprobe(self) -> dict[str, str | None]:
        """Find out which log-probability operations the server really supports (a few one-token requests)."""
        where = f"POST {self.base_url}{COMPLETIONS}"
        model = self.model_ref
        self.counters["probe_requests"] += 1
        try:
            first = await self._send(COMPLETIONS, {"model": model, "prompt": PROBE_PROMPT, "max_tokens": 1,
                                                   "temperature": 0.0, "logprobs": 5}, retries=2)
            top_logprobs_of(first, where)
        except (EndpointError, EngineCapabilityError, KeyError, IndexError, TypeError, ValueError) as e:
            why = f"it answers no log-probabilities ({e})" if isinstance(e, EndpointError) else \
                "it ignores the `logprobs` parameter of /v1/completions (no log-probabilities in its answer)"
            return {CHOICE_LOGPROBS: why, CONTINUATION_LOGPROBS: why}
        reasons: dict[str, str | None] = {CHOICE_LOGPROBS: None, CONTINUATION_LOGPROBS: None}
        try:
            ids = self.encode(PROBE_PROMPT)
        except EngineCapabilityError as e:
            self.token_prompts = self.echo_logprobs = False
            reasons[CONTINUATION_LOGPROBS] = str(e)
            return reasons
        try:
            self.counters["probe_requests"] += 1
            echo = await self._send(COMPLETIONS, {"model": model, "prompt": ids, "max_tokens": 1,
                                                  "temperature": 0.0, "logprobs": 1, "echo": True}, retries=2)
            values = echoed_logprobs(echo, where)
            if len(values) < len(ids) or any(v is None for v in values[1:len(ids)]):
                raise EngineCapabilityError(f"{where}: echo=true returned {len(values)} log-probabilities for a "
                                            f"{len(ids)}-token prompt")
        except EndpointError as e:
            self.token_prompts = self.echo_logprobs = False
            reasons[CONTINUATION_LOGPROBS] = f"it does not take token-id prompts ({e})"
            return reasons
        except (EngineCapabilityError, KeyError, IndexError, TypeError) as e:
            self.echo_logprobs = False
            reasons[CONTINUATION_LOGPROBS] = f"it does not return prompt log-probabilities with echo ({e})"
            return reasons
        # the echoed log-probability of a token must equal the one the server gave when it generated it
        generated = echo["choices"][0]["logprobs"]
        token_text = (generated.get("tokens") or [None])[-1]
        expected = generated["token_logprobs"][-1]
        follow = self.encode(token_text) if token_text else []
        if len(follow) == 1 and expected is not None:
            self.counters["probe_requests"] += 1
            again = await self._send(COMPLETIONS, {"model": model, "prompt": ids + follow, "max_tokens": 1,
                                                   "temperature": 0.0, "logprobs": 1, "echo": True}, retries=2)
            got = echoed_logprobs(again, where)
            if len(got) <= len(ids) or got[len(ids)] is None or abs(float(got[len(ids)]) - float(expected)) > 0.05:
                self.echo_logprobs = False
                reasons[CONTINUATION_LOGPROBS] = (
                    f"its echoed prompt log-probabilities are misaligned (token {token_text!r}: generated with "
                    f"{float(expected):.4f}, echoed as {got[len(ids)] if len(got) > len(ids) else None})")
        return reasons

    def close(self) -> None:
        if self._loop is not None:
            async def shutdown():
                if self._client is not None:
                    await self._client.aclose()
                if self.cache is not None:
                    self.cache.close()
                self.ledger.close()

            try:
                self._loop.run(shutdown())
            finally:
                self._loop.close()
                self._loop = None
                self._client = None
