"""`humpback init DIR`: a project folder with a commented starter config, copied from the shipped quickstart.

The starter is ``humpback/resources/configs/quickstart.yaml`` with a header: every comment is kept, and its only
input paths are the word ``quickstart`` (the offline corpus) and ``builtin`` (the shipped seed), which resolve
wherever humpback is installed, so the config works from any folder without a checkout of the repository.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import __version__
from .core.records import atomic_path

CONFIGS = Path(__file__).resolve().parent / "resources" / "configs"  # the shipped example configs
STARTER = CONFIGS / "quickstart.yaml"
CONFIG_NAME = "humpback.yaml"

HEADER = f"""\
# Written by `humpback init` (humpback {__version__}) from its shipped quickstart config. Make it yours: your
# text in corpus.inputs (files, folders or URLs), your pairs in seed.path, any model in base_model. Relative paths
# are relative to the folder `humpback run` is started from (the run folder too: runs/<name>).
#
"""


@dataclass
class InitResult:
    directory: Path
    config: Path
    overwrote: bool
    name: str  # the config's name: its run folder is runs/<name>

    def summary(self) -> str:
        """What was written and what to run next (commands relative to the current folder)."""
        steps = [] if self.directory.resolve() == Path.cwd().resolve() else [
            (f"cd {shlex.quote(str(self.directory))}", "relative paths in the config start there")]
        steps += [
            (f"humpback run {CONFIG_NAME} --until seed", "corpus, prepare, seed import: checks the inputs in a minute"),
            (f"humpback run {CONFIG_NAME}", "the whole loop (~15 min on 2 CPU cores); rerun to resume"),
            (f"humpback report runs/{self.name}", "its HTML page again (run writes it at the end)"),
        ]
        width = max(len(cmd) for cmd, _ in steps)
        verb = "overwrote" if self.overwrote else "wrote"
        return (f"{verb} {self.config}: the quickstart config (SmolLM2-135M-Instruct, the shipped seed, an offline "
                "corpus)\nnext:\n" + "\n".join(f"  {cmd:<{width}}   # {why}" for cmd, why in steps))


def init_project(directory: str | os.PathLike, force: bool = False) -> InitResult:
    """Create ``directory`` if needed and write ``directory/humpback.yaml``; an existing one only with ``force``."""
    directory = Path(directory)
    config = directory / CONFIG_NAME
    exists = config.exists()
    if exists and not force:
        raise FileExistsError(f"{config}: already exists; pass --force to overwrite it")
    if config.is_dir():
        raise IsADirectoryError(f"{config}: is a folder")
    directory.mkdir(parents=True, exist_ok=True)
    text = STARTER.read_text(encoding="utf-8")
    with atomic_path(config, suffix=".yaml") as tmp:
        tmp.write_text(HEADER + text, encoding="utf-8")
    return InitResult(directory=directory, config=config, overwrote=exists, name=yaml.safe_load(text)["name"])
