"""Config errors name the file and key; records are validated and written atomically; prompts are strict."""

from __future__ import annotations

from typing import Literal, Optional

import pyarrow.parquet as pq
import pytest

from humpback.core import records
from humpback.core.config import ConfigError, EngineConfig, GenerationConfig, StrictModel, load_config
from humpback.core.prompts import PromptError, chat_messages, render


class _Stage(StrictModel):
    engine: EngineConfig = EngineConfig()
    generation: GenerationConfig = GenerationConfig()
    name: str = "x"


def test_unknown_key_names_file_and_key(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("engine:\n  kind: transformers\n  batchsize: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(_Stage, f)
    assert str(f) in str(e.value) and "engine.batchsize: unknown key" in str(e.value)


def test_wrong_type_names_key_and_value(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("generation:\n  temperature: hot\n")
    with pytest.raises(ConfigError, match=r"generation.temperature.*'hot'"):
        load_config(_Stage, f)


def test_bad_yaml_and_missing_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_Stage, f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(_Stage, tmp_path / "nope.yaml")


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("generation:\n  max_tokens: 64\n")
    cfg = load_config(_Stage, f, overrides={"generation.temperature": 0.2, "name": None})
    assert cfg.generation.max_tokens == 64 and cfg.generation.temperature == 0.2
    assert cfg.generation.top_p == 0.9 and cfg.name == "x"  # paper default, None override ignored


def test_set_options_are_dotted_yaml_overrides_checked_against_the_model(tmp_path):
    from humpback.core.config import parse_set_options, with_set_options

    sets = parse_set_options(_Stage, ["generation.temperature=0.2", "generation.stop=[a, b]", "name=y"])
    assert sets == {"generation.temperature": 0.2, "generation.stop": ["a", "b"], "name": "y"}
    f = tmp_path / "run.yaml"
    f.write_text("generation:\n  temperature: 0.9\n  top_p: 0.5\n")
    cfg = load_config(_Stage, f, with_set_options(_Stage, ["generation.temperature=0.2", "name=y"], {"name": "z"}))
    assert (cfg.generation.temperature, cfg.generation.top_p, cfg.name) == (0.2, 0.5, "z")  # named options win
    for item, message in [("generation.temprature=1", "unknown key 'generation.temprature'"),
                          ("nope.x=1", "unknown key 'nope'"), ("name.x=1", "'name' is a value, not a section"),
                          ("temperature", "expected KEY=VALUE"), ("name=[1", "not valid YAML")]:
        with pytest.raises(ConfigError) as e:
            parse_set_options(_Stage, [item])
        assert str(e.value).startswith(f"--set {item}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_overrides_through_a_value_that_is_not_a_mapping_name_the_key(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("generation: 3\n")
    with pytest.raises(ConfigError, match=r"run.yaml: generation: must be a mapping of keys"):
        load_config(_Stage, f, {"generation.temperature": 0.1})


def test_run_set_option_reaches_the_run_config_and_rejects_unknown_keys(tmp_path):
    from click.testing import CliRunner

    from humpback.cli import main

    f = tmp_path / "run.yaml"
    f.write_text("name: t\n")
    result = CliRunner().invoke(main, ["run", str(f), "--set", "rounds=1", "--set", "train.epochz=2"])
    assert result.exit_code == 2 and result.output.strip() == "error: --set train.epochz=2: unknown key 'train.epochz'"
    result = CliRunner().invoke(main, ["run", str(f), "--set", "rounds=0"])
    assert result.exit_code == 2 and "rounds" in result.output  # the value reached RunConfig's validation


def test_cli_options_take_type_choices_and_default_from_the_config_field():
    import click
    from click.testing import CliRunner

    from humpback.core.config import config_option, config_overrides

    class Inner(StrictModel):
        dtype: Literal["bfloat16", "float32"] = "bfloat16"
        size: int = 16

    class Outer(StrictModel):
        inner: Inner = Inner(size=4)
        ratio: Optional[float] = None
        flag: bool = False

    @click.command()
    @config_option(Outer, "inner.dtype", "--dtype", help="Model dtype.")
    @config_option(Outer, "inner.size", "--size", help="How many.")
    @config_option(Outer, "ratio", "--ratio", help="A share.")
    @config_option(Outer, "flag", "--flag", help="On or off.")
    @click.option("--name", default="x")
    def cmd(name, **options):
        click.echo(f"{name} {sorted(config_overrides(options).items())} {options}")

    runner = CliRunner()
    shown = runner.invoke(cmd, ["--help"]).output
    assert "[bfloat16|float32]" in shown and "Model dtype. [bfloat16]" in shown
    assert "How many. [4]" in shown  # the default under Outer's own defaults, not Inner's 16
    assert "On or off.\n" in shown  # a flag shows no default
    given = runner.invoke(cmd, ["--dtype", "float32", "--ratio", "0.5", "--flag"]).output
    assert given.strip() == ("x [('flag', True), ('inner.dtype', 'float32'), ('inner.size', None), ('ratio', 0.5)] "
                             "{}")
    assert runner.invoke(cmd, ["--dtype", "float16"]).exit_code == 2  # not a choice of the field
    assert runner.invoke(cmd, ["--size", "many"]).exit_code == 2  # not an int
    with pytest.raises(KeyError, match="no key inner.depth"):
        config_option(Outer, "inner.depth", "--depth")


def test_records_validate_and_roundtrip(tmp_path):
    rows = [{"id": "a", "instruction": "Do x", "output": "Done", "source": "t"}]
    path = records.write_parquet(rows, tmp_path / "seed.parquet", "seed")
    assert records.read_rows(path, "seed") == rows
    assert pq.read_schema(path).equals(records.SEED_SCHEMA, check_metadata=False)
    with pytest.raises(records.RecordError, match="unknown field"):
        records.write_parquet([{**rows[0], "extra": 1}], tmp_path / "x.parquet", "seed")
    with pytest.raises(records.RecordError, match="field 'char_start'"):
        records.write_parquet([{"segment_id": "s", "char_start": "zero"}], tmp_path / "y.parquet", "segment")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.parquet"

    def rows():
        yield {"id": "a", "instruction": "i", "output": "o", "source": "s"}
        raise KeyboardInterrupt  # a kill in the middle of producing rows

    with pytest.raises(KeyboardInterrupt):
        records.write_parquet(rows(), target, "seed")
    assert list(tmp_path.iterdir()) == []
    records.write_parquet([{"id": "a", "instruction": "i", "output": "o", "source": "s"}], target, "seed")
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_read_folder_of_shards_skips_temp_files(tmp_path):
    for i in range(3):
        records.write_parquet([{"id": str(i), "instruction": "i", "output": "o", "source": "s"}],
                              tmp_path / f"{i:05d}.parquet", "seed")
    (tmp_path / ".00009.parquet.tmp.parquet").write_bytes(b"garbage")
    assert [r["id"] for r in records.read_rows(tmp_path, "seed")] == ["0", "1", "2"]


def test_read_records_reads_any_file_or_folder_with_locations(tmp_path):
    import json

    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / ".work").mkdir()
    records.write_parquet([{"id": "p0", "instruction": "i", "output": "o", "source": None}], d / "a.parquet", "seed")
    (d / "sub" / "b.jsonl").write_text('{"id": "j0"}\n\n{"id": "j1"}\n')
    (d / ".work" / "c.jsonl").write_text('{"id": "hidden"}\n')
    (d / "stats.json").write_text("{}")  # not records: a folder's .json files are left out
    got = [(str(where), where.number, row["id"]) for where, row in records.read_records(d)]
    assert got == [(f"{d / 'a.parquet'} row 0", 1, "p0"), (f"{d / 'sub' / 'b.jsonl'}:1", 1, "j0"),
                   (f"{d / 'sub' / 'b.jsonl'}:3", 3, "j1")]
    arr = tmp_path / "alpaca.json"
    arr.write_text(json.dumps([{"id": "x"}, {"id": "y"}]))
    assert [(str(w), r["id"]) for w, r in records.read_records(arr)] == [(f"{arr} item 0", "x"), (f"{arr} item 1", "y")]
    arr.write_text(json.dumps([{"id": "x"}, 3]))
    with pytest.raises(records.RecordError, match=r"alpaca.json: item 1: expected a JSON object, got int"):
        list(records.read_records(arr))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        records.read_records(tmp_path / "missing")  # at the call, not when first iterated
    with pytest.raises(records.RecordError, match=r"notes.txt: expected a .parquet or .jsonl file"):
        (tmp_path / "notes.txt").write_text("x")
        records.read_records(tmp_path / "notes.txt")
    (tmp_path / "notes.txt").write_text('{"id": "t"}\n')
    assert [r["id"] for _, r in records.read_records(tmp_path / "notes.txt", "jsonl")] == ["t"]  # --format jsonl


def test_score_schema_holds_nulls_and_distributions(tmp_path):
    row = {"pair_id": "p", "scorer": "rubric", "model": "m", "score": None,
           "score_probs": [0.1, 0.1, 0.2, 0.3, 0.3], "expected_score": 3.6, "pmi": None, "rationale": None}
    path = records.write_parquet([row], tmp_path / "s.parquet", "score")
    assert records.read_rows(path) == [row]


def test_prompt_rendering_is_strict_and_sandboxed(tmp_path):
    text = render("backward", output="Paris is the capital of France.")
    assert "Paris is the capital of France." in text
    with pytest.raises(PromptError, match="'output' is undefined"):
        render("backward")
    with pytest.raises(PromptError, match="not found"):
        render("no_such_template")
    evil = tmp_path / "evil.jinja"
    evil.write_text("{{ output.__class__.__mro__[1].__subclasses__() }}")
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        render(str(evil), output="x")
    user = tmp_path / "mine.jinja"
    user.write_text("Q: {{ q }}")
    assert render(str(user), q="why?") == "Q: why?"


def test_chat_messages():
    assert chat_messages("hi") == [{"role": "user", "content": "hi"}]
    assert chat_messages("hi", system="S")[0] == {"role": "system", "content": "S"}


def test_cli_lists_commands_and_models():
    from click.testing import CliRunner

    from humpback.cli import main

    out = CliRunner().invoke(main, ["--help"])
    assert out.exit_code == 0 and "models" in out.output and "generate" in out.output
    out = CliRunner().invoke(main, ["models"])
    assert out.exit_code == 0 and "smollm2-135m-instruct" in out.output and "converted" in out.output
