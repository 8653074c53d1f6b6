"""Running the product's own processes for e2e tests: ``pinster-images operator`` and
``pinster-images ingress`` as real subprocesses, with their output in a log file.

:class:`Service` starts one, waits until its health endpoint answers, and stops it
(SIGTERM, then SIGKILL); :meth:`Service.kill` is the SIGKILL of a crash test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port
from tests.support.waiting import wait_for

BIN = Path(sys.executable).parent

#: What the chart gives the Job pods: a service account that may read ImageUploads
#: (``PINSTER_JOB_SERVICE_ACCOUNT=pinster-job``); apply it in the test namespace.
JOB_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: pinster-job}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pinster-job}
rules:
  - apiGroups: [images.pinster.io]
    resources: [imageuploads]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: pinster-job}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pinster-job}
subjects:
  - {kind: ServiceAccount, name: pinster-job}
"""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Service:
    """One ``pinster-images <command>`` subprocess."""

    command: str
    env: Mapping[str, str]
    log_file: Path
    health_url: str
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 60) -> Service:
        env = {**os.environ, **self.env}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "pinster-images"), self.command, *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.command} exited with {self.process.returncode}:\n{self.logs()[-4000:]}"
                )
            return _healthy(self.health_url)

        wait_for(up, timeout=timeout, what=f"{self.command} to be healthy")
        return self

    def logs(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as in a node failure."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)

    def restart(self) -> Service:
        self.stop()
        return self.start()


def operator_service(env: Mapping[str, str], log_dir: Path) -> Service:
    """The operator with its liveness endpoint on a free port, metrics off."""
    port = free_port()
    return Service(
        "operator",
        {**env, "PINSTER_HEALTH_PORT": str(port), "PINSTER_METRICS_PORT": "0"},
        log_dir / "operator.log",
        f"http://127.0.0.1:{port}/healthz",
    )


def ingress_service(env: Mapping[str, str], log_dir: Path) -> Service:
    port = free_port()
    service = Service(
        "ingress",
        {**env, "PINSTER_INGRESS_HOST": "127.0.0.1", "PINSTER_INGRESS_PORT": str(port)},
        log_dir / "ingress.log",
        f"http://127.0.0.1:{port}/healthz",
    )
    return service
