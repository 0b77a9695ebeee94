"""The three ReST-EM steps as resumable stage functions: E-step (sample + grade + keep), M-step (fine-tune
the base model on what was kept), held-out evaluation.

Each writes into ``OUT.partial/`` (chunk checkpoints, then the final files assembled in
``OUT.partial/final``) and renames the final folder to ``OUT`` when done, so ``OUT`` either does not exist
or is complete; a finished ``OUT`` makes the call a no-op that returns its recorded stats.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.config import EngineConfig
from ..engines import Engine, make_engine
from ..core.records import read_rows, write_json, write_parquet
from ..stages.train.config import TrainConfig
from .metrics import summarize_eval
from .problems import Problem, read_problems
from .rewards import Reward
from .sampling import SAMPLE_SCHEMA, SamplingPlan, prompt_messages, sample_and_grade

log = logging.getLogger("humpback.rest")

STATS = "stats.json"
SAMPLES = "samples.parquet"
ACCEPTED = "accepted.parquet"
NO_MODEL = "no_model.json"

EngineFactory = Callable[[str, EngineConfig], Engine]


def work_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _finished(out: Path) -> dict[str, Any] | None:
    stats = out / STATS
    if stats.is_file():
        return json.loads(stats.read_text(encoding="utf-8"))
    if out.exists():
        raise FileExistsError(f"{out} exists but holds no {STATS}: not a finished step; remove it to redo the step")
    return None


def _publish(work: Path, out: Path, write: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    final = work / "final"
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True)
    stats = write(final)
    write_json(stats, final / STATS)  # last: a folder with stats.json is complete
    os.replace(final, out)
    shutil.rmtree(work, ignore_errors=True)
    log.info("wrote %s (%s)", out, ", ".join(sorted(f.name for f in out.iterdir())))
    return stats


def _engine(model: str, config: EngineConfig, factory: EngineFactory | None, work: Path) -> Engine:
    if factory is not None:
        return factory(model, config)
    return make_engine(model, config, run_dir=work)  # run_dir: where an endpoint engine keeps its request cache


# ------------------------------------------------------------------------------------------------ E-step


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def select_accepted(rows: Sequence[dict[str, Any]], max_per_problem: int, keep_truncated: bool = False
                    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Correct samples to train on: per problem, in sample order, duplicates removed, at most ``max_per_problem``."""
    counts = {"correct": 0, "truncated_dropped": 0, "duplicates_dropped": 0, "over_cap_dropped": 0}
    kept: list[dict[str, Any]] = []
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["mode"] == "sample":
            by_problem[r["problem_id"]].append(r)
    for samples in by_problem.values():
        seen: set[str] = set()
        n = 0
        for r in sorted(samples, key=lambda s: s["sample"]):
            if r["reward"] < 1.0:
                continue
            counts["correct"] += 1
            if r["finish_reason"] == "length" and not keep_truncated:
                counts["truncated_dropped"] += 1
                continue
            norm = _normalized(r["completion"])
            if not norm or norm in seen:
                counts["duplicates_dropped"] += 1
                continue
            if n >= max_per_problem:
                counts["over_cap_dropped"] += 1
                continue
            seen.add(norm)
            n += 1
            kept.append(r)
    return kept, counts


def _by_difficulty(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.get("difficulty") is not None:
            acc[str(r["difficulty"])].append(r["reward"])
    return {k: sum(v) / len(v) for k, v in sorted(acc.items())}


def run_estep(model: str, problems_path: str | os.PathLike, out: str | os.PathLike, *, reward: Reward,
              template: str, sampling: Any, engine_config: EngineConfig, iteration: int,
              engine_factory: EngineFactory | None = None) -> dict[str, Any]:
    """Sample ``sampling.samples`` solutions per training problem from ``model``, grade them and keep the
    correct ones (``sampling.max_per_problem`` per problem) as seed-style pairs in OUT/accepted.parquet."""
    out = Path(out)
    done = _finished(out)
    if done is not None:
        return done
    problems = read_problems(problems_path)
    work = work_dir(out)
    started = time.perf_counter()
    plan = SamplingPlan("sample", sampling.samples, sampling.temperature, sampling.top_k, sampling.top_p,
                        sampling.max_tokens, list(sampling.stop), seed=sampling.seed + 1000 * iteration)
    log.info("[estep_%d] %d problems x %d samples from %s", iteration, len(problems), sampling.samples, model)
    engine = _engine(model, engine_config, engine_factory, work)
    rows = sample_and_grade(engine, problems, reward, template, [plan], work, sampling.chunk_problems,
                            f"estep_{iteration}", settings={"model": model, "iteration": iteration})
    del engine
    kept, counts = select_accepted(rows, sampling.max_per_problem, sampling.keep_truncated)
    by_id = {p.id: p for p in problems}
    pairs = [{"id": f"{r['problem_id']}#s{r['sample']}",
              "instruction": prompt_messages(template, by_id[r["problem_id"]])[0]["content"],
              "output": r["completion"].strip(), "source": f"rest:iter{iteration}:{r['problem_id']}"}
             for r in kept]
    solved = {r["problem_id"] for r in rows if r["reward"] >= 1.0}
    stats = {
        "iteration": iteration,
        "model": model,
        "problems": len(problems),
        "samples": len(rows),
        "samples_per_problem": sampling.samples,
        "correct": counts["correct"],
        "reward_rate": counts["correct"] / len(rows) if rows else 0.0,
        "problems_solved": len(solved),
        "solved_rate": len(solved) / len(problems) if problems else 0.0,
        "accepted": len(pairs),
        "accepted_problems": len({r["problem_id"] for r in kept}),
        "max_per_problem": sampling.max_per_problem,
        **{k: v for k, v in counts.items() if k != "correct"},
        "truncated_samples": sum(1 for r in rows if r["finish_reason"] == "length"),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "reward_rate_by_difficulty": _by_difficulty(rows),
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("[estep_%d] reward rate %.3f (%d/%d samples), %d/%d problems solved, %d solutions kept "
             "(dropped: %d truncated, %d duplicates, %d over the cap of %d)", iteration, stats["reward_rate"],
             counts["correct"], len(rows), len(solved), len(problems), len(pairs), counts["truncated_dropped"],
             counts["duplicates_dropped"], counts["over_cap_dropped"], sampling.max_per_problem)

    def write(final: Path) -> dict[str, Any]:
        write_parquet(rows, final / SAMPLES, SAMPLE_SCHEMA)
        write_parquet(pairs, final / ACCEPTED, "seed")
        return stats

    return _publish(work, out, write)


# ------------------------------------------------------------------------------------------------ M-step


def run_mstep(accepted: str | os.PathLike, out: str | os.PathLike, *, base_model: str, train: TrainConfig,
              iteration: int) -> dict[str, Any]:
    """Fine-tune ``base_model`` (never the previous iteration's model) on the accepted solutions."""
    from ..stages.train import train_forward

    out = Path(out)
    if train.base_model != base_model:
        raise ValueError(f"M-step train config names base {train.base_model!r}, not the base model {base_model!r}")
    n = len(read_rows(accepted)) if Path(accepted).exists() else 0
    if n == 0:
        # Nothing correct to learn from: the policy stays the base model for the next E-step and eval.
        log.warning("[mstep_%d] no accepted solutions: no training; the base model stands in for iteration %d",
                    iteration, iteration)
        stats = {"iteration": iteration, "trained": False, "model": base_model, "base_model": base_model,
                 "examples": 0}
        if not (out / NO_MODEL).is_file():
            out.mkdir(parents=True, exist_ok=True)
            write_json(stats, out / NO_MODEL)
        return stats
    if (out / NO_MODEL).is_file():  # left from an earlier attempt that had nothing to train on
        shutil.rmtree(out)
    log.info("[mstep_%d] fine-tuning the base model %s on %d solutions", iteration, base_model, n)
    result = train_forward(str(accepted), out, base=base_model,
                           config=train.model_copy(update={"tags": False}), tags=False)
    res = result.summary["results"]
    return {"iteration": iteration, "trained": True, "model": str(out), "base_model": result.summary["base_model"],
            "examples": result.summary["data"]["examples"], "steps": res["global_step"],
            "final_loss": res["final_loss"], "first_loss": res["first_loss"], "runtime_s": res["runtime_s"],
            "skipped": result.skipped}


# ------------------------------------------------------------------------------------------------ eval


def run_eval(model: str, problems_path: str | os.PathLike, out: str | os.PathLike, *, reward: Reward,
             template: str, eval_config: Any, engine_config: EngineConfig, label: str = "eval",
             engine_factory: EngineFactory | None = None) -> dict[str, Any]:
    """Held-out pass@1 (greedy), pass@k and majority-vote accuracy of ``model``; OUT/stats.json has them."""
    out = Path(out)
    done = _finished(out)
    if done is not None:
        return done
    problems: list[Problem] = read_problems(problems_path)
    work = work_dir(out)
    started = time.perf_counter()
    ec = eval_config
    plans = []
    if ec.greedy:
        plans.append(SamplingPlan("greedy", 1, 0.0, None, 1.0, ec.max_tokens, list(ec.stop), ec.seed))
    if ec.samples:
        plans.append(SamplingPlan("sample", ec.samples, ec.temperature, ec.top_k, ec.top_p, ec.max_tokens,
                                  list(ec.stop), ec.seed))
    log.info("[%s] %d held-out problems (%s) with %s", label, len(problems),
             " + ".join(f"{p.n} {p.mode}" for p in plans), model)
    engine = _engine(model, engine_config, engine_factory, work)
    rows = sample_and_grade(engine, problems, reward, template, plans, work, ec.chunk_problems, label,
                            settings={"model": model})
    del engine
    stats = {"model": model, **summarize_eval(rows, [p.id for p in problems], reward.votable),
             "completion_tokens": sum(r["completion_tokens"] for r in rows),
             "seconds": round(time.perf_counter() - started, 1)}
    log.info("[%s] held-out pass@1 %.3f%s", label, stats["pass@1"],
             f", pass@{stats['k']} {stats['pass@k_max']:.3f}" if stats.get("k") else "")

    def write(final: Path) -> dict[str, Any]:
        write_parquet(rows, final / SAMPLES, SAMPLE_SCHEMA)
        return stats

    return _publish(work, out, write)


__all__ = ["run_estep", "run_eval", "run_mstep", "select_accepted"]
