"""A bed dies with the process that started it: ``python -m testbed watch --dir D --owner PID``
waits for the owner to exit, however it exits (``kill -9`` included), then stops the bed in D as
``down`` would: every recorded process group, the real node's containers, shims, mounts and
network. The bed's components run in sessions of their own (a signal to the owner's group must
not reach them half-way), so without this they outlive a killed owner: the kube-apiserver loops
on its dead etcd and the kubelet's mounts stay, refusing the next bed the machine's real node.

`make cluster-up` starts no watchdog: its bed is meant to outlive the command.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

PID_FILE = "watchdog.pid"
_TESTS_DIR = Path(__file__).resolve().parents[1]  # where the `testbed` package is importable


def start(directory: Path, owner_pid: int) -> int:
    """Starts the watchdog for the bed in ``directory`` (in a session of its own, so that a
    signal to the owner's process group spares it) and records its pid; returns the pid."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(_TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(directory / "logs" / "watchdog.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "testbed", "watch", "--dir", str(directory), "--owner", str(owner_pid)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
    (directory / PID_FILE).write_text(str(process.pid))
    return process.pid


def stop(directory: Path) -> None:
    """Stops the bed's watchdog (the bed is being stopped on purpose); never the caller itself,
    nor a process that merely reuses the recorded pid."""
    pid_file = directory / PID_FILE
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text())
        if pid != os.getpid() and _is_watchdog_of(pid, directory):
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)  # our own child when the owner stops its bed
    pid_file.unlink(missing_ok=True)


def _is_watchdog_of(pid: int, directory: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"watch" in argv and b"testbed" in argv and str(directory).encode() in argv


def wait_for_exit(pid: int) -> None:
    """Blocks until process ``pid`` has exited. A pidfd names the process itself, so a later
    process that reuses the number is never mistaken for the owner."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # gone already
    try:
        select.select([pidfd], [], [])
    finally:
        os.close(pidfd)


def watch(directory: Path, owner_pid: int) -> str:
    """Waits for the owner to exit, then stops the bed; returns what it stopped, for the log."""
    wait_for_exit(owner_pid)
    from .bed import stop_recorded  # imported late: bed.py imports this module
    from .node import cleanup
    stopped = stop_recorded(directory)
    if directory.exists():
        cleanup(directory)  # also when the owner died before the first component was recorded
    return f"owner {owner_pid} exited; stopped: {', '.join(stopped) or 'nothing recorded'}"
