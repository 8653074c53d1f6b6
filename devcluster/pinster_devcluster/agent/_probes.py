"""Readiness and liveness probes (httpGet, tcpSocket, exec), counted as the kubelet does."""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pinster_devcluster.agent._env import expand


def _port(value: Any, container: Mapping[str, Any]) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"named port {value!r} not declared by the container")


def check(
    probe: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_ip: str,
    env: Mapping[str, str],
    cwd: str | None = None,
) -> bool:
    """One probe attempt. ``exec`` runs in the container's environment and directory, as
    ``kubectl exec`` would; HTTP and TCP go to the Pod IP unless the probe names a host."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            spec = probe["httpGet"]
            host = spec.get("host") or pod_ip
            port = _port(spec["port"], container)
            connection: http.client.HTTPConnection
            if str(spec.get("scheme", "HTTP")).upper() == "HTTPS":
                context = ssl._create_unverified_context()  # noqa: S323 - the kubelet skips verification too
                connection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=context
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
            connection.request("GET", spec.get("path", "/"), headers=headers)
            status = connection.getresponse().status
            connection.close()
            return 200 <= status < 400
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"]
            with socket.create_connection(
                (spec.get("host") or pod_ip, _port(spec["port"], container)), timeout
            ):
                return True
        if "exec" in probe:
            argv = [expand(str(a), env) for a in probe["exec"]["command"]]
            result = subprocess.run(
                argv,
                executable=shutil.which(argv[0], path=env.get("PATH")),
                env=dict(env),
                cwd=cwd,
                timeout=timeout,
                capture_output=True,
                check=False,
            )
            return result.returncode == 0
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired, http.client.HTTPException):
        return False
    return True  # grpc and unknown handlers: not checked on the devcluster node


@dataclass
class ProbeState:
    """Consecutive results of one probe of one container run."""

    probe: Mapping[str, Any]
    started: float
    next_at: float = 0.0
    failures: int = 0
    successes: int = 0
    passing: bool = False

    def due(self, now: float) -> bool:
        if now < self.started + float(self.probe.get("initialDelaySeconds", 0)):
            return False
        return now >= self.next_at

    def record(self, ok: bool, now: float | None = None) -> None:
        clock = time.monotonic() if now is None else now
        self.next_at = clock + float(self.probe.get("periodSeconds", 10))
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.probe.get("successThreshold", 1)):
                self.passing = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= int(self.probe.get("failureThreshold", 3)):
                self.passing = False

    @property
    def failed(self) -> bool:
        return self.failures >= int(self.probe.get("failureThreshold", 3))
