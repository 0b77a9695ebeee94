"""One writer per run folder and per stage output (humpback.core.locks): a second `humpback run` (or a stage command
writing the same output) is refused at once, naming the holder, and touches nothing; a lock left by a dead
process is taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from humpback.cli import main
from humpback.core.faults import ENV as FAULT_ENV
from humpback.core.faults import RELEASE_ENV
from humpback.core.locks import LockError, holder, locked, output_lock_path, run_lock_path

CORPUS = [{"id": f"d{i}", "text": f"# Part {i}\n\nBasil likes bright light and moist soil; water it when the top of "
                                  f"the soil is dry and pinch off the flowers so it keeps making leaves ({i})."}
          for i in range(2)]


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``root`` with its size, mtime and content: what 'touching nothing' compares."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run_config(tmp: Path, tiny: str) -> Path:
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    seed = tmp / "seed.jsonl"
    seed.write_text(json.dumps({"instruction": "Say hi.", "output": "Hi there, nice to meet you."}) + "\n")
    cfg = tmp / "run.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "base_model": tiny, "rounds": 1, "corpus": {"inputs": [str(corpus)]},
                                   "prepare": {"progress": False, "workers": 1}, "seed": {"path": str(seed)}}))
    return cfg


def _cli(argv: list[str]):
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # main() configures logging onto this invocation's stderr
    try:
        return CliRunner().invoke(main, argv)
    finally:
        root.handlers[:] = saved


def _holder_process(lock: Path) -> subprocess.Popen:
    """A process holding ``lock`` (through humpback.core.locks) until its stdin closes; returns once it holds it."""
    code = ("import sys; from humpback.core.locks import locked\n"
            f"with locked({str(lock)!r}, 'humpback test-holder'):\n"
            "    print('held', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_is_refused_while_the_first_holds_the_folder(tmp_path, tiny_model_dir):
    cfg = _run_config(tmp_path, tiny_model_dir)
    root = tmp_path / "run"
    release = tmp_path / "release"
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV} | {
        FAULT_ENV: "run.stage_done=pause", RELEASE_ENV: str(release), "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, "-m", "humpback", "run", str(cfg), "--run-dir", str(root), "--until",
                              "prepare"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:  # until it stands still after its first stage, holding the folder
            if line.startswith(f"{FAULT_ENV}: paused at run.stage_done"):
                break
        else:
            pytest.fail(f"the first run ended before the fault point: {first.wait()}")
        before = _snapshot(root)
        assert "manifest.json" in before and "prepared/stats.json" in before

        second = _cli(["run", str(cfg), "--run-dir", str(root)])
        assert second.exit_code == 2, second.output
        [line] = [x for x in second.stderr.splitlines() if x.strip()]
        assert line.startswith(f"error: {root.resolve()}: in use by humpback run (pid {first.pid} on "
                               f"{socket.gethostname()}, since 20"), line
        # a stage command writing into the run's stage output is refused too, by the stage's lock
        prepare = _cli(["prepare", str(tmp_path / "corpus.jsonl"), "-o", str(root / "prepared"), "--no-progress"])
        assert prepare.exit_code == 2, prepare.output
        assert f"in use by humpback run stage prepare (pid {first.pid}" in prepare.stderr
        assert _snapshot(root) == before  # neither refused command wrote, moved or removed anything
    finally:
        release.touch()
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert not run_lock_path(root).exists()  # released and removed at the end
    # once it is done, the same command runs (and finds the stage done)
    again = _cli(["run", str(cfg), "--run-dir", str(root), "--until", "prepare"])
    assert again.exit_code == 0, again.output


def test_stage_command_on_a_held_output_is_refused_and_touches_nothing(tmp_path, tiny_model_dir):
    out = tmp_path / "aug"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier result")
    holder_proc = _holder_process(output_lock_path(out))
    before = _snapshot(tmp_path)
    try:
        assert holder(output_lock_path(out))["pid"] == holder_proc.pid
        result = _cli(["augment", str(tmp_path / "no-input-needed"), "--model", tiny_model_dir, "-o", str(out)])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (
            f"error: {tmp_path.resolve()}: in use by humpback test-holder (pid {holder_proc.pid} on "
            f"{socket.gethostname()}, since {holder(output_lock_path(out))['since']}); wait for it to finish or "
            f"stop it (lock file {output_lock_path(out)})")
        assert _snapshot(tmp_path) == before
    finally:
        holder_proc.stdin.close()
        holder_proc.wait(timeout=60)
    assert holder(output_lock_path(out)) is None and not output_lock_path(out).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, tiny_model_dir):
    cfg = _run_config(tmp_path, tiny_model_dir)
    root = tmp_path / "run"
    lock = run_lock_path(root)
    dead = _holder_process(lock)
    dead.kill()  # kill -9 while holding it: the lock file stays, with the dead process's note in it
    dead.wait(timeout=60)
    assert json.loads(lock.read_text())["pid"] == dead.pid
    assert holder(lock) is None  # the kernel released the dead process's flock

    result = _cli(["run", str(cfg), "--run-dir", str(root), "--until", "prepare"])
    assert result.exit_code == 0, result.output
    assert f"taking over the lock left by humpback test-holder (pid {dead.pid}" in result.stderr
    assert "which is gone" in result.stderr
    assert not lock.exists()


def test_locks_are_reentrant_within_a_process_and_exclusive_across(tmp_path):
    lock = tmp_path / "x" / ".lock"
    with locked(lock, "humpback outer"):
        with locked(lock, "humpback inner"):  # a stage of `humpback run` taking a lock the run holds
            assert json.loads(lock.read_text())["command"] == "humpback outer"
        assert lock.exists()
        code = f"from humpback.core.locks import locked\nwith locked({str(lock)!r}, 'other'): pass\n"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode == 1 and "LockError" in other.stderr and f"pid {os.getpid()}" in other.stderr
    assert not lock.exists()
    with pytest.raises(LockError, match="humpback test-holder"):
        proc = _holder_process(lock)
        try:
            with locked(lock, "humpback second"):
                pass
        finally:
            proc.stdin.close()
            proc.wait(timeout=60)
