"""Pod and container status as a kubelet reports it (pure; unit-tested)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: The kubelet reads at most this much of a termination message file.
MESSAGE_LIMIT = 4096
#: FallbackToLogsOnError: the kubelet takes the last 80 lines, at most 2048 bytes.
LOG_FALLBACK_LINES, LOG_FALLBACK_BYTES = 80, 2048
#: The exit code of a process ended by SIGKILL.
KILLED_EXIT = 137


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    """What the agent knows of one container of a Pod."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    restart_count: int = 0
    ready: bool = False
    #: False while a startupProbe has not passed yet
    startup_passed: bool = True
    last_terminated: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def terminated_dict(self) -> dict[str, Any]:
        terminated: dict[str, Any] = {
            "exitCode": self.exit_code if self.exit_code is not None else -1,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": f"local://{self.pid}" if self.pid else None,
        }
        if self.message:
            terminated["message"] = self.message
        return {k: v for k, v in terminated.items() if v is not None}

    def to_status(self) -> dict[str, Any]:
        # Explicit nulls: status is sent as a strategic merge patch, which would otherwise
        # keep the previous state beside the new one.
        state: dict[str, Any] = {"running": None, "terminated": None, "waiting": None}
        if self.state == "running":
            state["running"] = {"startedAt": self.started_at}
        elif self.state == "terminated":
            state["terminated"] = self.terminated_dict()
        else:
            state["waiting"] = {"reason": self.reason, "message": self.message or None}
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": f"local://{self.image}",
            "ready": self.ready,
            "started": self.state == "running" and self.startup_passed,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated},
        }
        if self.pid:
            status["containerID"] = f"local://{self.pid}"
        return status

    def mark_running(self, pid: int) -> None:
        if self.state == "terminated":
            self.last_terminated = self.terminated_dict()
            self.restart_count += 1
        self.state, self.reason, self.message = "running", "", ""
        self.pid, self.started_at, self.finished_at, self.exit_code = pid, now(), None, None

    def mark_terminated(self, exit_code: int, message: str, reason: str | None = None) -> None:
        self.state, self.exit_code, self.finished_at = "terminated", exit_code, now()
        self.reason = reason or ("Completed" if exit_code == 0 else "Error")
        self.message, self.ready = message, False

    def restore(self, old: Mapping[str, Any], ended_message: str) -> None:
        """Take over the status an earlier agent run wrote: restart counts and finished
        states stay; a container that was running has been killed since."""
        self.restart_count = int(old.get("restartCount") or 0)
        self.last_terminated = (old.get("lastState") or {}).get("terminated")
        state = old.get("state") or {}
        if terminated := state.get("terminated"):
            self.state, self.exit_code = "terminated", int(terminated.get("exitCode", -1))
            self.reason = terminated.get("reason") or (
                "Completed" if self.exit_code == 0 else "Error"
            )
            self.message = terminated.get("message") or ""
            self.started_at = terminated.get("startedAt")
            self.finished_at = terminated.get("finishedAt")
            self.pid = _pid(terminated.get("containerID"))
        elif running := state.get("running"):
            self.started_at, self.pid = running.get("startedAt"), _pid(old.get("containerID"))
            self.mark_terminated(KILLED_EXIT, ended_message, "Error")

    def mark_waiting(self, reason: str, message: str = "") -> None:
        if self.state == "terminated":
            self.last_terminated = self.terminated_dict()
        self.state, self.reason, self.message, self.ready = "waiting", reason, message, False


def _pid(container_id: object) -> int | None:
    """The pid in a ``local://<pid>`` container ID."""
    text = str(container_id or "")
    return (
        int(text[len("local://") :]) if text.startswith("local://") and text[8:].isdigit() else None
    )


def termination_message(path: Path, policy: str, exit_code: int, log: Path) -> str:
    """The message a terminated container reports: its termination-message file (capped),
    or with FallbackToLogsOnError the tail of its log when it failed and wrote none."""
    message = ""
    try:
        with path.open("rb") as handle:
            message = handle.read(MESSAGE_LIMIT).decode("utf-8", "replace")
    except OSError:
        pass
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0:
        try:
            tail = log.read_bytes()[-64 * 1024 :].decode("utf-8", "replace")
        except OSError:
            tail = ""
        lines = tail.splitlines()[-LOG_FALLBACK_LINES:]
        message = "\n".join(lines)[-LOG_FALLBACK_BYTES:]
    return message


def condition(type_: str, value: bool, reason: str | None = None) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if value else "False",
        "reason": reason,  # None clears a previous reason in the merge patch
        "lastProbeTime": None,
        "lastTransitionTime": now(),
    }


def phase_of(containers: list[Container], restart_policy: str, init_failed: bool) -> str:
    """Pod phase from its containers, as the kubelet computes it."""
    if init_failed:
        return "Failed"
    if any(c.state == "running" for c in containers):
        return "Running"
    if containers and all(c.state == "terminated" for c in containers):
        if restart_policy == "Always":
            return "Running"  # about to be restarted
        if all(c.exit_code == 0 for c in containers):
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    if any(c.state == "terminated" for c in containers) or any(c.restart_count for c in containers):
        return "Running"
    return "Pending"
