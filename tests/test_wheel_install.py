"""A non-editable install works: build the wheel, install it into a fresh venv, and run humpback from an empty
folder, far from the repository.

The venv sees the dev venv's installed dependencies through a .pth line (so nothing is downloaded), but not the
repository: a .pth line only adds a folder, the editable install's own .pth finder in that folder is not run, and
the test checks that `humpback` is imported from the new venv. Model conversions come from the shared humpback
cache (HUMPBACK_CACHE as the tests see it), so nothing is converted again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from humpback.core.models import cache_dir

REPO = Path(__file__).resolve().parent.parent
SHIPPED = {  # package data a wheel must carry
    "humpback/resources/boilerplate.jsonl",
    "humpback/resources/configs/quickstart.yaml",
    "humpback/resources/configs/paper.yaml",
    "humpback/resources/configs/rest_quickstart.yaml",
    "humpback/resources/prompts/backward.jinja",
    "humpback/resources/prompts/backward_train.jinja",
    "humpback/resources/prompts/curate_rubric.jinja",
    "humpback/resources/prompts/judge_pairwise.jinja",
    "humpback/resources/prompts/rest_code.jinja",
    "humpback/resources/prompts/rest_math.jinja",
    "humpback/resources/seed/seed.jsonl",
    "humpback/resources/seed/README.md",
}


class Installed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "venv"
        self.bin = self.venv / "bin"
        self.work = root / "work"  # an empty folder, not the repository
        self.seconds: dict[str, float] = {}
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HUMPBACK_PROMPTS", "VIRTUAL_ENV")}
        self.env |= {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(self.venv),
                     "HUMPBACK_CACHE": str(cache_dir()), "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        t0 = time.perf_counter()
        proc = subprocess.run(list(args), cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout)
        self.seconds[" ".join([Path(args[0]).name, *args[1:3]])[:40]] = round(time.perf_counter() - t0, 1)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc


def _build_wheel(out: Path) -> Path:
    """The wheel of a clean copy of the sources (no build/ or egg-info written into the repository)."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "humpback", src / "humpback", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out / "dist"), str(src)], check=True, capture_output=True, text=True, timeout=300)
    [wheel] = (out / "dist").glob("humpback-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    inst = Installed(tmp_path_factory.mktemp("wheel"))
    t0 = time.perf_counter()
    wheel = _build_wheel(inst.root)
    inst.seconds["build wheel"] = round(time.perf_counter() - t0, 1)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert SHIPPED <= names, f"missing from the wheel: {sorted(SHIPPED - names)}"
    assert not [n for n in names if "/seed/parts/" in n]  # the seed's sources stay in the repository
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(inst.venv)], check=True, timeout=120)
    purelib = subprocess.run([str(inst.bin / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    dev = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "humpback-dev-deps.pth").write_text("".join(f"{p}\n" for p in sorted(dev)))
    inst.work.mkdir()
    # pip comes from the dev venv too; --ignore-installed: never touch the editable install it can see there
    inst.run(str(inst.bin / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q",
             str(wheel))
    where = json.loads(inst.run(str(inst.bin / "python"), "-c", (
        "import json, sys, humpback, humpback.core.prompts, humpback.stages.seed; print(json.dumps({"
        "'module': humpback.__file__, 'prompts': str(humpback.core.prompts.BUILTIN_PROMPTS), "
        "'seed': str(humpback.stages.seed.BUILTIN_SEED_PATH), "
        "'finders': [repr(f) for f in sys.meta_path], 'path': sys.path}))")).stdout)
    assert Path(where["module"]).is_relative_to(purelib), where["module"]
    assert Path(where["prompts"]).is_relative_to(purelib) and Path(where["seed"]).is_relative_to(purelib)
    assert not [f for f in where["finders"] if "editable" in f.lower()], where["finders"]
    assert str(REPO) not in where["path"] and os.path.realpath(inst.work) != os.path.realpath(REPO)
    return inst


def test_wheel_install_init_and_run_until_seed(installed):
    inst = installed
    out = inst.run("humpback", "init", "proj").stdout
    config = inst.work / "proj" / "humpback.yaml"
    assert config.is_file() and "path: builtin" in config.read_text()
    assert "humpback run humpback.yaml --until seed" in out
    again = inst.run("humpback", "init", "proj", check=False)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == ["error: proj/humpback.yaml: already exists; pass --force to "
                                                 "overwrite it"]

    inst.run("humpback", "run", "proj/humpback.yaml", "--until", "seed", timeout=600)
    run = inst.work / "runs" / "quickstart"
    manifest = json.loads((run / "manifest.json").read_text())
    assert [s for s in ("corpus", "prepare", "seed") if manifest["stages"][s]["status"] == "done"] == \
        ["corpus", "prepare", "seed"]
    assert manifest["stages"]["seed"]["inputs"].keys() == {"humpback:resources/seed/seed.jsonl"}
    assert manifest["versions"]["humpback"]
    seed, heldout = pq.read_table(run / "seed.parquet"), pq.read_table(run / "seed.heldout.parquet")
    assert (seed.num_rows, heldout.num_rows) == (234, 26)  # the 260 shipped pairs, 10% held out
    assert set(seed.column("source").to_pylist()) == {"builtin"}
    assert (run / "corpus" / "quickstart.jsonl").stat().st_size > 0
    assert list((run / "prepared" / "segments").glob("*.parquet"))
    assert (run / "report.html").is_file()
    print("seconds:", inst.seconds)


@pytest.mark.slow
def test_wheel_install_generate_with_the_backward_template(installed):
    """The shipped backward prompt, rendered by the installed package, on the embedded SmolLM2 (real model)."""
    text = ("Python's venv module creates lightweight virtual environments, each with its own independent set of "
            "packages installed in its site-packages directory.")
    proc = installed.run("humpback", "generate", "--template", "backward", "--temperature", "0", "--max-tokens", "32",
                         text, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) >= 1 and len(lines[0].split()) >= 3, proc.stdout  # an instruction, written by the model
    print("generated:", lines[0], "| seconds:", installed.seconds)
