"""One container as a local process: its own session (so its whole tree can be signalled),
output appended to its log file, and a pid file so a restarted agent can clean up."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

#: The exit code a runtime reports when the command cannot be started.
START_ERROR_EXIT = 128


class StartError(Exception):
    """The command cannot be started (missing executable, bad working directory)."""


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Process:
    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: str | None,
        log: Path,
        pid_file: Path,
    ) -> None:
        if not argv:
            raise StartError(
                "the devcluster node runs commands locally and never pulls images: "
                "set the container's command"
            )
        executable = shutil.which(argv[0], path=env.get("PATH", os.defpath))
        if executable is None:
            raise StartError(
                f"executable {argv[0]!r} not found on PATH: the devcluster node runs the "
                "container's command as a local process (images are not pulled)"
            )
        if cwd is not None and not Path(cwd).is_dir():
            raise StartError(f"workingDir {cwd!r} does not exist on the devcluster node")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self._popen = subprocess.Popen(
                argv,
                executable=executable,  # argv[0] stays as written, as a runtime's exec does
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self._popen.pid
        self._pid_file = pid_file
        pid_file.write_text(json.dumps({"pid": self.pid, "start": _start_time(self.pid)}))

    def poll(self) -> int | None:
        """The exit code once exited (128 + signal for a signalled process), else None."""
        code = self._popen.poll()
        if code is None:
            return None
        with contextlib.suppress(FileNotFoundError):
            self._pid_file.unlink()
        return 128 - code if code < 0 else code

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def stop(self, grace: float) -> int:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds; the exit code."""
        if self.poll() is None:
            self.signal(signal.SIGTERM)
            deadline = time.monotonic() + max(grace, 0)
            while self.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        if (code := self.poll()) is None:
            self.signal(signal.SIGKILL)
            self._popen.wait()
            code = self.poll()
        # Children that left the group's leader behind still share its process group.
        self.signal(signal.SIGKILL)
        assert code is not None
        return code


def kill_stale(pods_root: Path) -> int:
    """Kill processes recorded by a previous agent run that are still alive."""
    killed = 0
    for pid_file in pods_root.glob("*/*/*.pid"):
        try:
            record = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            continue
        pid = int(record.get("pid", 0))
        if pid > 0 and _start_time(pid) == record.get("start"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed += 1
        pid_file.unlink(missing_ok=True)
    return killed
