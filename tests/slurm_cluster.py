"""A throw-away single-node SLURM on loopback, for tests (README: "SLURM").

Starts its own munged (own key and socket), slurmctld and slurmd from Debian's packages, all
state under one folder, and stops exactly the daemons it started. Two fake GPUs are declared as
gres whose File= are character devices (mknod c 1 3: /dev/null's numbers), so `--gpus=1` jobs
schedule; MinJobAge is high so that squeue still knows finished jobs (there is no slurmdbd, hence
no sacct); DefMemPerCPU lets jobs share the node.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scancel"]


def missing_binaries() -> list[str]:
    paths = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [b for b in BINARIES if shutil.which(b, path=paths) is None]


def _which(name: str) -> str:
    paths = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(name, path=paths)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 2, memory_mb: int = 4000, gpus: int = 2, partition: str = "test"):
        self.root = Path(root)
        self.cpus, self.memory_mb, self.gpus, self.partition = cpus, memory_mb, gpus, partition
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        # The job-step executor inside each job calls srun with every SLURM_* variable but a few
        # removed, SLURM_CONF included; real clusters read /etc/slurm or run configless. A srun
        # wrapper first on PATH puts our config back.
        self.bin = self.root / "bin"
        path = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}

    # -- configuration --------------------------------------------------------------------------
    def _write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "munge", "dev"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o755)  # munged wants its socket reachable by all
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        devices = []
        for i in range(self.gpus):
            dev = r / "dev" / f"fakegpu{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | __import__("stat").S_IFCHR, os.makedev(1, 3))
            devices.append(str(dev))
        (r / "gres.conf").write_text("".join(f"NodeName=localhost Name=gpu File={d}\n" for d in devices))
        self.bin.mkdir(exist_ok=True)
        wrapper = self.bin / "srun"
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_which("srun")} "$@"\n')
        wrapper.chmod(0o755)
        user = __import__("getpass").getuser()
        self.conf.write_text(f"""\
ClusterName=nondettest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket
SlurmUser={user}
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
MinJobAge=3600
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
LaunchParameters=enable_nss_slurm
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")  # noqa: E501

    # -- life cycle -----------------------------------------------------------------------------
    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self._write_config()
        r = self.root
        self._start(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--key-file={r}/munge/munge.key",
                f"--socket={r}/munge/munge.socket",
                f"--pid-file={r}/munge/munged.pid",
                f"--log-file={r}/munge/munged.log",
                f"--seed-file={r}/munge/munged.seed",
            ],
        )
        self._wait(lambda: (r / "munge/munge.socket").exists(), timeout, "munged socket")
        self._start("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._start("slurmd", [_which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait(self._node_idle, timeout, "node localhost idle in sinfo")
        return self

    def _node_idle(self) -> bool:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.logs()}")
        out = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False, timeout=10)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed")

    def _wait(self, ready, timeout: float, what: str) -> None:
        t0 = time.monotonic()
        while not ready():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"SLURM test cluster: no {what} after {timeout}s\n{self.logs()}")
            time.sleep(0.3)

    def run(self, cmd: list[str], check: bool = True, timeout: float = 30):
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and out.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr}")
        return out

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for name in ("munged.out", "munge/munged.log", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            p = self.root / name
            if p.exists():
                parts.append(f"--- {name} ---\n{p.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def stop(self, timeout: float = 15) -> None:
        """Stop the daemons this object started (their own process groups), in reverse order."""
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout)
        self.procs.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
