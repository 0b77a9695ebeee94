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

# --- prepare (humpback.corpus) ---

# --- train (humpback.train) ---

# --- augment / curate (humpback.augment, humpback.curate) ---


if __name__ == "__main__":
    main()
