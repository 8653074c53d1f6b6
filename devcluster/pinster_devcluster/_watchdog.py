"""Stops a cluster when the process that owns it dies without calling ``down``.

A test session killed by a timeout or SIGKILL never runs its fixture finalizers; without
this, its control plane would keep running (and using ~450 MiB) forever. Started by
:func:`watch` as ``python -m pinster_devcluster._watchdog``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pinster_devcluster import _procs, paths
from pinster_devcluster._cluster import DevCluster

_POLL = 0.5


def watch(cluster: DevCluster, owner_pid: int | None = None) -> _procs.ProcessRecord:
    """Start a watchdog that runs ``cluster.down()`` once ``owner_pid`` (default: this
    process) has ended. Stop it with ``_procs.stop(record, 1)`` after a normal ``down``."""
    pid = os.getpid() if owner_pid is None else owner_pid
    owner = _procs.ProcessRecord(pid, _start_time(pid))
    argv = [
        sys.executable,
        "-m",
        __name__,
        f"--state-dir={cluster.state_dir}",
        f"--bin-dir={cluster.bin_dir}",
        f"--owner-pid={owner.pid}",
        f"--owner-start={owner.start_time}",
    ]
    log = paths.component_log(cluster.state_dir, "watchdog")
    return _procs.spawn(argv, log=log, env=os.environ)


def _start_time(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rfind(")") + 2 :].split()[19])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pinster_devcluster._watchdog")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--bin-dir", type=Path, required=True)
    parser.add_argument("--owner-pid", type=int, required=True)
    parser.add_argument("--owner-start", type=int, required=True)
    args = parser.parse_args(argv)
    owner = _procs.ProcessRecord(args.owner_pid, args.owner_start)
    while _procs.is_alive(owner):
        time.sleep(_POLL)  # polling: a non-child's exit cannot be waited for otherwise
    print(f"owner pid {owner.pid} is gone: stopping the cluster", flush=True)
    DevCluster(args.state_dir, args.bin_dir).down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
