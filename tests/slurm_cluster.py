"""A real single-node Slurm for the `slurm` tests: munged, slurmctld and slurmd on 127.0.0.1, torn down after.

Debian's `slurm-wlm` and `munge` are installed when missing (root + apt-get), else the tests skip saying why.
Everything the daemons write lives in one temporary folder: their own munge key and socket, state, spool, logs
and free ports, so a cluster left over from somewhere else is not touched. The daemons run as root
(SlurmUser=root), which is what a CI container is; a user elsewhere needs root to run this fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed() -> None:
    if all(shutil.which(c) for c in DAEMONS):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("slurm-wlm/munge missing and cannot be installed here (need root + apt-get): "
                    "apt-get install slurm-wlm munge")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], check=True, env=env)
    # the packages start their own daemons on the default config; ours use their own files
    for svc in ("slurmctld", "slurmd", "munge"):
        subprocess.run(["service", svc, "stop"], capture_output=True)


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 2, mem_mb: int = 8000) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.cpus, self.mem_mb = cpus, mem_mb
        self.munge_socket = root / "munge" / "munge.socket"
        self.env = {"SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        host = socket.gethostname()
        for d in ("state", "spool", "log", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        r = self.root
        self.conf.write_text(f"""\
ClusterName=humpback-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
MpiDefault=none
DefMemPerCPU=1000
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")

    def _start_munge(self) -> None:
        d = self.munge_socket.parent
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        subprocess.run(["munged", "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
                        f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                        f"--seed-file={d / 'munged.seed'}"], check=True)

    def start(self) -> SlurmCluster:
        self._write_conf()
        self._start_munge()
        env = os.environ | self.env
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=env)
        subprocess.run(["slurmd", "-f", str(self.conf)], check=True, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
            if out.returncode == 0 and out.stdout.strip() == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster did not come up: {self.log_tail()}")

    def log_tail(self) -> str:
        return " | ".join(p.read_text()[-800:] for p in sorted((self.root / "log").glob("*.log")))

    def stop(self) -> None:
        # the pids first: a daemon removes its pid file while it shuts down, before it has exited
        pids = [_pid(self.root / "run" / "slurmctld.pid"), _pid(self.root / "run" / "slurmd.pid"),
                _pid(self.munge_socket.parent / "munged.pid")]
        subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True, env=os.environ | self.env)
        subprocess.run(["scontrol", "shutdown"], capture_output=True, env=os.environ | self.env)
        for pid in pids:
            if pid is not None:
                _stop(pid)


def _pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop(pid: int, wait_s: float = 20) -> None:
    """Ask the daemon ``pid`` to stop (scontrol shutdown already did for Slurm's); SIGKILL if it lingers."""
    deadline = time.monotonic() + wait_s
    sig = signal.SIGTERM
    while time.monotonic() < deadline:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        sig = 0
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node cluster; SLURM_CONF points at it for the whole session."""
    ensure_installed()
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    previous = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
