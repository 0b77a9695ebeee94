"""Click commands for ReST-EM: ``humpback rest``, ``humpback rest-problems``, ``humpback rest-eval``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..core.config import config_option, config_overrides
from ..core.locks import writes_output
from .config import RestConfig


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


def _print_rows(rows, k) -> None:
    from .metrics import markdown_table

    click.echo(markdown_table(rows, k))


@click.command("rest")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--run-dir", default=None, help="Run directory [config run_dir]; rerunning resumes it.")
@click.option("--from", "start", default=None, help="Re-run this stage and every stage after it.")
@click.option("--until", default=None, help="Stop after this stage (e.g. eval_0, estep_1).")
@config_option(RestConfig, "iterations", "--iterations", help="Number of iterations.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set a config key, e.g. --set mstep.epochs=2 (value read as YAML; repeatable).")
def rest_cmd(config_path, run_dir, start, until, sets, **options) -> None:
    """ReST-EM self-training with a verifiable reward, from one YAML CONFIG (resumable).

    E-step: sample solutions from the current model and keep those the reward accepts; M-step: fine-tune
    the base model on them; repeat, evaluating on held-out problems after each iteration.
    """
    from ..core.runs import RunError
    from ..stages.train import TrainingError
    from ..core.config import with_set_options
    from .config import load_rest_config
    from .loop import run_rest, stage_order
    from .sampling import SamplingError

    config = load_rest_config(config_path, with_set_options(RestConfig, sets, config_overrides(options)))
    try:
        result = run_rest(config, run_dir, config_source=str(config_path), start=start, until=until)
    except (RunError, TrainingError, SamplingError, FileExistsError) as e:
        _fail(e)
    run_dir = result.run_dir
    k = next((r["k"] for r in result.rows if r.get("k")), None)
    click.echo("")
    _print_rows(result.rows, k)
    pass1 = [(r["iteration"], r["pass@1"]) for r in result.rows if r.get("pass@1") is not None]
    if pass1:
        click.echo("\nheld-out pass@1: " + " -> ".join(f"iter {i}: {v:.3f}" for i, v in pass1))
    if result.stopped:
        click.echo(f"stopped early: {result.stopped}")
    if result.report is not None:
        click.echo(f"best iteration: {result.best_iteration}; report: {run_dir}/report/metrics.md, "
                   f"{run_dir}/report/metrics.png")
    else:
        order = stage_order(config.iterations)
        click.echo(f"stopped before the report (stages: {', '.join(order)})")


@click.command("rest-problems")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="JSONL file to write.")
@click.option("--count", type=int, default=100, show_default=True)
@click.option("--levels", default="1,2,3,4,5", show_default=True, help="Difficulty levels, comma-separated.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--id-prefix", default="arith", show_default=True)
@writes_output("output")
def rest_problems_cmd(output, count, levels, seed, id_prefix) -> None:
    """Write seeded multi-step arithmetic word problems (id, problem, answer, difficulty, solution)."""
    from ..core.records import write_jsonl
    from .wordproblems import generate_problems

    try:
        level_list = [int(x) for x in levels.split(",") if x.strip()]
        rows = generate_problems(count, level_list, seed=seed, id_prefix=id_prefix)
    except ValueError as e:
        _fail(e)
    write_jsonl(rows, output)
    click.echo(f"wrote {len(rows)} problems to {output}")


@click.command("rest-eval")
@click.argument("problems", type=click.Path(exists=True, dir_okay=False, readable=False))
@click.option("--model", default="smollm2-135m-instruct", show_default=True)
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for samples.parquet and stats.json (resumes an interrupted evaluation).")
@click.option("--reward", "reward_kind", default="math-answer", show_default=True)
@click.option("--template", default=None, help="Prompt template [rest_math, or rest_code for code-tests].")
@click.option("--samples", type=int, default=0, show_default=True, help="Sampled solutions per problem (pass@k).")
@click.option("--no-greedy", is_flag=True, help="Skip the greedy solution (pass@1 then from samples).")
@click.option("--max-tokens", type=int, default=512, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N problems.")
@writes_output("output")
def rest_eval_cmd(problems, model, output, reward_kind, template, samples, no_greedy, max_tokens, limit) -> None:
    """Evaluate MODEL on PROBLEMS with a reward: pass@1, pass@k, majority vote, per difficulty."""
    from ..core.config import ConfigError, EngineConfig, validate_config
    from ..core.records import RecordError, write_jsonl
    from .config import EvalConfig
    from .problems import load_problems
    from .rewards import make_reward
    from .sampling import SamplingError
    from .steps import run_eval

    reward = make_reward(reward_kind)
    items, bad = load_problems(problems, reward.check_problem)
    example = f"{bad[0].source}:{bad[0].line}: {bad[0].reason}" if bad else ""
    if bad and not items:
        raise RecordError(f"{example}; none of the {len(bad)} problem(s) is usable")
    if bad:
        click.echo(f"warning: {len(bad)} problem(s) skipped, e.g. {example}", err=True)
    if limit:
        items = items[:limit]
    if not items:
        raise ConfigError(f"{problems}: no usable problems")
    out = Path(output)
    selected = out.with_name(out.name + ".problems.jsonl")
    write_jsonl((p.as_record() for p in items), selected)
    cfg = validate_config(EvalConfig, {"greedy": not no_greedy, "samples": samples, "max_tokens": max_tokens},
                          source="rest-eval options")
    tmpl = template or ("rest_code" if reward_kind == "code-tests" else "rest_math")
    try:
        stats = run_eval(model, selected, out, reward=reward, template=tmpl, eval_config=cfg,
                         engine_config=EngineConfig(), label="rest-eval")
    except (SamplingError, FileExistsError) as e:
        _fail(e)
    click.echo(f"{stats['problems']} problems: pass@1 {stats['pass@1']:.3f}"
               + (f", pass@{stats['k']} {stats['pass@k_max']:.3f}" if stats.get("k") else "")
               + (f", maj@{stats['k']} {stats['maj@k']:.3f}" if stats.get("maj@k") is not None else ""))
    for level, entry in (stats.get("by_difficulty") or {}).items():
        parts = [f"{k} {v:.3f}" for k, v in entry.items() if k != "problems"]
        click.echo(f"  difficulty {level}: {entry['problems']} problems, " + ", ".join(parts))
    click.echo(f"samples and stats: {out}")


__all__ = ["rest_cmd", "rest_eval_cmd", "rest_problems_cmd"]
