"""The box a researcher's training script runs in (nondet.workflow.script): a scratch working
folder per job, its own process group, a timeout, and an end to every process it started.

- :func:`scratch`: ``.<output name>.work`` beside the job's output: removed before the job (what a
  killed run left), kept when the job fails (side files for the log), removed when it succeeds;
- :func:`run_command`: a command in its own session (process group) with the scratch folder as
  its working folder and its output in a file (a child that keeps stdout open cannot hold the job);
  on return, timeout or SIGTERM/SIGINT the whole group is killed;
- :func:`call_with_timeout`: a ``train:`` callable in this process with the same timeout
  (SIGALRM) and working folder;
- :func:`collapse_progress`: carriage-return progress bars reduced to their last state.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
from pathlib import Path

#: models.<name>.timeout when the config gives none: a day per replica.
DEFAULT_TIMEOUT = 86400.0

_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a script's process group
_groups: set[int] = set()  # process groups of the commands running now (ended on SIGTERM)


class ScriptTimeout(Exception):
    """A script ran past its timeout."""


def scratch(out_path) -> Path:
    """The job's scratch folder beside ``out_path``, emptied of what an earlier (killed) run left."""
    out_path = Path(out_path)
    work = out_path.parent / f".{out_path.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def collapse_progress(text: str) -> list[str]:
    """Lines of ``text`` with each carriage-return rewrite (tqdm bars) reduced to its last state."""
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        parts = [p for p in line.split("\r") if p.strip()]
        lines.append(parts[-1] if parts else line.strip("\r"))
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def absolute_words(command: str) -> str:
    """``command`` with each bare word that names an existing relative file or folder (e.g.
    examples/train.py) made absolute, so the command runs the same from its scratch folder; a
    module name after ``-m`` (``python -m nondet``) stays a module name."""

    def repl(m):
        word = m.group(0)
        if os.path.isabs(word) or not os.path.exists(word) or word in (".", ".."):
            return word
        if re.search(r"(^|\s)-m\s+$", m.string[: m.start()]):
            return word
        return shlex.quote(os.path.abspath(word))

    return re.sub(r"(?<=\s)[^\s'\"{}|&;<>()=$`\\]+(?=\s|$)|^[^\s'\"{}|&;<>()=$`\\]+(?=\s|$)", repl, command)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when this job's process dies (Linux prctl PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_group(pgid: int, grace: float = 0.5) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        if sig == signal.SIGTERM:
            threading.Event().wait(grace)


@contextlib.contextmanager
def signals_end_groups():
    """While inside: SIGTERM and SIGINT (Snakemake stopping the job) kill every running script's
    process group, then end this process as the signal would (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for pgid in list(_groups):
            kill_group(pgid)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_command(command: str, cwd, env: dict, log_file, timeout: float) -> int:
    """Run ``command`` through the shell in its own process group in ``cwd``, its stdout and
    stderr into ``log_file``; returns its exit status. Raises ScriptTimeout after ``timeout``
    seconds. Every process left in the group is killed when it returns, times out or raises."""
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    _groups.add(proc.pid)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ScriptTimeout(timeout) from None
    finally:  # the command's shell first (a grace period to exit), then whatever is left of its group
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_GRACE)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _groups.discard(proc.pid)


@contextlib.contextmanager
def working_folder(path):
    """The process's working folder is ``path`` while inside (side files land there)."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def alarm(timeout: float):
    """Raise ScriptTimeout in the main thread after ``timeout`` seconds (no limit elsewhere)."""
    if threading.current_thread() is not threading.main_thread() or not timeout:
        yield
        return

    def handler(signum, frame):
        raise ScriptTimeout(timeout)

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, float(timeout))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
