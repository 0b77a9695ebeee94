"""The Engine interface over the OpenAI HTTP protocol, independent of how requests travel.

Two transports use it: ``EndpointEngine`` (httpx to any OpenAI-compatible server, with its own cache,
retries and budget) and the bridge inside datatrove's InferenceRunner (``vllm_engine``), where datatrove owns
the server, the retries and the request cache. Both build the same payloads and read the same responses, so
a model scores the same whichever way its requests went.

Log-probabilities use the legacy ``/v1/completions`` API: the next-token top-k list for single-token choices,
and ``echo`` with token-id prompts for continuations (exact token boundaries; the recipe lm-evaluation-harness
uses against vLLM).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from .base import (
    ContinuationScore,
    Engine,
    EngineCapabilityError,
    GenerationRequest,
    GenerationResult,
)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def sample_seed(seed: int | None, sample: int) -> int | None:
    """One seed per sample of a request. Servers sample one completion per request here (several accept no
    ``n``), and 31 bits is what every server tried accepts as a seed."""
    if seed is None:
        return None
    return (int(seed) * 1_000_003 + sample * 7919 + 17) % (2**31 - 1)


def _finish(raw: str | None) -> str:
    return "length" if raw in ("length", "max_tokens") else "stop"


async def gather_or_cancel(coros: Iterable[Awaitable]) -> list:
    """asyncio.gather that cancels the remaining requests as soon as one fails."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _Progress:
    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        self.start = time.perf_counter()
        self.tokens = 0
        from ..core import console

        if enabled and total > 0 and not console.in_stage():  # a quiet stage's meter is its live line
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="req", leave=False, dynamic_ncols=True)

    def update(self, tokens: int = 0) -> None:
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(1)
            if self.tokens:
                el = max(time.perf_counter() - self.start, 1e-9)
                self.bar.set_postfix(tok_s=f"{self.tokens / el:.1f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def top_logprobs_of(response: dict, where: str) -> dict[str, float]:
    """The next-token candidates of a one-token completion: {token text: logprob}."""
    lp = (response.get("choices") or [{}])[0].get("logprobs")
    tops = (lp or {}).get("top_logprobs")
    if not tops or not isinstance(tops[0], dict):
        raise EngineCapabilityError(f"{where}: the response carries no top log-probabilities")
    return {str(k): float(v) for k, v in tops[0].items()}


def echoed_logprobs(response: dict, where: str) -> list[float | None]:
    lp = (response.get("choices") or [{}])[0].get("logprobs")
    values = (lp or {}).get("token_logprobs")
    if not isinstance(values, list):
        raise EngineCapabilityError(f"{where}: the response carries no prompt log-probabilities")
    return values


class OpenAICompatEngine(Engine):
    """Generation and scoring through OpenAI-style requests; subclasses provide ``_post`` and ``_run``."""

    def __init__(self, model: str, *, tokenizer: str | None = None, chat_template: str = "server",
                 top_logprobs: int = 20, progress: bool = False, token_prompts: bool = True,
                 echo_logprobs: bool = True, shared_tokenizer=None, tokenizer_lock=None) -> None:
        super().__init__(model)
        self.tokenizer_ref = tokenizer
        self.chat_template = chat_template
        self.top_logprobs = top_logprobs
        self.progress = progress
        # whether the server takes prompts as token ids, and whether its echoed log-probabilities can be trusted
        self.token_prompts = token_prompts
        self.echo_logprobs = echo_logprobs
        self.counters: Counter = Counter()
        # engines made per document (InferenceRunner rollouts) share one loaded tokenizer and its lock
        self._tokenizer = shared_tokenizer
        self._tok_lock = tokenizer_lock or threading.Lock()

    # ------------------------------------------------------------------ transport (subclasses)
    async def _post(self, path: str, payload: dict[str, Any], sample: int = 0) -> dict[str, Any]:
        raise NotImplementedError

    def _run(self, coro):
        raise NotImplementedError

    # ------------------------------------------------------------------ local tokenizer
    @property
    def tokenizer(self):
        with self._tok_lock:
            if self._tokenizer is None:
                from ..core.models import ModelResolutionError, load_tokenizer, resolve

                ref = self.tokenizer_ref or self.model_ref
                try:
                    self._tokenizer = load_tokenizer(resolve(ref))
                except (ModelResolutionError, OSError, ValueError) as e:
                    raise EngineCapabilityError(
                        f"no local tokenizer for '{ref}' ({e}); chat templates rendered here and token-id prompts "
                        "need one: set engine.endpoint.tokenizer to a local folder, alias or HF id of the served "
                        "model") from None
            return self._tokenizer

    def encode(self, text: str) -> list[int]:
        tok = self.tokenizer
        with self._tok_lock:  # a fast tokenizer shared by threads fails with "Already borrowed"
            return list(tok(text, add_special_tokens=False)["input_ids"])

    def _start_id(self) -> int:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def format_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        from ..core.prompts import apply_chat_template

        tok = self.tokenizer
        with self._tok_lock:
            return apply_chat_template(tok, messages, add_generation_prompt=add_generation_prompt)

    @property
    def num_parameters(self) -> int | None:
        """Parameter count from the local copy's safetensors headers (no weights loaded), when there is one;
        the scorer's `auto` uses it."""
        from ..core.models import ModelResolutionError, resolve

        try:
            resolved = resolve(self.tokenizer_ref or self.model_ref)
        except ModelResolutionError:
            return None
        return count_parameters(resolved.path)

    # ------------------------------------------------------------------ payloads
    def _generation_payload(self, r: GenerationRequest, sample: int) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {"model": self.model_ref, "max_tokens": r.max_tokens,
                                   "temperature": r.temperature, "top_p": r.top_p}
        seed = sample_seed(r.seed, sample)
        if seed is not None:
            payload["seed"] = seed
        if r.top_k is not None:
            payload["top_k"] = r.top_k
        if r.stop:
            payload["stop"] = list(r.stop)
        if r.messages is not None and self.chat_template == "server":
            payload["messages"] = r.messages
            return CHAT, payload
        payload["prompt"] = r.prompt if r.prompt is not None else self.format_chat(r.messages)
        return COMPLETIONS, payload

    def _prompt_field(self, text: str):
        if self.token_prompts:
            return self.encode(text) or [self._start_id()]
        return text

    # ------------------------------------------------------------------ async operations
    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        calls = [(i, j, *self._generation_payload(r, j)) for i, r in enumerate(requests) for j in range(r.n)]
        progress = _Progress(len(calls), self.progress, "generate")

        async def one(path: str, payload: dict, sample: int):
            resp = await self._post(path, payload, sample)
            choice = resp["choices"][0]
            text = (choice.get("message") or {}).get("content") if path == CHAT else choice.get("text")
            usage = resp.get("usage") or {}
            progress.update(int(usage.get("completion_tokens") or 0))
            return (text or "", _finish(choice.get("finish_reason")), int(usage.get("prompt_tokens") or 0),
                    int(usage.get("completion_tokens") or 0))

        try:
            outs = await gather_or_cancel(one(path, payload, j) for _, j, path, payload in calls)
        finally:
            progress.close()
        results = [GenerationResult([], [], 0, [], id=r.id) for r in requests]
        for (i, _, _, _), (text, finish, p_tok, c_tok) in zip(calls, outs):
            res = results[i]
            res.texts.append(text)
            res.finish_reasons.append(finish)
            res.completion_tokens.append(c_tok)
            res.prompt_tokens = max(res.prompt_tokens, p_tok)
        return results

    async def achoice_logprobs(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        choice_ids = self.choice_token_ids(choices) if self.token_prompts and self.echo_logprobs else None
        progress = _Progress(len(prompts), self.progress, "choice_logprobs")

        async def one(prompt: str) -> list[float]:
            field = self._prompt_field(prompt)
            resp = await self._post(COMPLETIONS, {"model": self.model_ref, "prompt": field, "max_tokens": 1,
                                                  "temperature": 0.0, "logprobs": self.top_logprobs})
            top = top_logprobs_of(resp, f"{self.model_ref}: choice_logprobs")
            out: list[float | None] = [top.get(c) for c in choices]
            for k, value in enumerate(out):
                if value is not None:
                    continue
                if choice_ids is not None:  # outside the top-k: score the choice token itself
                    ids = list(field) + [choice_ids[k]]
                    echo = await self._post(COMPLETIONS, {"model": self.model_ref, "prompt": ids, "max_tokens": 1,
                                                          "temperature": 0.0, "logprobs": 1, "echo": True})
                    out[k] = float(echoed_logprobs(echo, f"{self.model_ref}: choice_logprobs")[len(field)])
                    self.counters["choice_logprobs_echoed"] += 1
                else:
                    # no trustworthy way to ask for it: the k-th best value bounds it from above
                    out[k] = min(top.values())
                    self.counters["choice_logprobs_upper_bound"] += 1
            progress.update()
            return out  # type: ignore[return-value]

        try:
            return await gather_or_cancel(one(p) for p in prompts)
        finally:
            progress.close()

    async def acontinuation_logprobs(self, prompts: Sequence[str],
                                     continuations: Sequence[str]) -> list[ContinuationScore]:
        if len(prompts) != len(continuations):
            raise ValueError("prompts and continuations must have the same length")
        progress = _Progress(len(prompts), self.progress, "continuation_logprobs")

        async def one(prompt: str, cont: str) -> ContinuationScore:
            # tokenized apart, like the transformers engine, so the scored tokens are exactly the continuation's
            p_ids = self.encode(prompt) or [self._start_id()]
            c_ids = self.encode(cont)
            if not c_ids:
                progress.update()
                return ContinuationScore([])
            resp = await self._post(COMPLETIONS, {"model": self.model_ref, "prompt": p_ids + c_ids, "max_tokens": 1,
                                                  "temperature": 0.0, "logprobs": 1, "echo": True})
            values = echoed_logprobs(resp, f"{self.model_ref}: continuation_logprobs")
            got = values[len(p_ids): len(p_ids) + len(c_ids)]
            if len(got) != len(c_ids) or any(v is None for v in got):
                raise EngineCapabilityError(
                    f"{self.model_ref}: continuation_logprobs: the server echoed {len(values)} log-probabilities "
                    f"for a {len(p_ids) + len(c_ids)}-token prompt")
            progress.update()
            return ContinuationScore([float(v) for v in got])

        try:
            return await gather_or_cancel(one(p, c) for p, c in zip(prompts, continuations))
        finally:
            progress.close()

    # ------------------------------------------------------------------ sync interface
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return self._run(self.agenerate(list(requests)))

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        from .base import CHOICE_LOGPROBS

        self.require(CHOICE_LOGPROBS)
        return self._run(self.achoice_logprobs(list(prompts), list(choices)))

    def continuation_logprobs(self, prompts: Sequence[str],
                              continuations: Sequence[str]) -> list[ContinuationScore]:
        from .base import CONTINUATION_LOGPROBS

        self.require(CONTINUATION_LOGPROBS)
        return self._run(self.acontinuation_logprobs(list(prompts), list(continuations)))


def count_parameters(folder: str) -> int | None:
    """Sum of tensor sizes in a model folder's safetensors headers (reads only the headers)."""
    import json
    import struct
    from pathlib import Path

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            size = 1
            for d in meta["shape"]:
                size *= d
            total += size
    return total
