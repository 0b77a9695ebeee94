"""Curation scorers: rate (instruction, output) pairs with the forward model of the previous round.

- ``rubric``: the 1-5 rubric read from next-token probabilities of "1".."5" (renormalised) — there is
  no text to parse, so there are no parse failures; the distribution and expected score are kept.
- ``rubric-generate``: the paper's way, reasoning then ``Score: N``; strict parsing, and an
  unparseable or out-of-range answer gets a null score with the reason kept, never silently dropped.
- ``pmi``: mean per-token log p(output | instruction) - log p(output | empty request) under the model
  (the IFD / superfiltering idea); useful even for tiny models, mapped to 1-5 after all pairs are scored.
- ``humpback``: the default below 1B parameters. A fixed linear blend of five likelihood features from the
  same model: forward PMI per token and summed over the output (relevance, counted more for longer
  answers), reverse PMI log p(instruction | output) - log p(instruction) through the backward prompt
  (does the output say what was asked), the log-probability that the assistant turn ends where the
  output ends (complete, not cut off), and the output's own log-likelihood (fluent text, not page
  furniture); plus the cosine of the instruction's and the output's all-MiniLM-L6-v2 embeddings (the
  shipped embedder), which a 135M model's likelihoods cannot replace for topic match. Mapped to 1-5 like
  ``pmi``. The weights and how they were fitted: docs/eval.md.
"""

from __future__ import annotations

import math
import random
import re
from typing import Literal, Optional, Sequence

from pydantic import Field, field_validator

from ..core.config import StrictModel
from ..engines.base import CHOICE_LOGPROBS, CONTINUATION_LOGPROBS, GENERATE, Engine, GenerationRequest
from ..core.prompts import render
from ..core.registry import Registry

DIGITS = ["1", "2", "3", "4", "5"]
_SCORE_LINE = re.compile(r"^\W*score\W*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*5)?\s*\**\s*\.?\s*$", re.I)


class ScorerConfig(StrictModel):
    kind: str = "auto"  # auto | a registered scorer (built in: rubric | rubric-generate | pmi | humpback)
    template: str = "curate_rubric"
    system: Optional[str] = None
    answer_prefix: str = "Score: "  # rubric: the assistant turn starts with this, the digit comes next
    max_rationale_tokens: int = Field(256, ge=8)
    temperature: float = Field(0.0, ge=0)  # rubric-generate: greedy by default for reproducible scores
    max_output_chars: int = Field(6000, ge=100)  # longer outputs are cut before scoring (noted in rationale)
    pmi_mapping: Literal["quantile", "thresholds"] = "quantile"
    # quantile: cut points over this run's PMI values (score 5 = top 10% by default);
    # thresholds: absolute PMI values (nats/token) separating scores 1|2|3|4|5
    pmi_cuts: list[float] = Field(default_factory=lambda: [0.3, 0.55, 0.75, 0.9])
    auto_params_threshold: float = 1e9  # auto: models below this many parameters use humpback, others rubric

    @field_validator("kind")
    @classmethod
    def _registered(cls, v: str) -> str:
        return SCORERS.check(v, extra=("auto",))


def resolve_kind(cfg: ScorerConfig, engine: Engine) -> str:
    if cfg.kind != "auto":
        return cfg.kind
    n = getattr(engine, "num_parameters", None)
    if n is None and hasattr(engine, "model"):
        n = sum(p.numel() for p in engine.model.parameters())
    return auto_kind(n, cfg)


def auto_kind(num_parameters: Optional[int], cfg: ScorerConfig) -> str:
    """What ``auto`` means for a model of this size (None: unknown, taken as large)."""
    return "humpback" if num_parameters is not None and num_parameters < cfg.auto_params_threshold else "rubric"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


def parse_generated_score(text: str) -> tuple[Optional[int], Optional[str]]:
    """(score, None) when the last non-empty line is ``Score: N`` with N in 1..5, else (None, reason)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None, "empty_output"
    m = _SCORE_LINE.match(lines[-1].strip())
    if not m:
        return None, "unparseable"
    value = float(m.group(1))
    if not value.is_integer() or not 1 <= value <= 5:
        return None, "out_of_range"
    return int(value), None


# The built-ins below register with @register_scorer; one in a module of its own is a line here, imported when
# a config names it: SCORERS.register("kind", "humpback.module:Class") (docs/extending.md).
SCORERS: Registry[type["Scorer"]] = Registry("scorer", "scorer.kind")


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Make a Scorer subclass available by its ``kind`` (a class decorator)."""
    return SCORERS.register(cls.kind, cls)


class Scorer:
    kind: str
    needs: tuple[str, ...] = ()
    # True: the raw value (in ``pmi``) is mapped to 1-5 over the whole run (quantiles or thresholds); False:
    # ``score`` is already 1-5
    mapped: bool = False
    value_name: str = "score"  # what ``continuous`` returns, as eval scorer's table names it
    # what besides its config decides its scores (fitted weights): part of the keys of cached scores, so that a
    # refit is never answered from scores cached before it
    revision: str = ""

    def __init__(self, engine: Engine, cfg: ScorerConfig) -> None:
        self.engine, self.cfg = engine, cfg
        engine.require(*self.needs)

    def score(self, pairs: Sequence[dict]) -> list[dict]:
        """Score rows (without pair_id/scorer/model) for each pair, in order."""
        raise NotImplementedError

    @staticmethod
    def continuous(row: dict) -> Optional[float]:
        """The value used for AUROC and ranking."""
        raise NotImplementedError

    def _messages(self, pair: dict, generate: bool) -> list[dict]:
        from ..core.prompts import chat_messages

        user = render(self.cfg.template, instruction=pair["instruction"],
                      output=_cut(pair["output"], self.cfg.max_output_chars), generate=generate)
        return chat_messages(user, system=self.cfg.system)


@register_scorer
class RubricScorer(Scorer):
    kind = "rubric"
    needs = (CHOICE_LOGPROBS,)
    value_name = "expected score"

    def score(self, pairs):
        prompts = [self.engine.format_chat(self._messages(p, False)) + self.cfg.answer_prefix for p in pairs]
        rows = []
        for logps in self.engine.choice_logprobs(prompts, DIGITS):
            m = max(logps)
            weights = [math.exp(lp - m) for lp in logps]
            total = sum(weights)
            probs = [w / total for w in weights]
            rows.append({
                "score": float(1 + max(range(5), key=lambda i: probs[i])),
                "score_probs": probs,
                "expected_score": sum((i + 1) * p for i, p in enumerate(probs)),
                "pmi": None,
                "rationale": f"p(digit mass)={sum(math.exp(lp) for lp in logps):.3f}",
            })
        return rows

    @staticmethod
    def continuous(row):
        return row["expected_score"]


@register_scorer
class RubricGenerateScorer(Scorer):
    kind = "rubric-generate"
    needs = (GENERATE,)
    value_name = "parsed score"

    def score(self, pairs):
        reqs = [GenerationRequest(messages=self._messages(p, True), temperature=self.cfg.temperature,
                                  top_p=1.0, max_tokens=self.cfg.max_rationale_tokens, seed=i)
                for i, p in enumerate(pairs)]
        rows = []
        for res in self.engine.generate(reqs):
            text = res.text
            score, problem = parse_generated_score(text)
            rows.append({
                "score": float(score) if score is not None else None,
                "score_probs": None,
                "expected_score": float(score) if score is not None else None,
                "pmi": None,
                "rationale": text if problem is None else f"[{problem}] {text}",
            })
        return rows

    @staticmethod
    def continuous(row):
        return row["score"]


def conditional_logprobs(engine: Engine, outputs: Sequence[str], instructions: Sequence[Sequence[str]],
                         system: Optional[str] = None, max_output_chars: int = 6000):
    """For each output: (log p(output | empty request), [log p(output | instruction) for its instructions]).

    The unconditional side keeps the chat frame with an empty request, so a difference isolates what the
    instruction itself explains about the output; it is computed once per distinct output, however many
    instructions that output is scored with (best-of-k candidates, shuffled negatives).
    """
    from ..core.prompts import chat_messages

    fmt = engine.format_chat
    uncond = fmt(chat_messages("", system=system))
    cut = [_cut(o, max_output_chars) for o in outputs]
    prompts, conts, slots = [], [], {}
    for text in dict.fromkeys(cut):
        slots[(None, text)] = len(prompts)
        prompts.append(uncond)
        conts.append(text)
    owners = []
    for i, (text, instrs) in enumerate(zip(cut, instructions)):
        for ins in instrs:
            key = (ins, text)
            if key not in slots:
                slots[key] = len(prompts)
                prompts.append(fmt(chat_messages(ins, system=system)))
                conts.append(text)
            owners.append((i, slots[key]))
    scores = engine.continuation_logprobs(prompts, conts) if prompts else []
    out = [(scores[slots[(None, text)]], []) for text in cut]
    for i, slot in owners:
        out[i][1].append(scores[slot])
    return out


def pmi_of(uncond, cond) -> Optional[float]:
    """Mean per-token PMI of an output under an instruction (None when the output has no tokens)."""
    return cond.mean - uncond.mean if cond.n_tokens else None


@register_scorer
class PMIScorer(Scorer):
    kind = "pmi"
    needs = (CONTINUATION_LOGPROBS,)
    mapped = True
    value_name = "pmi (nats/token)"

    def score(self, pairs):
        both = conditional_logprobs(self.engine, [p["output"] for p in pairs], [[p["instruction"]] for p in pairs],
                                    self.cfg.system, self.cfg.max_output_chars)
        rows = []
        for u, [c] in both:
            rows.append({"score": None, "score_probs": None, "expected_score": None, "pmi": pmi_of(u, c),
                         "rationale": f"logp|x={c.mean:.4f} logp={u.mean:.4f} tokens={c.n_tokens}"})
        return rows

    @staticmethod
    def continuous(row):
        return row["pmi"]


def turn_end(engine: Engine) -> str:
    """The text the chat template puts after an assistant message (e.g. ``<|im_end|>``)."""
    from ..core.prompts import chat_messages

    probe = "\u2063PROBE\u2063"
    text = engine.format_chat(chat_messages("x") + [{"role": "assistant", "content": probe}],
                              add_generation_prompt=False)
    tail = text.split(probe, 1)[1]
    stripped = tail.strip()
    if not stripped:
        return ""
    # the marker itself, not the newline or the next turn's header that some templates add after it
    return stripped.split("\n", 1)[0]


# Fitted once by logistic regression (tools/fit_scorer.py) on the dev split of the held-out FAQ sets (80
# real Debian and Python FAQ pairs, 400 typed negatives; never the seed), scored by SmolLM2-135M-Instruct.
# The likelihood features are in nats and similarity is a cosine, so the blend carries over to other models
# without refitting; the test split it was not fitted on is where its AUROCs are reported (docs/eval.md).
HUMPBACK_WEIGHTS = {"pmi": -5.678, "pmi_sqrt": 1.294, "reverse_pmi": 1.274, "end": 0.219, "fluency": 0.731,
                    "similarity": 3.255}
NEUTRAL_END = -3.4  # median end log-probability of real dev answers: used when the output was cut short


def reverse_logprobs(engine: Engine, outputs: Sequence[str], instructions: Sequence[str]):
    """For each pair: (log p(instruction | backward prompt of output), log p(instruction | backward prompt of
    nothing)); the second is computed once per distinct instruction."""
    from .train.data import backward_messages

    fmt = engine.format_chat
    empty = fmt(backward_messages(""))
    prompts, conts, slots = [], [], {}
    for ins in dict.fromkeys(instructions):
        slots[ins] = len(prompts)
        prompts.append(empty)
        conts.append(ins)
    first = len(prompts)
    for out, ins in zip(outputs, instructions):
        prompts.append(fmt(backward_messages(out)))
        conts.append(ins)
    scores = engine.continuation_logprobs(prompts, conts) if prompts else []
    return [(scores[first + i], scores[slots[ins]]) for i, ins in enumerate(instructions)]


@register_scorer
class HumpbackScorer(Scorer):
    kind = "humpback"
    needs = (CONTINUATION_LOGPROBS,)
    mapped = True
    value_name = "blend of likelihood features (nats)"
    revision = ",".join(f"{k}={w}" for k, w in HUMPBACK_WEIGHTS.items()) + f",neutral_end={NEUTRAL_END}"

    def features(self, pairs: Sequence[dict]) -> list[Optional[dict]]:
        """The blend's inputs per pair (None when the output or the instruction has no tokens)."""
        end = turn_end(self.engine)
        limit = self.cfg.max_output_chars
        outputs = [p["output"] for p in pairs]
        # a complete output is scored with the end-of-turn marker after it: its last token is p(end)
        marked = [o + end if end and len(o) <= limit else _cut(o, limit) for o in outputs]
        instrs = [p["instruction"] for p in pairs]
        fmt, system = self.engine.format_chat, self.cfg.system
        from ..core.prompts import chat_messages

        uncond_prompt = fmt(chat_messages("", system=system))
        plain = list(dict.fromkeys(_cut(o, limit) for o in outputs))
        prompts = [uncond_prompt] * len(plain) + [fmt(chat_messages(x, system=system)) for x in instrs]
        scores = self.engine.continuation_logprobs(prompts, plain + marked)
        uncond = dict(zip(plain, scores[:len(plain)]))
        cond = scores[len(plain):]
        rev = reverse_logprobs(self.engine, outputs, instrs)
        from ..evaluate.diversity import embed

        vec_i, vec_o = embed(instrs), embed(outputs)
        rows = []
        for o, m, c, (rc, ru), vi, vo in zip(outputs, marked, cond, rev, vec_i, vec_o):
            u = uncond[_cut(o, limit)]
            ended = end and m.endswith(end) and c.n_tokens > u.n_tokens
            toks = c.token_logprobs[:-1] if ended else c.token_logprobs
            if not toks or not u.n_tokens or not rc.n_tokens:
                rows.append(None)
                continue
            n = len(toks)
            f_sum = sum(toks) - u.sum
            rows.append({"pmi": f_sum / n, "pmi_sqrt": f_sum / math.sqrt(n),
                         "reverse_pmi": (rc.sum - ru.sum) / rc.n_tokens,
                         "end": c.token_logprobs[-1] if ended else NEUTRAL_END, "fluency": u.mean,
                         "similarity": float(vi @ vo), "tokens": n})
        return rows

    def score(self, pairs):
        rows = []
        for f in self.features(pairs):
            value = None if f is None else sum(w * f[k] for k, w in HUMPBACK_WEIGHTS.items())
            rows.append({"score": None, "score_probs": None, "expected_score": None, "pmi": value,
                         "rationale": "no tokens" if f is None else
                         " ".join(f"{k}={f[k]:.4f}" for k in HUMPBACK_WEIGHTS) + f" tokens={f['tokens']}"})
        return rows

    @staticmethod
    def continuous(row):
        return row["pmi"]


def is_mapped(kind: str) -> bool:
    """Whether scorer ``kind``'s raw value is mapped to 1-5 over the run (``Scorer.mapped``)."""
    return SCORERS.get(kind).mapped


def make_scorer(engine: Engine, cfg: ScorerConfig) -> Scorer:
    return SCORERS.get(resolve_kind(cfg, engine))(engine, cfg)


def pmi_to_scores(values: Sequence[Optional[float]], cfg: ScorerConfig) -> tuple[list[Optional[float]], list[float]]:
    """Map raw PMI values to 1-5; returns the scores and the absolute thresholds used."""
    present = sorted(v for v in values if v is not None)
    if cfg.pmi_mapping == "thresholds":
        cuts = list(cfg.pmi_cuts)
    elif present:
        cuts = [present[min(int(q * len(present)), len(present) - 1)] for q in cfg.pmi_cuts]
    else:
        cuts = []
    scores = []
    for v in values:
        if v is None:
            scores.append(None)
        else:
            scores.append(float(1 + sum(v >= c for c in cuts)) if cuts else 3.0)
    return scores, cuts


def shuffled_pairs(pairs: Sequence[dict], seed: int = 0) -> list[dict]:
    """The same pairs with instructions permuted so that no pair keeps its own instruction."""
    n = len(pairs)
    if n < 2:
        return []
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    # a cyclic shift of a random order is a derangement
    perm = {order[i]: order[(i + 1) % n] for i in range(n)}
    return [{**pairs[i], "instruction": pairs[perm[i]]["instruction"]} for i in range(n)]
