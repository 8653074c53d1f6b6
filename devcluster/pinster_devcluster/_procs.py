"""Starting and stopping component processes, identified by pid *and* start time.

A pid alone is not an identity: after a reboot or a long time it can belong to an
unrelated process. Each record keeps the start time from ``/proc/<pid>/stat`` (clock
ticks since boot), and nothing is signalled unless both still match. Every component
runs in its own session, so whatever it spawns is found again by session id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    start_time: int
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Stat:
    pid: int
    state: str
    ppid: int
    session: int
    start_time: int


def _stat(pid: int) -> _Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    return _Stat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        session=int(fields[3]),
        start_time=int(fields[19]),
    )


def _live_stat(pid: int) -> _Stat | None:
    stat = _stat(pid)
    # A zombie has exited; it only waits for its parent to collect the status.
    if stat is None or stat.state in ("Z", "X"):
        _reap(pid)
        return None
    return stat


#: Popen objects of the processes this process started: kept so that they are reaped
#: (no zombies, no ResourceWarning) and their exit codes can be told.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    # Collect our own exited children so they do not linger as zombies.
    child = _children.get(pid)
    if child is not None:
        child.poll()
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def exit_code(pid: int) -> int | None:
    """The exit status of a process this process started and which has ended."""
    child = _children.get(pid)
    return None if child is None else child.poll()


def _all_stats() -> list[_Stat]:
    stats = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _live_stat(int(entry))
            if stat is not None:
                stats.append(stat)
    return stats


def is_alive(record: ProcessRecord) -> bool:
    stat = _live_stat(record.pid)
    return stat is not None and stat.start_time == record.start_time


def spawn(
    argv: Sequence[str], *, log: Path, env: Mapping[str, str], cwd: Path | None = None
) -> ProcessRecord:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(
            f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode()
        )
        out.flush()
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    _children[process.pid] = process
    stat = _stat(process.pid)
    # Popen returns after exec, so the stat exists unless the process already died.
    start = stat.start_time if stat is not None else -1
    return ProcessRecord(pid=process.pid, start_time=start, argv=tuple(argv))


def write_record(path: Path, record: ProcessRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)


def read_record(path: Path) -> ProcessRecord | None:
    try:
        data = json.loads(path.read_text())
        return ProcessRecord(int(data["pid"]), int(data["start_time"]), tuple(data["argv"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # A torn or hand-edited file identifies nothing: never signal on its say-so.
        return None


def family(record: ProcessRecord) -> list[ProcessRecord]:
    """The process itself (if it is still the recorded one), its descendants, and every
    process left in its session, as records that can be signalled safely later."""
    stats = _all_stats()
    by_parent: dict[int, list[_Stat]] = {}
    for stat in stats:
        by_parent.setdefault(stat.ppid, []).append(stat)
    found: dict[int, _Stat] = {}
    leader = next((s for s in stats if s.pid == record.pid), None)
    if leader is not None and leader.start_time != record.start_time:
        # The pid was recycled. Linux never hands out a pid still in use as a session
        # id, so nothing of the recorded session can be left either.
        return []
    if leader is not None:
        found[leader.pid] = leader
        queue = [leader.pid]
        while queue:
            for child in by_parent.get(queue.pop(), []):
                if child.pid not in found:
                    found[child.pid] = child
                    queue.append(child.pid)
    for stat in stats:
        # Same session: started by the leader, even if orphaned since.
        if stat.session == record.pid and stat.start_time >= record.start_time:
            found.setdefault(stat.pid, stat)
    return [ProcessRecord(s.pid, s.start_time) for s in found.values()]


def _signal(records: Iterable[ProcessRecord], signum: signal.Signals) -> None:
    for rec in records:
        if is_alive(rec):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(rec.pid, signum)


def wait_gone(records: Sequence[ProcessRecord], timeout: float) -> list[ProcessRecord]:
    """Wait until none of ``records`` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [rec for rec in records if is_alive(rec)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def stop(record: ProcessRecord, grace: float) -> list[ProcessRecord]:
    """SIGTERM the process, wait up to ``grace`` seconds, then the rest of its family;
    SIGKILL whatever is left. Returns the family as it was before the first signal."""
    members = family(record)
    leader = [m for m in members if m.pid == record.pid]
    others = [m for m in members if m.pid != record.pid]
    # The leader first, so that it can stop what it started itself (etcd's clean close).
    _signal(leader, signal.SIGTERM)
    wait_gone(leader, grace)
    _signal(others, signal.SIGTERM)
    alive = wait_gone(members, min(grace, 2.0) if leader else grace)
    _signal(alive, signal.SIGKILL)
    still = wait_gone(alive, 5.0)
    if still:
        raise RuntimeError(f"processes survived SIGKILL: {[rec.pid for rec in still]}")
    return members
