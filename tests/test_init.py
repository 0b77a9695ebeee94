"""`humpback init DIR` and what makes its config work from any folder: the shipped seed (`builtin`), configs and
prompt templates inside the package."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from humpback.core import prompts
from humpback.cli import main
from humpback.core.config import ConfigError
from humpback.init import CONFIG_NAME, CONFIGS, STARTER, init_project
from humpback.loop import _check_inputs, load_run_config
from humpback.core.runs import Run
from humpback.stages.seed import BUILTIN_SEED_PATH, seed_source_path

PACKAGE = Path(prompts.__file__).resolve().parents[1]


def test_shipped_data_lives_in_the_package():
    for path in (prompts.BUILTIN_PROMPTS, CONFIGS, BUILTIN_SEED_PATH):
        assert path.resolve().is_relative_to(PACKAGE / "resources") and path.exists()
    assert {p.name for p in prompts.BUILTIN_PROMPTS.glob("*.jinja")} >= {"backward.jinja", "curate_rubric.jinja"}
    assert {p.name for p in CONFIGS.glob("*.yaml")} == {"quickstart.yaml", "paper.yaml", "rest_quickstart.yaml"}
    assert seed_source_path("builtin") == BUILTIN_SEED_PATH and seed_source_path("x.jsonl") == Path("x.jsonl")


def test_init_writes_the_quickstart_config_with_its_comments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = init_project("a/proj")
    config = Path("a/proj") / CONFIG_NAME
    assert result.config == config and config.is_file() and not result.overwrote
    text = config.read_text()
    assert text.startswith("# Written by `humpback init`")
    assert STARTER.read_text() in text  # every line of the shipped config, comments included
    cfg = load_run_config(config)
    assert cfg.seed.path == "builtin" and cfg.corpus.inputs == ["quickstart"] and cfg.name == "quickstart"
    summary = result.summary()
    for line in ("cd a/proj", "humpback run humpback.yaml --until seed", "humpback report runs/quickstart"):
        assert line in summary
    # from inside the folder, there is nothing to cd into
    monkeypatch.chdir("a/proj")
    assert "cd " not in init_project(".", force=True).summary()


def test_init_refuses_to_overwrite_without_force(tmp_path):
    config = tmp_path / CONFIG_NAME
    config.write_text("name: mine\n")
    with pytest.raises(FileExistsError, match="already exists; pass --force"):
        init_project(tmp_path)
    assert config.read_text() == "name: mine\n"
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {config}: already exists; pass --force to overwrite it"]
    result = CliRunner().invoke(main, ["init", str(tmp_path), "--force"])
    assert result.exit_code == 0 and result.output.startswith(f"overwrote {config}")
    assert load_run_config(config).seed.path == "builtin"


def test_builtin_seed_resolves_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no seed file here: `builtin` is the shipped one
    init_project(".")
    cfg = load_run_config(CONFIG_NAME)
    _check_inputs(cfg, CONFIG_NAME)
    cfg.seed.path = "seed_data/seed.jsonl"  # the old repo-relative path names nothing here
    with pytest.raises(ConfigError, match="seed.path: seed_data/seed.jsonl: no such file or folder.*`builtin`"):
        _check_inputs(cfg, CONFIG_NAME)


def test_shipped_inputs_are_recorded_relative_to_the_package(tmp_path):
    run = Run(tmp_path / "run", {}, kind="humpback")
    assert run._key(BUILTIN_SEED_PATH) == "humpback:resources/seed/seed.jsonl"
    assert run._key(tmp_path / "run" / "seed.parquet") == "RUN/seed.parquet"
    assert run._key("elsewhere/seed.jsonl") == "elsewhere/seed.jsonl"
