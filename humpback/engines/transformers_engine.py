"""In-process back-end on transformers + torch (the CPU default; also one GPU).

Generation runs its own decode loop instead of ``model.generate`` because ``generate`` keeps every row
of a batch alive until the longest one finishes. Here sequences are queued shortest-prompt first, a
finished sequence leaves the batch at once and its slot is refilled from the queue (continuous
batching over a left-padded KV cache). Each sequence samples from its own seeded generator, so its
output does not depend on which other sequences shared its batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from ..core.config import EngineConfig
from ..core.hardware import cpu_dtype
from ..core.models import ResolvedModel, load_causal_lm, load_tokenizer, resolve
from ..core.prompts import apply_chat_template
from .base import (
    CHOICE_LOGPROBS,
    CONTINUATION_LOGPROBS,
    GENERATE,
    ContinuationScore,
    Engine,
    GenerationRequest,
    GenerationResult,
)

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


_NUCLEUS_SHORTLIST = 512


def _seed_for(request_seed: Optional[int], request_index: int, sample_index: int) -> int:
    base = request_seed if request_seed is not None else request_index
    return (base * 1_000_003 + sample_index * 7919 + 17) % (2**63 - 1)


@dataclass
class _Seq:
    req: int
    sample: int
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: Optional[int]
    stop: list[str]
    generator: Optional[torch.Generator]
    out: list[int] = field(default_factory=list)
    next_pos: int = 0
    finish: Optional[str] = None
    text: Optional[str] = None


class _Progress:
    """tqdm over finished sequences with output tokens/s in the postfix."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.start = time.perf_counter()
        self.tokens = 0
        self.bar = None
        from ..core import console

        if enabled and total > 0 and not console.in_stage():  # a quiet stage's meter is its live line
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="seq", leave=False, dynamic_ncols=True)

    def update(self, finished: int, tokens: int) -> None:
        self.tokens += tokens
        if self.bar is not None:
            if finished:
                self.bar.update(finished)
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix(tok_s=f"{self.tokens / elapsed:.1f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TransformersEngine(Engine):
    capabilities = frozenset({GENERATE, CHOICE_LOGPROBS, CONTINUATION_LOGPROBS})

    def __init__(self, model: str | ResolvedModel | None = None, config: EngineConfig | None = None,
                 _model=None, _tokenizer=None, *, run_dir: str | os.PathLike | None = None) -> None:
        # run_dir is accepted so that make_engine makes every engine alike; this one keeps no request cache
        self.config = config or EngineConfig()
        resolved = model if isinstance(model, ResolvedModel) else resolve(model)
        super().__init__(resolved.reference)
        self.resolved = resolved
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        name = cpu_dtype(self.config.dtype) if self.device.type == "cpu" else self.config.dtype
        dtype = None if name == "auto" else _DTYPES[name]
        self.tokenizer = _tokenizer or load_tokenizer(resolved)
        self.model = _model if _model is not None else load_causal_lm(resolved, dtype=dtype, device=str(self.device))
        if (_model is None and name == "auto" and self.device.type == "cpu" and self.model.dtype == torch.bfloat16
                and cpu_dtype("bfloat16") == "float32"):  # auto took a bf16 checkpoint's own dtype
            self.model = self.model.float()
        self.model.eval()
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]

    # ------------------------------------------------------------------ helpers
    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id):
            if value is None:
                continue
            ids.extend(value if isinstance(value, (list, tuple)) else [value])
        # ChatML models end turns with <|im_end|>; stop there even when config names another EOS.
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id and im_end >= 0:
            ids.append(im_end)
        return sorted(set(ids))

    def format_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return apply_chat_template(self.tokenizer, messages, add_generation_prompt=add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        text = self.format_chat(request.messages) if request.messages is not None else request.prompt
        ids = self.encode(text)
        if not ids:
            ids = [self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos_ids[0]]
        return ids

    def _forward(self, input_ids, attention_mask, position_ids, cache=None):
        with torch.inference_mode():
            return self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                position_ids=position_ids.to(self.device),
                past_key_values=cache,
                use_cache=cache is not None or True,
            )

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        seqs: list[_Seq] = []
        prompt_lens: list[int] = []
        for i, r in enumerate(requests):
            ids = self._prompt_ids(r)
            prompt_lens.append(len(ids))
            for j in range(r.n):
                gen = None
                if r.temperature > 0:
                    gen = torch.Generator(device="cpu")
                    gen.manual_seed(_seed_for(r.seed, i, j))
                seqs.append(_Seq(i, j, ids, r.max_tokens, r.temperature, r.top_p, r.top_k, list(r.stop), gen))
        queue = deque(sorted(seqs, key=lambda s: len(s.prompt_ids)))
        progress = _Progress(len(seqs), self.config.progress, "generate")
        try:
            self._run_continuous(queue, progress)
        finally:
            progress.close()
        results = []
        for i, r in enumerate(requests):
            mine = sorted((s for s in seqs if s.req == i), key=lambda s: s.sample)
            results.append(
                GenerationResult(
                    texts=[s.text for s in mine],
                    finish_reasons=[s.finish for s in mine],
                    prompt_tokens=prompt_lens[i],
                    completion_tokens=[len(s.out) for s in mine],
                    id=r.id,
                )
            )
        return results

    def _sample(self, logits: torch.Tensor, seqs: list[_Seq]) -> list[int]:
        """Next token per row; each row uses its own generator so batching never changes the draw."""
        logits = logits.float()
        greedy = logits.argmax(dim=-1).tolist()
        out = []
        for row, s in enumerate(seqs):
            if s.temperature <= 0:
                out.append(greedy[row])
                continue
            row_logits = logits[row] / s.temperature
            if s.top_k is not None and s.top_k < row_logits.numel():
                kth = torch.topk(row_logits, s.top_k).values[-1]
                row_logits = row_logits.masked_fill(row_logits < kth, float("-inf"))
            probs = torch.softmax(row_logits, dim=-1)
            if s.top_p < 1.0:
                # The nucleus is almost always within the few hundred likeliest tokens: sorting those instead of
                # the whole vocabulary made sampling ~3x cheaper for SmolLM2 (49k tokens); the full sort stays
                # for the rare flat distribution whose nucleus is wider.
                sorted_probs, idx = torch.topk(probs, min(_NUCLEUS_SHORTLIST, probs.numel()))
                if float(sorted_probs.sum()) < s.top_p:
                    sorted_probs, idx = torch.sort(probs, descending=True)
                cum = torch.cumsum(sorted_probs, dim=-1)
                # keep the smallest prefix whose mass reaches top_p (the first token always stays)
                drop = (cum - sorted_probs) >= s.top_p
                sorted_probs = sorted_probs.masked_fill(drop, 0.0)
                choice = torch.multinomial(sorted_probs, 1, generator=s.generator)
                out.append(int(idx[choice]))
            else:
                out.append(int(torch.multinomial(probs, 1, generator=s.generator)))
        return out

    def _check_finished(self, s: _Seq, token: int) -> bool:
        if token in self.eos_ids:
            s.finish = "stop"
        else:
            s.out.append(token)
            if s.stop:
                text = self.tokenizer.decode(s.out, skip_special_tokens=True)
                hits = [text.find(st) for st in s.stop if st and st in text]
                if hits:
                    s.text = text[: min(hits)]
                    s.finish = "stop"
            if s.finish is None and len(s.out) >= s.max_tokens:
                s.finish = "length"
        if s.finish is not None and s.text is None:
            s.text = self.tokenizer.decode(s.out, skip_special_tokens=True)
        return s.finish is not None

    def _prefill(self, batch: list[_Seq]):
        # The n samples of a request (best-of-k candidates) share their prompt: it is prefilled once and its
        # KV rows are repeated, which makes sampling k candidates cost little more than one.
        first: dict[tuple[int, ...], int] = {}
        unique: list[_Seq] = []
        for s in batch:
            key = tuple(s.prompt_ids)
            if key not in first:
                first[key] = len(unique)
                unique.append(s)
            s.next_pos = len(s.prompt_ids)
        width = max(len(s.prompt_ids) for s in unique)
        ids = torch.full((len(unique), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(unique), width), dtype=torch.long)
        for row, s in enumerate(unique):
            n = len(s.prompt_ids)
            ids[row, width - n:] = torch.tensor(s.prompt_ids)
            mask[row, width - n:] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        out = self._forward(ids, mask, pos, cache)
        logits, cache = out.logits[:, -1, :], out.past_key_values
        if len(unique) < len(batch):
            rows = torch.tensor([first[tuple(s.prompt_ids)] for s in batch], dtype=torch.long)
            cache.batch_select_indices(rows.to(self.device))
            logits, mask = logits[rows.to(logits.device)], mask[rows]
        return logits, cache, mask

    @staticmethod
    def _layers(cache) -> list:
        return list(getattr(cache, "layers", []))

    def _can_merge(self, cache) -> bool:
        from transformers.cache_utils import DynamicLayer

        layers = self._layers(cache)
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    @staticmethod
    def _left_pad_cache(cache, mask: torch.Tensor, width: int) -> torch.Tensor:
        extra = width - mask.shape[1]
        if extra <= 0:
            return mask
        for layer in cache.layers:
            k, v = layer.keys, layer.values
            layer.keys = torch.cat([k.new_zeros(k.shape[0], k.shape[1], extra, k.shape[3]), k], dim=2)
            layer.values = torch.cat([v.new_zeros(v.shape[0], v.shape[1], extra, v.shape[3]), v], dim=2)
        return torch.cat([mask.new_zeros(mask.shape[0], extra), mask], dim=1)

    def _merge(self, cache, mask, new_cache, new_mask):
        width = max(mask.shape[1], new_mask.shape[1])
        mask = self._left_pad_cache(cache, mask, width)
        new_mask = self._left_pad_cache(new_cache, new_mask, width)
        for layer, new_layer in zip(cache.layers, new_cache.layers):
            layer.keys = torch.cat([layer.keys, new_layer.keys], dim=0)
            layer.values = torch.cat([layer.values, new_layer.values], dim=0)
        return cache, torch.cat([mask, new_mask], dim=0)

    @staticmethod
    def _trim_left(cache, mask: torch.Tensor) -> torch.Tensor:
        """Drop leading cache columns that every remaining row has masked out."""
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else 0
        if start > 0:
            for layer in cache.layers:
                layer.keys = layer.keys[:, :, start:]
                layer.values = layer.values[:, :, start:]
            mask = mask[:, start:]
        return mask

    @staticmethod
    def _prefill_groups(batch: list[_Seq], max_waste: float = 1.15) -> list[list[_Seq]]:
        """Split a refill into groups of similar prompt length: prefill is compute-bound, so padding a
        short prompt to a long one wastes real work, while padding the KV cache on merge costs nothing."""
        batch = sorted(batch, key=lambda s: len(s.prompt_ids))
        groups: list[list[_Seq]] = []
        cur: list[_Seq] = []
        total = 0
        for s in batch:
            n = len(s.prompt_ids)
            if cur and n * (len(cur) + 1) > max_waste * (total + n):
                groups.append(cur)
                cur, total = [], 0
            cur.append(s)
            total += n
        if cur:
            groups.append(cur)
        return groups

    def _take_batch(self, queue: deque, slots: int, budget_tokens: int) -> list[_Seq]:
        batch: list[_Seq] = []
        while queue and len(batch) < slots:
            nxt = queue[0]
            width = max([len(nxt.prompt_ids)] + [len(s.prompt_ids) for s in batch])
            if batch and width * (len(batch) + 1) > budget_tokens:
                break
            batch.append(queue.popleft())
        return batch

    def _run_continuous(self, queue: deque, progress: _Progress) -> None:
        cfg = self.config
        active: list[_Seq] = []
        cache = None
        mask = None
        next_tokens: list[int] = []
        while queue or active:
            free = cfg.batch_size - len(active)
            # Refill in chunks so prefill calls stay reasonably large; always refill an empty batch.
            if queue and (not active or free >= max(1, cfg.batch_size // 4)) and (
                cache is None or self._can_merge(cache)
            ):
                width_now = mask.shape[1] if mask is not None else 0
                budget = max(cfg.max_batch_tokens - width_now * len(active), 1)
                batch = self._take_batch(queue, free, budget)
                if batch:
                    n_old = len(active)
                    for group in self._prefill_groups(batch):
                        logits, new_cache, new_mask = self._prefill(group)
                        tokens = self._sample(logits, group)
                        if cache is None:
                            cache, mask = new_cache, new_mask
                        else:
                            cache, mask = self._merge(cache, mask, new_cache, new_mask)
                        active.extend(group)
                        next_tokens.extend(tokens)
                    # only the new rows' first tokens are unrecorded: the old rows' pending tokens were
                    # recorded by the previous _retire, and recording them again duplicated a token per refill
                    cache, mask, active, next_tokens = self._retire(cache, mask, active, next_tokens, progress,
                                                                    first_new=n_old)
                    continue
            if not active:
                break
            ids = torch.tensor(next_tokens, dtype=torch.long).unsqueeze(1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            pos = torch.tensor([s.next_pos for s in active], dtype=torch.long).unsqueeze(1)
            out = self._forward(ids, mask, pos, cache)
            cache = out.past_key_values
            for s in active:
                s.next_pos += 1
            next_tokens = self._sample(out.logits[:, -1, :], active)
            cache, mask, active, next_tokens = self._retire(cache, mask, active, next_tokens, progress)
            if not active:
                cache, mask = None, None

    def _retire(self, cache, mask, active, next_tokens, progress, first_new: int = 0):
        """Record each row's new token (rows from ``first_new`` on); drop finished rows from the batch and cache."""
        keep: list[int] = []
        for row, (s, tok) in enumerate(zip(active, next_tokens)):
            if row < first_new or not self._check_finished(s, tok):
                keep.append(row)
        finished = len(active) - len(keep)
        progress.update(finished, len(active) - first_new)
        if finished == 0:
            return cache, mask, active, next_tokens
        if not keep:
            return None, None, [], []
        idx = torch.tensor(keep, dtype=torch.long)
        cache.batch_select_indices(idx.to(self.device))
        mask = mask[idx]
        active = [active[i] for i in keep]
        next_tokens = [next_tokens[i] for i in keep]
        if self._can_merge(cache):
            mask = self._trim_left(cache, mask)
        return cache, mask, active, next_tokens

    # ------------------------------------------------------------------ scoring
    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Index batches, shortest first, bounded by batch size and padded tokens."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches, cur, width = [], [], 0
        for i in order:
            w = max(width, lengths[i])
            if cur and (len(cur) >= self.config.batch_size or w * (len(cur) + 1) > self.config.max_batch_tokens):
                batches.append(cur)
                cur, w = [], lengths[i]
            cur.append(i)
            width = w
        if cur:
            batches.append(cur)
        return batches

    def _last_hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.get_decoder()(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                           use_cache=False).last_hidden_state

    def _lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(hidden)

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        choice_ids = torch.tensor(self.choice_token_ids(choices), dtype=torch.long)
        encoded = [self.encode(p) or [self.pad_id] for p in prompts]
        out: list[Optional[list[float]]] = [None] * len(prompts)
        progress = _Progress(len(prompts), self.config.progress, "choice_logprobs")
        for batch in self._batches([len(e) for e in encoded]):
            seqs = [encoded[i] for i in batch]
            logits = self._last_logits_shared_prefix(seqs)
            if logits is None:
                logits = self._last_logits_left_padded(seqs)
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(batch):
                out[i] = logp[row, choice_ids].tolist()
            progress.update(len(batch), sum(len(s) for s in seqs))
        progress.close()
        return out  # type: ignore[return-value]

    def _last_logits_left_padded(self, seqs: list[list[int]]) -> torch.Tensor:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s):] = torch.tensor(s)
            mask[row, width - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            return self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                              position_ids=pos.to(self.device), use_cache=False, logits_to_keep=1).logits[:, -1, :]

    def _last_logits_shared_prefix(self, seqs: list[list[int]], min_prefix: int = 32) -> Optional[torch.Tensor]:
        """Scoring prompts built from one template share a long token prefix (chat frame + rubric text):
        run it once, share its KV cache across the batch, and run only the differing suffixes."""
        if len(seqs) < 2:
            return None
        common = min(len(s) for s in seqs) - 1  # every row keeps at least one token of its own
        first = seqs[0]
        for s in seqs[1:]:
            n = 0
            while n < common and s[n] == first[n]:
                n += 1
            common = n
        if common < min_prefix:
            return None
        from transformers import DynamicCache

        with torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            self.model(input_ids=torch.tensor([first[:common]], device=self.device), past_key_values=cache,
                       use_cache=True)
            if not self._can_merge(cache):
                return None
            for layer in cache.layers:
                layer.keys = layer.keys.expand(len(seqs), -1, -1, -1).contiguous()
                layer.values = layer.values.expand(len(seqs), -1, -1, -1).contiguous()
            width = max(len(s) - common for s in seqs)
            ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), common + width), dtype=torch.long)
            mask[:, :common] = 1
            for row, s in enumerate(seqs):  # suffixes right-padded, so positions simply continue the prefix
                ids[row, : len(s) - common] = torch.tensor(s[common:])
                mask[row, common: len(s)] = 1
            pos = (common + torch.arange(width)).unsqueeze(0).expand(len(seqs), -1)
            hidden = self.model.get_decoder()(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), position_ids=pos.to(self.device),
                past_key_values=cache, use_cache=True).last_hidden_state
            last = torch.tensor([len(s) - common - 1 for s in seqs], device=hidden.device)
            return self._lm_head(hidden[torch.arange(len(seqs), device=hidden.device), last])

    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[ContinuationScore]:
        if len(prompts) != len(continuations):
            raise ValueError("prompts and continuations must have the same length")
        start_id = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos_ids[0]
        # Prompt and continuation are tokenized apart so the scored tokens are exactly the continuation's.
        pairs = []
        for p, c in zip(prompts, continuations):
            p_ids = self.encode(p) or [start_id]
            pairs.append((p_ids, self.encode(c)))
        out: list[Optional[ContinuationScore]] = [None] * len(pairs)
        progress = _Progress(len(pairs), self.config.progress, "continuation_logprobs")
        for batch in self._batches([len(p) + len(c) for p, c in pairs]):
            width = max(len(pairs[i][0]) + len(pairs[i][1]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = pairs[i][0] + pairs[i][1]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            hidden = self._last_hidden(ids, mask)
            for row, i in enumerate(batch):
                p_ids, c_ids = pairs[i]
                if not c_ids:
                    out[i] = ContinuationScore([])
                    continue
                start = len(p_ids)
                # token t is predicted by the output at position t-1; only those rows go through the
                # LM head, so memory stays O(tokens x vocab) for the continuation alone.
                positions = torch.arange(start - 1, start - 1 + len(c_ids), device=hidden.device)
                with torch.inference_mode():
                    logits = self._lm_head(hidden[row, positions])
                logp = torch.log_softmax(logits.float(), dim=-1).cpu()
                vals = logp[torch.arange(len(c_ids)), torch.tensor(c_ids)]
                out[i] = ContinuationScore(vals.tolist())
            progress.update(len(batch), sum(len(pairs[i][0]) + len(pairs[i][1]) for i in batch))
        progress.close()
        return out  # type: ignore[return-value]
