"""``humpback eval judge``: AlpacaEval-style pairwise win rate of a model against a baseline, by a judge model.

Both models answer every prompt. The judge sees each pair of answers twice, once in each order, so a judge
that prefers whichever answer comes first cancels out: a prompt scores 1 when the judge prefers the model
in both orders, 0 when it prefers the baseline in both, and 0.5 (a tie, counted half) when the verdict
follows the position. Identical answers are a tie without asking the judge.

The verdict is read, by preference, from the judge's next-token probabilities of "A" and "B" after the
prompt (``resources/prompts/judge_pairwise.jinja``): there is no text to parse, and the probability is kept. A judge
engine that cannot give log-probabilities (e.g. an endpoint without them) generates a short reason and a
last line ``Verdict: A|B`` instead, parsed strictly; an unparseable verdict counts as half for that order
and is reported, never dropped.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..core.config import ConfigError, EngineConfig, GenerationConfig, StrictModel
from ..engines.base import CHOICE_LOGPROBS, GENERATE, EngineCapabilityError, GenerationRequest
from ..core.prompts import chat_messages, render
from ..core.records import write_jsonl
from ..stages.train.data import forward_messages
from .common import (EvalConfig, LazyModel, bootstrap_ci, cached_chunks, fingerprint, fmt_ci, load_items, model_key,
                     model_label, sample_items, write_result)
from .heldout import SYSTEMS, model_tags, parse_systems

log = logging.getLogger("humpback.eval")

CHOICES = ["A", "B"]
_VERDICT = re.compile(r"^\W*(?:verdict|better answer|answer)?\s*[:=]?\s*\**\s*\(?([AB])\)?\s*\**\s*\.?\s*$",
                      re.IGNORECASE)


class JudgeConfig(StrictModel):
    template: str = "judge_pairwise"
    mode: Literal["auto", "logprobs", "generate"] = "auto"  # auto: logprobs when the judge engine can
    system: str | None = None  # the judge's system prompt
    answer_prefix: str = ""  # logprobs: the judge's turn starts with this, then the letter
    max_reason_tokens: int = Field(192, ge=8)  # generate mode
    max_answer_chars: int = Field(4000, ge=100)  # answers are cut to this before judging (noted in the record)
    engine: EngineConfig | None = None  # the judge's engine (e.g. an endpoint); None: the models' engine
    # How the two models answer; greedy by default so a rerun compares the same answers.
    generation: GenerationConfig = GenerationConfig(temperature=0.0, top_p=1.0, max_tokens=256)


def parse_verdict(text: str) -> tuple[str | None, str | None]:
    """("A"|"B", None) when the last non-empty line is a verdict (``Verdict: A``, ``B``), else (None, reason)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None, "empty_output"
    m = _VERDICT.match(lines[-1])
    if not m:
        return None, "unparseable"
    return m.group(1).upper(), None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def evaluate_judge(
    model: str,
    baseline: str,
    judge: str,
    prompts: str | Path,
    output: str | Path,
    system: str = "both",
    sample: int | None = None,
    config: EvalConfig | None = None,
    judge_config: JudgeConfig | None = None,
) -> dict:
    """Win rate of ``model`` over ``baseline`` on ``prompts`` as judged by ``judge``; writes judge.json and
    judgments.jsonl into ``output`` and returns the summary."""
    cfg = config or EvalConfig()
    jcfg = judge_config or JudgeConfig()
    out = Path(output)
    systems = parse_systems(system)
    if len(systems) != 1:
        raise ConfigError(f"--system {system!r}: give one setting (S_a, S_w, both or none) for the answers")
    system = systems[0]
    items = sample_items(load_items(prompts, need_output=False), sample, cfg.seed)
    ids = [it.id for it in items]
    if len(set(ids)) < len(ids):
        ids = [f"{i}:{x}" for i, x in enumerate(ids)]  # repeated ids in the prompt file stay distinct items
    log.warning("eval judge: %d prompts from %s; %s vs %s, judge %s -> %s", len(items), prompts, model, baseline,
                judge, out)

    answers = {}
    for role, ref in (("model", model), ("baseline", baseline)):
        answers[role] = _answers(ref, items, ids, SYSTEMS[system], jcfg, cfg, out, role)

    judgments = _judge_all(judge, items, ids, answers, jcfg, cfg, out)
    summary = _summarise(items, ids, answers, judgments, cfg)
    summary.update({
        "command": "eval judge", "model": model, "baseline": baseline, "judge": judge, "prompts": str(prompts),
        "system": system, "generation": jcfg.generation.model_dump(), "template": jcfg.template,
    })
    out.mkdir(parents=True, exist_ok=True)
    write_result({k: v for k, v in summary.items() if k != "rows"}, out / "judge.json")
    write_jsonl(summary.pop("rows"), out / "judgments.jsonl")
    summary["files"] = {"summary": str(out / "judge.json"), "judgments": str(out / "judgments.jsonl")}
    return summary


def _answers(ref, items, ids, tag, jcfg: JudgeConfig, cfg: EvalConfig, out: Path, role: str) -> list[str]:
    seed_tag, web_tag = model_tags(ref)
    messages = [forward_messages(it.instruction, tag, seed_tag, web_tag) for it in items]
    gen = jcfg.generation
    key = fingerprint([model_key(ref), gen.model_dump(), messages[0][:-1], ids, cfg.engine.dtype])

    def generator(engine):
        engine.require(GENERATE)
        return engine

    with LazyModel(ref, cfg, generator) as engine:
        def compute(idx):
            reqs = [GenerationRequest(messages=messages[i], temperature=gen.temperature, top_p=gen.top_p,
                                      top_k=gen.top_k, max_tokens=gen.max_tokens, stop=list(gen.stop),
                                      seed=gen.seed + i) for i in idx]
            return [r.text.strip() for r in engine().generate(reqs)]

        return cached_chunks(out / ".work" / f"answers-{key}", ids, compute, cfg.chunk_size,
                             f"{role} {model_label(ref)} answers")


def _judge_all(judge, items, ids, answers, jcfg: JudgeConfig, cfg: EvalConfig, out: Path) -> list[dict]:
    """Per prompt: the two orders' verdicts ({"verdict", "p_a", "raw"} each), or a tie for equal answers."""
    engine_cfg = cfg.model_copy(update={"engine": jcfg.engine}) if jcfg.engine is not None else cfg
    judge_ids = [f"{i}:{fingerprint([answers['model'][k], answers['baseline'][k]])}" for k, i in enumerate(ids)]
    key = fingerprint([model_key(judge), jcfg.model_dump(exclude={"generation"}), judge_ids,
                       engine_cfg.engine.model_dump()])

    def reader(eng):
        mode = jcfg.mode
        if mode == "auto":
            mode = "logprobs" if _can_read_letters(eng) else "generate"
        eng.require(CHOICE_LOGPROBS if mode == "logprobs" else GENERATE)
        log.info("judge %s reads verdicts by %s", judge, mode)
        return eng, mode

    with LazyModel(judge, engine_cfg, reader) as engine:
        def compute(idx):
            todo = []  # (item index, order, output_a, output_b)
            results: dict[int, dict] = {}
            for i in idx:
                a, b = answers["model"][i], answers["baseline"][i]
                if a.strip() == b.strip():
                    results[i] = {"identical": True, "orders": []}
                    continue
                todo += [(i, 0, a, b), (i, 1, b, a)]
                results[i] = {"identical": False, "orders": [None, None]}
            if todo:
                eng, mode = engine()
                messages = [chat_messages(render(jcfg.template, instruction=items[i].instruction,
                                                 output_a=_cut(a, jcfg.max_answer_chars),
                                                 output_b=_cut(b, jcfg.max_answer_chars),
                                                 generate=mode == "generate"),
                                          system=jcfg.system) for i, _, a, b in todo]
                verdicts = _verdicts(eng, mode, messages, jcfg)
                for (i, order, _, _), v in zip(todo, verdicts):
                    results[i]["orders"][order] = v
            return [results[i] for i in idx]

        return cached_chunks(out / ".work" / f"judge-{key}", judge_ids, compute, max(1, cfg.chunk_size // 2),
                             f"judge {model_label(judge)}")


def _can_read_letters(engine) -> bool:
    """Whether the judge engine can give next-token log-probabilities of "A"/"B" after a locally rendered chat
    prompt (an endpoint finds out by probing its server inside ``require``)."""
    try:
        engine.require(CHOICE_LOGPROBS)
        engine.format_chat([{"role": "user", "content": "?"}])
        if hasattr(engine, "choice_token_ids"):
            engine.choice_token_ids(CHOICES)
        return True
    except (EngineCapabilityError, ValueError):
        return False


def _verdicts(engine, mode: str, messages: list, jcfg: JudgeConfig) -> list[dict]:
    if mode == "logprobs":
        prompts = [engine.format_chat(m) + jcfg.answer_prefix for m in messages]
        out = []
        for lp_a, lp_b in engine.choice_logprobs(prompts, CHOICES):
            m = max(lp_a, lp_b)
            pa = math.exp(lp_a - m) / (math.exp(lp_a - m) + math.exp(lp_b - m))
            out.append({"verdict": "A" if pa > 0.5 else "B" if pa < 0.5 else None, "p_a": pa,
                        "raw": f"p(A)+p(B)={math.exp(lp_a) + math.exp(lp_b):.3f}",
                        "problem": None if pa != 0.5 else "exact_tie"})
        return out
    reqs = [GenerationRequest(messages=m, temperature=0.0, top_p=1.0, max_tokens=jcfg.max_reason_tokens, seed=k)
            for k, m in enumerate(messages)]
    out = []
    for res in engine.generate(reqs):
        verdict, problem = parse_verdict(res.text)
        out.append({"verdict": verdict, "p_a": None, "raw": res.text, "problem": problem})
    return out


def _order_score(v: dict, model_letter: str) -> float:
    if v["verdict"] is None:
        return 0.5
    return 1.0 if v["verdict"] == model_letter else 0.0


def _summarise(items, ids, answers, judgments, cfg: EvalConfig) -> dict:
    scores, prefs, rows = [], [], []
    unparseable: dict[str, int] = {}
    first_position = consistent = judged = identical = 0
    for k, (it, j) in enumerate(zip(items, judgments)):
        row = {"id": ids[k], "instruction": it.instruction, "model_answer": answers["model"][k],
               "baseline_answer": answers["baseline"][k]}
        if j["identical"]:
            score, pref = 0.5, 0.5
            identical += 1
            row["identical"] = True
        else:
            o1, o2 = j["orders"]  # o1: model is A; o2: model is B
            s1, s2 = _order_score(o1, "A"), _order_score(o2, "B")
            score = (s1 + s2) / 2
            judged += 1
            for o in (o1, o2):
                if o["verdict"] is None:
                    unparseable[o["problem"] or "unparseable"] = unparseable.get(o["problem"] or "unparseable", 0) + 1
            if o1["verdict"] and o2["verdict"]:
                first_position += (o1["verdict"] == "A") + (o2["verdict"] == "A")
                consistent += o1["verdict"] != o2["verdict"]
            pref = None
            if o1["p_a"] is not None and o2["p_a"] is not None:
                pref = (o1["p_a"] + (1 - o2["p_a"])) / 2
            row.update({"verdict_model_first": o1["verdict"], "verdict_model_second": o2["verdict"],
                        "p_a_model_first": o1["p_a"], "p_a_model_second": o2["p_a"]})
            if o1["p_a"] is None:
                row.update({"judge_text_model_first": o1["raw"], "judge_text_model_second": o2["raw"]})
        row["score"] = score
        row["preference"] = pref
        scores.append(score)
        prefs.append(pref)
        rows.append(row)
    s = np.array(scores, dtype=float)
    n = len(s)
    win_rate = float(s.mean()) if n else None
    ci = bootstrap_ci(lambda idx: float(s[idx].mean()), n, cfg.bootstrap, cfg.confidence, cfg.seed)
    present = np.array([p for p in prefs if p is not None], dtype=float)
    both_parsed = sum(1 for j in judgments if not j["identical"] and all(o["verdict"] for o in j["orders"]))
    return {
        "n": n, "win_rate": win_rate, "win_rate_ci": ci,
        "wins": int((s > 0.5).sum()), "losses": int((s < 0.5).sum()), "ties": int((s == 0.5).sum()),
        "identical_answers": identical, "judged": judged, "unparseable_verdicts": unparseable,
        "position_consistent": consistent / both_parsed if both_parsed else None,
        "first_position_rate": first_position / (2 * both_parsed) if both_parsed else None,
        "mean_preference": float(present.mean()) if len(present) else None,
        "bootstrap": cfg.bootstrap, "confidence": cfg.confidence, "rows": rows,
    }


def format_judge_summary(summary: dict) -> str:
    lines = [
        (f"{model_label(summary['model'])} vs {model_label(summary['baseline'])} on {summary['n']} prompts from "
         f"{summary['prompts']}, judged by {model_label(summary['judge'])} in both orders"),
        (f"win rate: {fmt_ci(summary['win_rate'], summary['win_rate_ci'])} "
         f"({int(summary['confidence'] * 100)}% bootstrap CI; ties count half)"),
        (f"wins {summary['wins']}, losses {summary['losses']}, ties {summary['ties']} "
         f"(identical answers {summary['identical_answers']})"),
    ]
    if summary["position_consistent"] is not None:
        lines.append(f"judge agrees with itself across orders on {summary['position_consistent']:.0%} of prompts; "
                     f"picks the first answer {summary['first_position_rate']:.0%} of the time")
    if summary["mean_preference"] is not None:
        lines.append(f"mean probability the judge prefers the model: {summary['mean_preference']:.3f}")
    if summary["unparseable_verdicts"]:
        lines.append(f"unparseable verdicts (each counted as half for its order): {summary['unparseable_verdicts']}")
    if "files" in summary:
        lines.append(f"wrote {summary['files']['summary']}, {summary['files']['judgments']}")
    return "\n".join(lines)


__all__ = ["JudgeConfig", "evaluate_judge", "format_judge_summary", "parse_verdict"]
