"""The quiet terminal: a stage's output (ours, third-party, child processes) goes to its log file; the terminal
gets one finished line per stage and the summary."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from humpback.core import console
from humpback.core.progress import Meter
from runconfig import tiny_run_config


def test_a_quiet_stage_sends_every_writer_to_its_log(tmp_path, capfd):
    log_file = tmp_path / "logs" / "x.log"
    with console.quiet():
        with console.stage("x", log_file, result="3 things") as shown:
            print("python print")
            sys.stderr.write("python stderr\n")
            logging.getLogger("humpback.test").info("an info line")
            # a child process writes straight to the inherited descriptors
            # (pytest records this process's warnings itself, so the warning is raised there)
            child = ("import sys, warnings; print('child out'); print('child err', file=sys.stderr); "
                     "warnings.warn('a third-party warning')")
            subprocess.run([sys.executable, "-c", child], check=True)
            os.write(2, b"raw fd write\n")
            assert shown.log_path == log_file
    out, err = capfd.readouterr()
    text = log_file.read_text()
    for line in ("python print", "python stderr", "a third-party warning", "child out", "child err", "raw fd write"):
        assert line in text, line
        assert line not in out + err, line
    assert out.strip().startswith("✓ x") and out.strip().endswith("3 things")
    assert not err


def test_outside_quiet_mode_a_stage_changes_nothing(tmp_path, capfd):
    with console.stage("x", tmp_path / "x.log"):
        print("seen")
    assert "seen" in capfd.readouterr().out and not (tmp_path / "x.log").exists()


def test_a_failing_stage_restores_the_terminal_and_logs_the_traceback(tmp_path, capfd):
    log_file = tmp_path / "x.log"
    with console.quiet():
        try:
            with console.stage("x", log_file):
                print("before the error")
                raise ValueError("boom")
        except ValueError:
            pass
    print("after")
    out, _ = capfd.readouterr()
    assert out.strip() == "after"  # the caller reports the error, in its own words
    text = log_file.read_text()
    assert "before the error" in text and "ValueError: boom" in text


def test_meter_rate_ignores_replayed_work_and_feeds_the_live_line(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(console, "progress", lambda m: seen.append(m.line()))
    m = Meter("segments", 10, every_s=None)
    m.update(4, replayed=True)
    assert m.rate == 0 and "4/10" in seen[-1]
    m.update(2, tokens=50, dropped={"not_a_request": 1})
    assert "6/10" in seen[-1] and "dropped not_a_request 1" in seen[-1] and "tok/s" in seen[-1]
    assert m.rate > 0


def _humpback(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUMPBACK_FAULT")}
    return subprocess.run([sys.executable, "-m", "humpback", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_a_default_run_prints_a_short_terminal_and_keeps_the_logs(tmp_path, tiny_model_dir):
    cfg = tiny_run_config(tmp_path, tiny_model_dir, rounds=1)
    root = tmp_path / "run"
    proc = _humpback("run", str(cfg), "--run-dir", str(root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    terminal = proc.stdout + proc.stderr
    stages = ["prepare", "seed", "backward", "eval-backward", "augment", "m0", "curate-r1", "m1", "export"]
    for name in stages:
        assert f"✓ {name}" in terminal, name
        assert (root / "logs" / f"{name}.log").is_file(), name
    # third-party noise stays in the logs: datatrove's banner and stats, weight-loading bars, warnings
    for noise in ("Launching pipeline", "📉", "Loading weights", "Warning", "warn(", "it/s]"):
        assert noise not in terminal, noise
    assert "Launching pipeline" in (root / "logs" / "augment.log").read_text()
    # a stage's own report (prepare's drop table) is in its log, not on the terminal
    assert "documents without a segment" in (root / "logs" / "prepare.log").read_text()
    assert "documents without a segment" not in terminal
    assert len(terminal.splitlines()) < 80, terminal
    assert "stage" in terminal and "total" in terminal  # the stage table at the end

    # -v shows the same logs live
    loud = _humpback("-v", "run", str(cfg), "--run-dir", str(tmp_path / "loud"), "--until", "prepare", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "documents without a segment" in loud.stdout + loud.stderr
    assert not (tmp_path / "loud" / "logs").exists()


def test_on_a_terminal_the_live_line_does_not_echo_the_stage_output(tmp_path):
    import pty

    log_file = tmp_path / "logs" / "x.log"
    code = ("from pathlib import Path\nfrom humpback.core import console\nwith console.quiet():\n"
            f"    with console.stage('x', Path({str(log_file)!r})):\n        print('stage output')\n")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = out.decode(errors="replace")
    assert "✓ x" in text and "stage output" not in text, text
    assert "stage output" in log_file.read_text()
