"""The ``humpback`` command line: parses arguments and calls library functions (which tests also call)."""

from __future__ import annotations

import logging
import sys

import click

from . import __version__


class _HumpbackGroup(click.Group):
    """Turns the library's expected errors into one clear line and exit code 2, not a traceback."""

    def invoke(self, ctx):
        from .config import ConfigError
        from .engines.base import EngineCapabilityError
        from .models import ModelResolutionError
        from .prompts import PromptError
        from .records import RecordError

        try:
            return super().invoke(ctx)
        except (ConfigError, ModelResolutionError, PromptError, RecordError, EngineCapabilityError,
                FileNotFoundError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_HumpbackGroup)
@click.version_option(__version__, prog_name="humpback")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """humpback: turn unlabeled text into instruction-tuning data (instruction backtranslation)."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("humpback").setLevel(min(level, logging.INFO))


@main.command("models")
@click.option("--convert/--no-convert", default=False, help="Convert aliases that are not converted yet.")
def models_cmd(convert: bool) -> None:
    """List model aliases and where each resolves."""
    from . import models

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
@click.option("--template", default=None, help="Prompt template in prompts/ (e.g. backward); TEXT fills `output`.")
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--top-p", type=float, default=0.9, show_default=True)
@click.option("--max-tokens", type=int, default=128, show_default=True)
@click.option("--n", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def generate_cmd(text, model, template, temperature, top_p, max_tokens, n, seed) -> None:
    """Generate from MODEL for TEXT (or stdin) with the in-process engine."""
    from .engines import GenerationRequest, make_engine
    from .prompts import render

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

# --- seed (humpback.seed) ---

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
def seed_import_cmd(src, output, fmt, instruction_key, output_key, id_key, lang, split, heldout_fraction,
                    seed, source_name) -> None:
    """Import seed pairs from SRC (JSONL, Parquet, a saved HF dataset or the oasst1 export)."""
    from .seed import import_seed

    report = import_seed(src, output, format=fmt, instruction_key=instruction_key, output_key=output_key,
                         lang=lang, id_key=id_key, split=split, heldout_fraction=heldout_fraction, seed=seed,
                         source=source_name)
    click.echo(report.summary())


@seed_group.command("stats")
@click.argument("file")
@click.option("--markdown", is_flag=True, help="Print Markdown tables (used for seed_data/README.md).")
@click.option("--instruction-key", default=None)
@click.option("--output-key", default=None)
@click.option("--category-key", default="category", show_default=True)
def seed_stats_cmd(file, markdown, instruction_key, output_key, category_key) -> None:
    """Count, categories and word lengths of the pairs in FILE."""
    from .seed import format_stats, seed_stats

    click.echo(format_stats(seed_stats(file, instruction_key, output_key, category_key), markdown=markdown))


@main.command("quickstart-corpus")
@click.option("--output", "-o", required=True, help="JSONL file to write (id, text, url, source, license).")
@click.option("--min-chars", type=int, default=1500, show_default=True, help="Shortest description kept.")
@click.option("--min-headings", type=int, default=3, show_default=True)
@click.option("--include-rst/--markdown-only", default=True, show_default=True,
              help="Also use reStructuredText descriptions (their titles become # headings).")
def quickstart_corpus_cmd(output, min_chars, min_headings, include_rst) -> None:
    """Build the offline quickstart corpus from the READMEs of the installed Python packages."""
    from .quickstart_corpus import build_quickstart_corpus

    report = build_quickstart_corpus(output, min_chars=min_chars, min_headings=min_headings,
                                     include_rst=include_rst)
    click.echo(report.summary())


# --- prepare (humpback.corpus) ---

# --- train (humpback.train) ---

# --- augment / curate (humpback.augment, humpback.curate) ---


if __name__ == "__main__":
    main()
