"""``humpback rest``: the ReST-EM loop as resumable stages in a run directory.

Stages, in order: ``problems`` (read or generate, quarantine, split) -> ``eval_0`` (the base model on the
held-out problems) -> for each iteration i: ``estep_i`` (sample from the policy of iteration i-1; the base
model for i=1), ``mstep_i`` (fine-tune the *base* model on the kept solutions), ``eval_i`` -> ``report``
(metrics table, JSON and PNG). After each ``eval_i`` the loop stops early when the held-out metric did not
beat the best so far. Layout:

    RUN/manifest.json             stage status, timings, results (humpback.core.runs)
    RUN/problems/                 train.jsonl, heldout.jsonl, quarantine.jsonl, stats.json
    RUN/eval_0/                   samples.parquet, stats.json (base model)
    RUN/iter_1/estep/             samples.parquet (every sample, graded), accepted.parquet (seed schema)
    RUN/iter_1/model/             the fine-tuned model (humpback train layout, model card)
    RUN/iter_1/eval/              samples.parquet, stats.json
    RUN/report/                   metrics.json, metrics.md, metrics.png
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import EngineConfig
from ..core.locks import locked, run_lock_path
from ..core.records import RecordError, write_json, write_jsonl
from ..core.runs import Run, Stage, StageContext
from ..stages.train.config import OPERATIONAL_KEYS
from .config import RestConfig
from .metrics import markdown_table, plot_metrics
from .problems import load_problems, split_problems, write_problems, write_quarantine
from .rewards import Reward, make_reward
from .steps import ACCEPTED, EngineFactory, run_estep, run_eval, run_mstep
from .wordproblems import generate_problems

log = logging.getLogger("humpback.rest")

# Engine keys that change speed, not what is generated.
_ENGINE_OPERATIONAL = {"batch_size", "max_batch_tokens", "threads", "progress"}


@dataclass
class RestResult:
    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per model (iteration 0 = base)
    stopped: str | None = None  # why the loop ended before config.iterations, if it did
    best_iteration: int | None = None
    report: dict[str, Any] | None = None


def stage_order(iterations: int) -> list[str]:
    order = ["problems", "eval_0"]
    for i in range(1, iterations + 1):
        order += [f"estep_{i}", f"mstep_{i}", f"eval_{i}"]
    return order + ["report"]


# ------------------------------------------------------------------------------------------------ problems


def prepare_problems(config: RestConfig, reward: Reward, out: str | os.PathLike) -> dict[str, Any]:
    """Write OUT/train.jsonl and OUT/heldout.jsonl (and quarantine.jsonl) from the configured source."""
    out = Path(out)
    pc = config.problems
    quarantined = []
    if pc.generate is not None:
        g = pc.generate
        train_rows = generate_problems(g.train, g.levels, seed=g.seed, id_prefix="train")
        held_rows = generate_problems(g.heldout, g.levels, seed=g.seed, id_prefix="heldout",
                                      exclude=[r["problem"] for r in train_rows])
        tmp = out.with_name(out.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        write_jsonl(train_rows, tmp / "generated_train.jsonl")
        write_jsonl(held_rows, tmp / "generated_heldout.jsonl")
        train, bad_t = load_problems(tmp / "generated_train.jsonl", reward.check_problem)
        held, bad_h = load_problems(tmp / "generated_heldout.jsonl", reward.check_problem)
        quarantined = bad_t + bad_h
        source = f"generated (seed {g.seed}, levels {g.levels})"
    elif pc.path is not None:
        problems, quarantined = load_problems(pc.path, reward.check_problem)
        train, held = split_problems(problems, pc.heldout_fraction, pc.split_seed)
        source = pc.path
    else:
        train, bad_t = load_problems(pc.train, reward.check_problem)
        held, bad_h = load_problems(pc.heldout, reward.check_problem)
        overlap = {p.id for p in train} & {p.id for p in held}
        if overlap:
            log.warning("%d problem id(s) are in both train and heldout (e.g. %s); they are kept out of train",
                        len(overlap), min(overlap))
            train = [p for p in train if p.id not in overlap]
        quarantined = bad_t + bad_h
        source = f"{pc.train} + {pc.heldout}"
    read_total = len(train) + len(held) + len(quarantined)
    if pc.max_train:
        train = train[: pc.max_train]
    if pc.max_heldout:
        held = held[: pc.max_heldout]
    if not train or not held:
        raise RecordError(f"problems ({source}): {len(train)} train and {len(held)} held-out problems left after "
                          f"quarantine ({len(quarantined)}); both need at least one")
    reasons: dict[str, int] = {}
    for q in quarantined:
        key = q.reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    if quarantined:
        log.warning("problems: %d record(s) quarantined (%s) -> %s", len(quarantined),
                    ", ".join(f"{k}: {v}" for k, v in reasons.items()), out / "quarantine.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    write_problems(train, out / "train.jsonl")
    write_problems(held, out / "heldout.jsonl")
    write_quarantine(quarantined, out / "quarantine.jsonl")
    levels: dict[str, dict[str, int]] = {}
    for split, items in (("train", train), ("heldout", held)):
        for p in items:
            if p.difficulty is not None:
                levels.setdefault(str(p.difficulty), {"train": 0, "heldout": 0})[split] += 1
    stats = {"source": source, "read": read_total, "train": len(train), "heldout": len(held),
             "quarantined": len(quarantined), "quarantined_by_reason": reasons, "by_difficulty": levels}
    write_json(stats, out / "stats.json")
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
    log.info("problems: %d train, %d held-out from %s", len(train), len(held), source)
    return stats


# ------------------------------------------------------------------------------------------------ the loop


def _engine_params(engine: EngineConfig) -> dict[str, Any]:
    return {k: v for k, v in engine.model_dump(mode="json").items() if k not in _ENGINE_OPERATIONAL}


def _improved(metric: float | None, best: float | None, min_delta: float) -> bool:
    if metric is None:
        return False
    return best is None or metric > best + min_delta


def _metric(stats: dict[str, Any], name: str) -> float | None:
    return {"pass@1": stats.get("pass@1"), "pass@k": stats.get("pass@k_max"), "maj@k": stats.get("maj@k")}[name]


def run_rest(config: RestConfig, run_dir: str | os.PathLike | None = None, *, config_source: str | None = None,
             start: str | None = None, until: str | None = None,
             engine_factory: EngineFactory | None = None) -> RestResult:
    """Run (or resume) the ReST-EM loop of ``config`` in ``run_dir`` (default: ``config.run_dir``)."""
    run_dir = Path(run_dir or config.run_dir)
    if engine_factory is None:
        from ..core.models import resolve

        resolve(config.model)  # before anything is written: every M-step trains it here
    with locked(run_lock_path(run_dir), "humpback rest"):
        return _run_rest(config, run_dir, config_source, start, until, engine_factory)


def _run_rest(config: RestConfig, run_dir: Path, config_source: str | None, start: str | None, until: str | None,
              engine_factory: EngineFactory | None) -> RestResult:
    stages = build_stages(config, run_dir, engine_factory)
    run = Run(run_dir, config.model_dump(mode="json"), kind="rest", config_source=config_source,
              order=[st.name for st in stages])
    run.select(start, until)
    ctx = run.walk(stages)
    evals, esteps, msteps = _by_iteration(ctx.results)
    result = RestResult(run_dir, report=ctx.results.get("report"))
    last = next(reversed(ctx.results))
    if last == "problems" and run.reached_end(last):
        return result  # no model was evaluated yet
    if last != "report" and run.reached_end(last):
        # stopped by --until: the metric of an eval that ended the walk is not weighed yet
        weighed = {i: e for i, e in evals.items() if last != f"eval_{i}" or i == 0}
        return _finish(result, config, evals, esteps, msteps, _standing(config, weighed)[1], None)
    _, best_iteration, stopped = _standing(config, evals)
    return _finish(result, config, evals, esteps, msteps, best_iteration, stopped)


def build_stages(config: RestConfig, run_dir: Path, engine_factory: EngineFactory | None = None) -> list[Stage]:
    """problems, eval_0, then estep_i / mstep_i / eval_i per iteration (skipped after an early stop), report.
    The policy an E-step samples from and the model an eval reads are the previous M-step's output."""
    reward = make_reward(config.reward.kind, config.reward.options)
    template = config.template_name()
    base = config.model
    common = {"template": template, "reward": config.reward.model_dump(mode="json"),
              "engine": _engine_params(config.engine)}
    pc = config.problems
    problems_dir = run_dir / "problems"
    train_path, held_path = problems_dir / "train.jsonl", problems_dir / "heldout.jsonl"
    eval_params = {**common, "eval": config.eval.model_dump(mode="json")}
    train = config.train_config()
    train_params = {k: v for k, v in train.model_dump(mode="json").items() if k not in OPERATIONAL_KEYS}

    def evaluate(name: str, model: str, out: Path) -> dict[str, Any]:
        return run_eval(model, held_path, out, reward=reward, template=template, eval_config=config.eval,
                        engine_config=config.engine, label=name, engine_factory=engine_factory)

    def policy(ctx: StageContext, i: int) -> str:
        """The model of M-step i (the base model for i = 0)."""
        return base if i == 0 else ctx.results[f"mstep_{i}"]["model"]

    def stopped_early(ctx: StageContext) -> bool:
        stopped = _standing(config, _by_iteration(ctx.results)[0])[2]
        if stopped is not None and not ctx.state.get("stop_logged"):
            log.warning("early stop: %s", stopped)
            ctx.state["stop_logged"] = True
        return stopped is not None

    stages = [
        Stage("problems", lambda ctx: prepare_problems(config, reward, problems_dir),
              params={"problems": pc.model_dump(mode="json"), "reward": common["reward"]},
              inputs=[p for p in (pc.path, pc.train, pc.heldout) if p], outputs=[problems_dir]),
        Stage("eval_0", lambda ctx: evaluate("eval_0", base, run_dir / "eval_0"),
              params={**eval_params, "model": base}, depends_on=["problems"], outputs=[run_dir / "eval_0"])]
    for i in range(1, config.iterations + 1):
        it = run_dir / f"iter_{i}"
        stages += [
            Stage(f"estep_{i}", lambda ctx, i=i, it=it: run_estep(
                policy(ctx, i - 1), train_path, it / "estep", reward=reward, template=template, sampling=config.estep,
                engine_config=config.engine, iteration=i, engine_factory=engine_factory),
                params=lambda ctx, i=i: {**common, "policy": policy(ctx, i - 1),
                                         "estep": config.estep.model_dump(mode="json"), "iteration": i},
                depends_on=["problems"] + ([f"mstep_{i - 1}"] if i > 1 else []), outputs=[it / "estep"],
                skip=stopped_early),
            Stage(f"mstep_{i}", lambda ctx, i=i, it=it: run_mstep(it / "estep" / ACCEPTED, it / "model",
                                                                  base_model=base, train=train, iteration=i),
                  params={"base_model": base, "train": train_params}, depends_on=[f"estep_{i}"],
                  outputs=[it / "model"], skip=stopped_early),
            Stage(f"eval_{i}", lambda ctx, i=i, it=it: evaluate(f"eval_{i}", policy(ctx, i), it / "eval"),
                  params=lambda ctx, i=i: {**eval_params, "model": policy(ctx, i)},
                  depends_on=["problems", f"mstep_{i}"], outputs=[it / "eval"], skip=stopped_early)]

    def report(ctx: StageContext) -> dict[str, Any]:
        evals, esteps, msteps = _by_iteration(ctx.results)
        _, best, stopped = _standing(config, evals)
        return write_report(run_dir / "report", config, evals, esteps, msteps, best, stopped)

    def report_params(ctx: StageContext) -> dict[str, Any]:
        _, best, stopped = _standing(config, _by_iteration(ctx.results)[0])
        return {"stopped": stopped, "best": best}

    # it reads every stage walked before it: those after an early stop are not
    stages.append(Stage("report", report, params=report_params, depends_on=lambda ctx: list(ctx.results),
                        outputs=[run_dir / "report"]))
    return stages


def _by_iteration(results: dict[str, dict[str, Any]]) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
    """The walked evals, E-steps and M-steps by iteration."""
    out: tuple[dict[int, Any], dict[int, Any], dict[int, Any]] = ({}, {}, {})
    for name, res in results.items():
        kind, _, i = name.partition("_")
        if kind in ("eval", "estep", "mstep"):
            out[("eval", "estep", "mstep").index(kind)][int(i)] = res
    return out


def _standing(config: RestConfig, evals: dict[int, dict[str, Any]]) -> tuple[float | None, int, str | None]:
    """(best metric, its iteration, why the loop stopped early or None) after the held-out evals so far."""
    es = config.early_stop
    best_metric, best_iteration = _metric(evals[0], es.metric), 0
    for i in range(1, config.iterations + 1):
        if i not in evals:
            break
        metric = _metric(evals[i], es.metric)
        if _improved(metric, best_metric, es.min_delta):
            best_metric, best_iteration = metric, i
        elif es.enabled and i < config.iterations:
            return best_metric, best_iteration, (
                f"held-out {es.metric} {metric:.3f} after iteration {i} did not beat the best so far "
                f"({best_metric:.3f}, iteration {best_iteration}) by more than {es.min_delta}")
    return best_metric, best_iteration, None


def metric_rows(evals, esteps, msteps) -> list[dict[str, Any]]:
    """One row per model: iteration 0 is the base model, iteration i the model of M-step i."""
    rows = []
    for i in sorted(set(evals) | {0}):
        ev = evals.get(i, {})
        nxt = esteps.get(i + 1, {})  # the E-step that sampled from this model measures its train reward
        ms = msteps.get(i, {})
        rows.append({
            "iteration": i,
            "model": "base" if i == 0 else (f"iter_{i}/model" if ms.get("trained") else "base (no data)"),
            "train_reward_rate": nxt.get("reward_rate"),
            "train_solved": nxt.get("solved_rate"),
            "accepted": ms.get("examples") if i else None,
            "pass@1": ev.get("pass@1"),
            "pass@k": ev.get("pass@k_max"),
            "maj@k": ev.get("maj@k"),
            "k": ev.get("k"),
            "pass@1_sampled": ev.get("pass@1_sampled"),
            "by_difficulty": ev.get("by_difficulty"),
        })
    return rows


def write_report(out: Path, config: RestConfig, evals, esteps, msteps, best_iteration: int,
                 stopped: str | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rows = metric_rows(evals, esteps, msteps)
    k = next((r["k"] for r in rows if r.get("k")), None)
    table = markdown_table(rows, k)
    notes = [f"Best iteration by held-out {config.early_stop.metric}: {best_iteration}"]
    if stopped:
        notes.append(f"Stopped early: {stopped}")
    pass1 = "greedy" if config.eval.greedy else "mean over samples"
    md = (f"# ReST-EM metrics\n\nBase model `{config.model}`, reward `{config.reward.kind}`. Held-out pass@1 is "
          f"{pass1}; pass@k and maj@k use {k or 0} samples per problem at T={config.eval.temperature}. The train "
          "reward rate of a model is measured by the E-step that samples from it.\n\n"
          f"{table}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    (out / "metrics.md").write_text(md, encoding="utf-8")
    plot_metrics(rows, out / "metrics.png", k, f"ReST-EM: {config.model}, {config.reward.kind}")
    report = {"rows": rows, "best_iteration": best_iteration, "stopped": stopped, "k": k,
              "estep": {str(i): s for i, s in esteps.items()}, "mstep": {str(i): s for i, s in msteps.items()},
              "eval": {str(i): s for i, s in evals.items()}}
    write_json(report, out / "metrics.json")
    return {"best_iteration": best_iteration, "stopped": stopped, "rows": rows}


def _finish(result: RestResult, config: RestConfig, evals, esteps, msteps, best_iteration, stopped) -> RestResult:
    result.rows = metric_rows(evals, esteps, msteps)
    result.best_iteration = best_iteration
    result.stopped = stopped
    return result


__all__ = ["RestResult", "build_stages", "metric_rows", "prepare_problems", "run_rest", "stage_order", "write_report"]
