"""The ``humpback`` command line: parses arguments and calls library functions (which tests also call)."""

from __future__ import annotations

import errno
import logging
import re
import sys
from pathlib import Path

import click

from . import __version__
from .core.config import config_option, config_overrides
from .core.locks import writes_output
from .engines import ENGINES
from .stages.augment import AugmentConfig
from .stages.curate import CurateConfig
from .stages.prepare.config import PrepareConfig
from .stages.prepare.readers import CORPUS_FORMATS
from .stages.scorers import SCORERS
from .stages.train.config import TrainConfig


class _HumpbackGroup(click.Group):
    """Turns the library's expected errors into one clear line and exit code 2, not a traceback."""

    def invoke(self, ctx):
        from .core.config import ConfigError
        from .engines.base import EngineCapabilityError
        from .stages.export import ExportError
        from .core.locks import LockError
        from .core.models import ModelResolutionError
        from .core.prompts import PromptError
        from .core.records import RecordError
        from .core.runs import RunError
        from .stages.train.sft import TrainingError

        try:
            return super().invoke(ctx)
        except (ConfigError, ModelResolutionError, PromptError, RecordError, EngineCapabilityError, RunError,
                ExportError, TrainingError, LockError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:  # a path that cannot be read or written, a full disk: the path and the reason
            click.echo(f"error: {os_error_line(e)}", err=True)
            sys.exit(2)


_ERRNO_WORDS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.EROFS: "read-only file system", errno.ENOENT: "no such file or folder",
                errno.ENOTDIR: "not a folder", errno.EISDIR: "is a folder"}


def os_error_line(e: OSError) -> str:
    """PATH: what went wrong, for an OSError raised by the system (or our own 'PATH: ...' message)."""
    if e.errno is None:  # raised by humpback itself with a message that already names the path
        return str(e)
    what = _ERRNO_WORDS.get(e.errno) or (e.strerror or str(e)).lower()
    if e.filename is None:
        # pyarrow names the file only inside its message: "Failed to open local file '/x'. Detail: ..."
        quoted = re.search(r"'(/[^']+)'", str(e))
        return f"{quoted.group(1)}: {what}" if quoted else f"{what} ({e.strerror or e})"
    where = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
    return f"{where}: {what}"


@click.group(cls=_HumpbackGroup)
@click.version_option(__version__, prog_name="humpback")
@click.option("-v", "--verbose", count=True, help="Show every stage's logs live (-v info, -vv debug) instead of "
              "one progress line per stage (the logs are in each stage's log file either way).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """humpback: turn unlabeled text into instruction-tuning data (instruction backtranslation)."""
    from .core import console

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # INFO always reaches the handlers: a quiet stage's log file keeps it, the terminal filter drops it
    logging.getLogger("humpback").setLevel(min(level, logging.INFO))
    ctx.with_resource(console.quiet(verbose == 0))


@main.command("models")
@click.option("--convert/--no-convert", default=False, help="Convert aliases that are not converted yet.")
def models_cmd(convert: bool) -> None:
    """List model aliases and where each resolves."""
    from .core import models

    if convert:
        for name in models.ALIASES:
            models.resolve(name)
    for row in models.describe_aliases():
        click.echo(f"{row['alias']}\n  {row['description']}\n  source: {row['source']}\n"
                   f"  folder: {row['folder']} ({row['status']})")
    click.echo(f"\ncache: {models.cache_dir()} (set HUMPBACK_CACHE to move it)")
    click.echo("Any local model folder or Hugging Face id also works wherever a MODEL is asked for.")


@main.command("generate")
@click.argument("text", required=False)
@click.option("--model", default="smollm2-135m-instruct", show_default=True)
@click.option("--template", default=None, help="Prompt template: a shipped one (e.g. backward: "
              "humpback/resources/prompts/backward.jinja) or a .jinja file; TEXT fills `output`.")
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--top-p", type=float, default=0.9, show_default=True)
@click.option("--max-tokens", type=int, default=128, show_default=True)
@click.option("--n", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def generate_cmd(text, model, template, temperature, top_p, max_tokens, n, seed) -> None:
    """Generate from MODEL for TEXT (or stdin) with the in-process engine."""
    from .engines import GenerationRequest, make_engine
    from .core.prompts import render

    if text is None:
        text = sys.stdin.read()
    user = render(template, output=text) if template else text
    engine = make_engine(model)
    [result] = engine.generate([GenerationRequest(
        messages=[{"role": "user", "content": user}], n=n, temperature=temperature, top_p=top_p,
        max_tokens=max_tokens, seed=seed)])
    for t in result.texts:
        click.echo(t.strip())


# Stage commands are added below, one block per stage; each block only parses and calls its module.


def _set_option(f):
    """``--set KEY=VALUE`` (repeatable): any config key of the command, by its dotted name (see docs/run.md)."""
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                        help="Set a config key, e.g. --set train.epochs=2 (value read as YAML; repeatable; "
                             "named options win).")(f)


def _quiet_stage(name: str, log_path):
    from .core import console

    return console.command(name, log_path)

# --- seed (humpback.stages.seed) ---

@main.group("seed")
def seed_group() -> None:
    """Seed pairs: import them into the seed schema, and describe a seed file."""


@seed_group.command("import")
@click.argument("src")
@click.option("--output", "-o", required=True, help="Seed file to write: .parquet or .jsonl.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet", "hf", "oasst1"]), default=None,
              help="Source format (default: from the path; oasst1 also from the record keys).")
@click.option("--instruction-key", default=None, help="Instruction field (default: instruction, prompt, ...).")
@click.option("--output-key", default=None, help="Output field (default: output, response, answer, ...).")
@click.option("--id-key", default=None, help="Id field (default: id when present, else a hash of the pair).")
@click.option("--lang", default="en", show_default=True, help="oasst1 prompt language ('any' keeps all).")
@click.option("--split", default=None, help="Split of a saved DatasetDict (default: its only split, or train).")
@click.option("--heldout-fraction", type=float, default=0.0, show_default=True,
              help="Share of pairs written to <output stem>.heldout.<ext> for evaluation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the held-out selection.")
@click.option("--source-name", default=None, help="Provenance string for the source column (default: SRC).")
@writes_output("output")
def seed_import_cmd(src, output, fmt, instruction_key, output_key, id_key, lang, split, heldout_fraction,
                    seed, source_name) -> None:
    """Import seed pairs from SRC (JSONL, Parquet, a saved HF dataset or the oasst1 export; `builtin`: the seed
    shipped with humpback)."""
    from .stages.seed import import_seed

    report = import_seed(src, output, format=fmt, instruction_key=instruction_key, output_key=output_key,
                         lang=lang, id_key=id_key, split=split, heldout_fraction=heldout_fraction, seed=seed,
                         source=source_name)
    click.echo(report.summary())


@seed_group.command("stats")
@click.argument("file")
@click.option("--markdown", is_flag=True, help="Print Markdown tables (used for the shipped seed's README.md).")
@click.option("--instruction-key", default=None)
@click.option("--output-key", default=None)
@click.option("--category-key", default="category", show_default=True)
def seed_stats_cmd(file, markdown, instruction_key, output_key, category_key) -> None:
    """Count, categories and word lengths of the pairs in FILE (`builtin`: the seed shipped with humpback)."""
    from .stages.seed import format_stats, seed_stats

    click.echo(format_stats(seed_stats(file, instruction_key, output_key, category_key), markdown=markdown))


@main.command("quickstart-corpus")
@click.option("--output", "-o", required=True, help="JSONL file to write (id, text, url, source, license).")
@click.option("--min-chars", type=int, default=1500, show_default=True, help="Shortest description kept.")
@click.option("--min-headings", type=int, default=3, show_default=True)
@click.option("--include-rst/--markdown-only", default=True, show_default=True,
              help="Also use reStructuredText descriptions (their titles become # headings).")
@writes_output("output")
def quickstart_corpus_cmd(output, min_chars, min_headings, include_rst) -> None:
    """Build the offline quickstart corpus from the READMEs of the installed Python packages."""
    from .stages.prepare.quickstart import build_quickstart_corpus

    report = build_quickstart_corpus(output, min_chars=min_chars, min_headings=min_headings,
                                     include_rst=include_rst)
    click.echo(report.summary())


# --- prepare (humpback.stages.prepare) ---

@main.command("prepare")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--output", "-o", required=True, help="Output folder: segments/, stats.json, quarantine/, logs/.")
@click.option("--config", "config_path", default=None, help="YAML config (top level or a prepare: section).")
@config_option(PrepareConfig, "read.format", "--format", type=click.Choice(["auto", *CORPUS_FORMATS.names()]),
               help="Input format (auto: from each path).")
@config_option(PrepareConfig, "read.text_key", "--text-key", help="Text field of JSONL/Parquet/datasets records.")
@config_option(PrepareConfig, "language.languages", "--lang", type=str,
               help="Languages to keep, comma-separated, or 'any' [en].")
@config_option(PrepareConfig, "tasks", "--tasks", help="datatrove tasks (default: one per input file, capped).")
@config_option(PrepareConfig, "workers", "--workers", help="Tasks run at once (default: CPU cores).")
@config_option(PrepareConfig, "read.limit", "--limit", help="Read at most N input records in total (-1: all).")
@config_option(PrepareConfig, "progress", "--progress/--no-progress", help="Progress bars on stderr.")
@_set_option
@writes_output("output")
def prepare_cmd(inputs, output, config_path, sets, **options) -> None:
    """Turn raw corpus files (JSONL, Parquet, WARC, HTML/markdown folders, saved datasets) into segments."""
    from .core.config import with_set_options
    from .stages.prepare import run_prepare
    from .stages.prepare.pipeline import first_quarantined
    from .core.records import RecordError

    with _quiet_stage("prepare", Path(output) / "logs" / "prepare.log"):
        result = run_prepare(list(inputs), output, config=config_path,
                             overrides=with_set_options(PrepareConfig, sets, config_overrides(options)))
    docs = result.stats.get("documents") or {}
    bad = docs.get("quarantined_total", 0)
    if bad and bad == docs.get("in"):  # nothing usable at all: the input is broken, not a few of its records
        (result.output_dir / "stats.json").unlink(missing_ok=True)  # so that no stage takes it as prepared
        raise RecordError(f"{first_quarantined(result.output_dir)}; all {bad} record(s) were quarantined, nothing to "
                          f"segment (see {result.output_dir / 'quarantine'})")
    click.echo(result.summary())
    if bad:  # a few bad records of a big corpus are expected: kept aside and counted, not fatal
        click.echo(f"warning: {bad} of {docs['in']} record(s) quarantined, e.g. "
                   f"{first_quarantined(result.output_dir)}", err=True)


# --- train (humpback.stages.train) ---


@main.group("train")
def train_group() -> None:
    """Fine-tune the backward (output -> instruction) or forward model with trl (see docs/train.md)."""


def _train_options(f):
    f = _set_option(f)
    f = config_option(TrainConfig, "lora.enabled", "--lora", help="LoRA (peft) instead of full fine-tuning.")(f)
    f = config_option(TrainConfig, "epochs", "--epochs", help="Epochs (steps scale with the data).")(f)
    f = config_option(TrainConfig, "max_steps", "--max-steps", help="Optimizer steps (overrides --epochs).")(f)
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="YAML file of TrainConfig keys.")(f)
    f = click.option("--output", required=True, type=click.Path(file_okay=False),
                     help="Model folder to write (resumes an interrupted run).")(f)
    f = click.option("--base", default=None, help="Base model: alias, folder or HF id [config base_model].")(f)
    # readable=False: an unreadable file is reported by the reader, in one line like every other bad input
    f = click.option("--seed", "seed_paths", required=True, multiple=True, type=click.Path(exists=True, readable=False),
                     help="Seed pairs: Parquet/JSONL file or folder (repeatable).")(f)
    return f


def _train_config(config_path, sets, options):
    from .core.config import load_config, with_set_options

    return load_config(TrainConfig, config_path, with_set_options(TrainConfig, sets, config_overrides(options)))


def _train_report(result) -> None:
    res = result.summary["results"]
    if result.skipped:
        click.echo(f"{result.output}: already trained with this data and config; nothing to do")
        return
    data = result.summary["data"]["examples_by_origin"]
    loss = "-" if res["final_loss"] is None else f"{res['final_loss']:.4f}"
    click.echo(f"saved {result.output} ({', '.join(f'{k} {v}' for k, v in data.items())} examples, "
               f"{res['global_step']} steps, final loss {loss}, mean step {res['mean_step_s']} s)")


def _run_train(fn, *args, **kwargs):
    from .stages.train import TrainingError

    output = Path(kwargs.get("output") or args[1])
    try:
        # beside the model folder, not in it: the folder is published whole when training ends
        with _quiet_stage("train", output.with_name(output.name + ".train.log")):
            return fn(*args, **kwargs)
    except TrainingError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@train_group.command("backward")
@_train_options
@writes_output("output")
def train_backward_cmd(seed_paths, base, output, config_path, sets, **options) -> None:
    """Fine-tune M_yx on reversed seed pairs (prompt: the output, completion: the instruction)."""
    from .stages.train import train_backward

    config = _train_config(config_path, sets, options)
    _train_report(_run_train(train_backward, list(seed_paths), output, base=base, config=config))


@train_group.command("forward")
@_train_options
@click.option("--augmented", multiple=True, type=click.Path(exists=True, readable=False),
              help="Augmented/curated pairs: Parquet/JSONL file or folder (repeatable).")
@config_option(TrainConfig, "min_score", "--min-score", help="Keep augmented pairs with score >= S (default: all).")
@config_option(TrainConfig, "tags", "--tags/--no-tags",
               help="System tags: seed S_a, augmented S_w; --no-tags is the paper's ablation.")
@writes_output("output")
def train_forward_cmd(seed_paths, base, output, config_path, sets, augmented, **options) -> None:
    """Fine-tune the forward model on seed (tag S_a) plus augmented (tag S_w) pairs, from the base model."""
    from .stages.train import train_forward

    config = _train_config(config_path, sets, options)
    _train_report(_run_train(train_forward, list(seed_paths), output, augmented=list(augmented), base=base,
                             config=config))

# --- augment / curate (humpback.stages.augment, humpback.stages.curate) ---

def _check_local_model(model: str, engine) -> None:
    """A model the transformers engine loads here must resolve now, not inside the stage's first task."""
    if engine.kind == "transformers":
        from .core.models import resolve

        resolve(model)


@main.command("augment")
@click.argument("input_path", metavar="INPUT")
@click.option("--model", required=True, help="Backward model (alias, folder or HF id).")
@click.option("--output", "-o", required=True, help="Output folder (pairs/, rejected/, stats.json).")
@click.option("--config", "config_path", default=None, help="YAML file with augment settings.")
@config_option(AugmentConfig, "max_segments", "--max-segments", help="Only the first N segments (-1: all).")
@config_option(AugmentConfig, "generation.n", "--n", help="Instructions per segment.")
@config_option(AugmentConfig, "candidates", "--candidates",
               help="Best-of-k: sample K instructions per segment, keep the one the selection model finds most "
                    "explanatory (highest PMI); all K go into the pair's provenance.")
@config_option(AugmentConfig, "selection.model", "--selection-model",
               help="Model judging best-of-k candidates [the backward model's base].")
@config_option(AugmentConfig, "engine.kind", "--engine", type=click.Choice(ENGINES.names()),
               help="Engine kind (its other settings: engine: in --config).")
@config_option(AugmentConfig, "generation.max_tokens", "--max-tokens", help="Longest instruction in tokens.")
@config_option(AugmentConfig, "executor.tasks", "--tasks", help="datatrove tasks (shards processed in parallel units).")
@config_option(AugmentConfig, "executor.workers", "--workers", help="Tasks run at once on this machine.")
@config_option(AugmentConfig, "round", "--round", help="Round number recorded on each pair.")
@click.option("--prepare-config", default=None, help="YAML for `prepare` when INPUT is a raw corpus.")
@_set_option
@writes_output("output")
def augment_cmd(input_path, model, output, config_path, prepare_config, sets, **options) -> None:
    """Write an instruction for every segment in INPUT with the backward model (self-augmentation).

    INPUT is a `humpback prepare` output folder, or a raw corpus (prepared first into OUTPUT/prepared).
    """
    from .stages.augment import load_augment_config, run_augment
    from .core.config import with_set_options

    cfg = load_augment_config(config_path, **with_set_options(AugmentConfig, sets, config_overrides(options)))
    _check_local_model(model, cfg.engine)
    with _quiet_stage("augment", Path(output) / "logs" / "augment.log"):
        stats = run_augment(input_path, model, output, cfg, prepare_config=prepare_config)
    if stats.get("submitted"):
        what = "recorded (dry run)" if stats.get("dry_run") else "submitted"
        click.echo(f"augment {what} to Slurm; the last job ({stats.get('job_id')}) writes {output}/pairs, "
                   f"{output}/rejected and {output}/stats.json")
        return
    click.echo(f"segments {stats['segments_in']} -> pairs generated {stats['pairs_generated']}, "
               f"written {stats['pairs_written']}; dropped {stats['dropped'] or 'none'}")
    click.echo(f"pairs: {output}/pairs   rejected (with reasons): {output}/rejected   stats: {output}/stats.json")


@main.command("curate")
@click.argument("pairs")
@click.option("--model", required=True, help="Scoring model: the forward model of the previous round.")
@click.option("--output", "-o", required=True, help="Output folder (scores/, curated/, stats.json).")
@config_option(CurateConfig, "scorer.kind", "--scorer", type=click.Choice(["auto", *SCORERS.names()]),
               help="auto: humpback for models under 1B parameters, rubric otherwise.")
@config_option(CurateConfig, "min_score", "--min-score", help="Keep pairs with score >= this.")
@click.option("--config", "config_path", default=None, help="YAML file with curate settings.")
@config_option(CurateConfig, "engine.kind", "--engine", type=click.Choice(ENGINES.names()),
               help="Engine kind (its other settings: engine: in --config).")
@config_option(CurateConfig, "self_check_sample", "--self-check",
               help="Pairs re-scored as typed negatives for the AUROC self-check (0 = off).")
@config_option(CurateConfig, "max_pairs", "--max-pairs", help="Only the first N pairs (-1: all).")
@config_option(CurateConfig, "executor.tasks", "--tasks", help="datatrove tasks.")
@config_option(CurateConfig, "executor.workers", "--workers", help="Tasks run at once on this machine.")
@_set_option
@writes_output("output")
def curate_cmd(pairs, model, output, config_path, sets, **options) -> None:
    """Score every pair in PAIRS and select the tier with score >= --min-score (self-curation).

    PAIRS is an augment output folder, or any JSONL/Parquet file or folder with instruction and output columns.
    """
    from .core.config import with_set_options
    from .stages.curate import format_summary, load_curate_config, run_curate

    cfg = load_curate_config(config_path, **with_set_options(CurateConfig, sets, config_overrides(options)))
    _check_local_model(model, cfg.engine)
    with _quiet_stage("curate", Path(output) / "logs" / "curate.log"):
        stats = run_curate(pairs, model, output, cfg)
    click.echo(format_summary(stats))
    click.echo(f"scores: {output}/scores   curated tier: {output}/curated   stats: {output}/stats.json   "
               f"histogram: {output}/score_hist.png")



# --- init / run / export / stats --------------------------------------------------------------------
@main.command("init")
@click.argument("directory", metavar="DIR")
@click.option("--force", is_flag=True, help="Overwrite DIR/humpback.yaml if it exists.")
def init_cmd(directory, force) -> None:
    """Start a project in DIR: a commented starter config DIR/humpback.yaml (the shipped quickstart)."""
    from .init import init_project

    click.echo(init_project(directory, force=force).summary())


@main.command("run")
@click.argument("config_path", metavar="CONFIG")
@click.option("--run-dir", default=None, help="Run folder (default: run_dir in CONFIG, else runs/<name>).")
@click.option("--from", "start", default=None, help="Re-run this stage and every stage after it.")
@click.option("--until", default=None, help="Stop after this stage.")
@click.option("--status", is_flag=True, help="Show each stage's state (done, running, queued, failed) and exit.")
@click.option("--only", default=None, hidden=True, help="Run this one stage (what each Slurm job of a run does).")
@click.option("--array-task", type=int, default=None, hidden=True,
              help="With --only: run this task of the stage's sharded step (what each task of its job array does).")
@_set_option
def run_cmd(config_path, run_dir, start, until, status, only, array_task, sets) -> None:
    """Run the Humpback loop described by CONFIG (YAML); rerunning resumes and skips finished stages.

    Stages: corpus (quickstart only), prepare, seed, backward, eval-backward, augment, m0, eval-m0, curate-r1, m1,
    eval-m1, ... export (eval-mN: the collapse guard, docs/run.md).
    """
    from .core.config import parse_set_options
    from .loop import RunConfig, format_run_summary, run_loop, run_status

    from .analysis.report import write_report

    overrides = parse_set_options(RunConfig, sets)
    if status:
        click.echo(run_status(config_path, run_dir=run_dir, overrides=overrides))
        return
    run = run_loop(config_path, run_dir=run_dir, start=start, until=until, overrides=overrides, only=only,
                   array_task=array_task)
    if only is not None and (only != run.order[-1] or array_task is not None):
        return  # a Slurm job of one stage; the last one writes the report and the summary, as a local run does
    if run.config["executor"]["kind"] == "slurm" and only is None:  # submitted: the jobs run the stages
        click.echo("\n" + run_status(config_path, run_dir=str(run.dir), overrides=overrides))
        click.echo(f"\nwatch: humpback run {config_path} --run-dir {run.dir} --status   (re-run the same command "
                   "after a failure: only what is not done is submitted again)")
        return
    with _quiet_stage("report", run.logs_dir / "report.log"):
        write_report(run.dir)  # read by format_run_summary, which names it
    click.echo("\n" + format_run_summary(run))
    click.echo(f"\nmanifest: {run.manifest_path}")


@main.command("export")
@click.argument("source", metavar="DIR")
@click.option("--min-score", type=float, default=None, help="Keep pairs with score >= S (default: curate's).")
@click.option("--to-dir", default=None, help="Write the dataset (Parquet + card) to this folder.")
@click.option("--to-hub", default=None, metavar="REPO", help="Upload to this Hub dataset repo (user/name).")
@click.option("--private", is_flag=True, help="Create the Hub repo private.")
@click.option("--token-env", default=None, metavar="VAR", help="Env var holding the Hub token (default: saved login).")
@click.option("--exclude", multiple=True, help="JSONL/Parquet of flagged pair_ids to leave out (e.g. decontam).")
@click.option("--with-seed", is_flag=True, help="Also export the seed pairs (origin=seed); DIR must be a run.")
@click.option("--license", "license_", default="other", show_default=True, help="License field of the card.")
@click.option("--name", "pretty_name", default=None, help="Dataset title on the card.")
def export_cmd(source, min_score, to_dir, to_hub, private, token_env, exclude, with_seed, license_,
               pretty_name) -> None:
    """Export the curated pairs of DIR (a run folder or a curate output) as a Hub-ready dataset."""
    from .stages.export import export_dataset, upload_to_hub

    if not to_dir and not to_hub:
        raise click.UsageError("give --to-dir OUT, --to-hub REPO, or both")
    local = to_dir
    if local is None:  # a Hub upload still goes through a local export, kept for a retry
        base = Path(source) if (Path(source) / "manifest.json").is_file() else Path(source).parent
        local = str(base / "export-hub" / to_hub.replace("/", "__"))
    from .core.locks import command_name, locked, output_lock_path

    with locked(output_lock_path(local), command_name()), \
            _quiet_stage("export", Path(local).with_name(Path(local).name + ".export.log")):
        result = export_dataset(source, local, min_score=min_score, exclude=exclude, with_seed=with_seed,
                                license=license_, pretty_name=pretty_name)
    click.echo(result.summary())
    if to_hub:
        url = upload_to_hub(local, to_hub, private=private, token_env=token_env)
        click.echo(f"uploaded to {url}")


@main.command("stats")
@click.argument("path", metavar="DIR")
@click.option("--plot", "plot_png", default=None, metavar="OUT.png", help="Also draw length/score histograms.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table.")
@click.option("--top", type=int, default=10, show_default=True, help="How many top verbs/nouns to list.")
def stats_cmd(path, plot_png, as_json, top) -> None:
    """Counts, lengths, scores, tiers, instruction verbs/nouns and duplicate rate of any segments, pairs,
    scores or curated folder (or file, or a whole run folder)."""
    import json

    from .analysis.stats import collect_stats, format_stats, plot_stats

    results = collect_stats(path, top=top)
    click.echo(json.dumps(results, indent=2) if as_json else format_stats(results))
    if plot_png:
        click.echo(f"plot: {plot_stats(path, plot_png)}")


# --- report (humpback.analysis.report) ---

@main.command("report")
@click.argument("run_dir", metavar="RUN")
@click.option("--output", "-o", default=None, metavar="FILE.html", help="Where to write it (default RUN/report.html).")
def report_cmd(run_dir, output) -> None:
    """One self-contained HTML page about RUN: stages, scores, self-checks, backward figures, every pair."""
    from .analysis.report import write_report

    click.echo(write_report(run_dir, output))



# --- eval (humpback.evaluate) ---
from .evaluate.cli import eval_group  # noqa: E402

main.add_command(eval_group)

# --- rest (humpback.rest): ReST-EM self-training with a verifiable reward ---
from .rest.cli import rest_cmd, rest_eval_cmd, rest_problems_cmd  # noqa: E402

main.add_command(rest_cmd)
main.add_command(rest_problems_cmd)
main.add_command(rest_eval_cmd)
