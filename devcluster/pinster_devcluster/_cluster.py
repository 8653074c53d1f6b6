"""``DevCluster``: bring the control plane up, down, and say how it is doing."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pinster_devcluster import _health, _kubeconfig, _procs, paths
from pinster_devcluster._binaries import check_bin_dir, default_bin_dir
from pinster_devcluster._components import (
    AGENT,
    AGENT_MODULE,
    APISERVER,
    COMPONENTS,
    CONTROLLER_MANAGER,
    ETCD,
    NODE_NAME,
    SCHEDULER,
    SERVICE_IP,
    Layout,
    Ports,
)
from pinster_devcluster._pki import generate
from pinster_devcluster._settings import DevClusterSettings
from pinster_images.errors import PermanentError

log = logging.getLogger(__name__)

_LOG_TAIL = 20


class StartupError(PermanentError):
    """A component died or the cluster did not become ready; the message has the log tail."""

    reason = "DevClusterStartFailed"


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    #: running | stopped | crashed (pid file present, process gone) | disabled
    state: str
    pid: int | None
    detail: str
    log: Path


@dataclass(frozen=True)
class UpResult:
    seconds: float
    already_running: bool
    kubeconfig: Path


def log_tail(path: Path, lines: int = _LOG_TAIL) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def agent_available() -> bool:
    """Whether the node agent package is installed (it is written separately)."""
    try:
        return importlib.util.find_spec(f"{AGENT_MODULE}.__main__") is not None
    except ModuleNotFoundError:
        return False


class DevCluster:
    """One local control plane whose files all live in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        bin_dir: Path | None = None,
        *,
        start_timeout: float = 120.0,
        stop_grace: float = 10.0,
        agent: bool = True,
        python: str = sys.executable,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().absolute()
        self.bin_dir = (Path(bin_dir) if bin_dir else default_bin_dir(os.environ)).absolute()
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.agent = agent
        self.python = python

    @classmethod
    def from_settings(cls, settings: DevClusterSettings) -> DevCluster:
        return cls(
            settings.state_dir,
            settings.bin_dir,
            start_timeout=settings.start_timeout,
            stop_grace=settings.stop_grace,
            agent=settings.agent,
        )

    # -- what callers use -----------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return paths.kubeconfig(self.state_dir)

    @property
    def env(self) -> dict[str, str]:
        """The environment for subprocesses: KUBECONFIG set, the binaries first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", os.defpath)])
        return env

    @property
    def server(self) -> str | None:
        ports = Ports.load(paths.cluster_file(self.state_dir))
        return None if ports is None else f"https://127.0.0.1:{ports.apiserver}"

    def components(self) -> tuple[str, ...]:
        """The components this cluster runs (the agent only when enabled and installed)."""
        with_agent = self.agent and agent_available()
        return tuple(c for c in COMPONENTS if c != AGENT or with_agent)

    def up(self) -> UpResult:
        started_at = time.monotonic()
        check_bin_dir(self.bin_dir)
        with self._lock():
            states = {s.name: s.state for s in self.status()}
            running = [c for c in self.components() if states[c] == "running"]
            if len(running) == len(self.components()) and self._apiserver_ready():
                return UpResult(time.monotonic() - started_at, True, self.kubeconfig)
            if any(state in ("running", "crashed") for state in states.values()):
                # Half a cluster is no cluster: start again from a clean process table
                # (etcd's data and the certificates are kept).
                log.info("restarting a partly running devcluster: %s", states)
                self._stop_all()
            self._start()
        return UpResult(time.monotonic() - started_at, False, self.kubeconfig)

    def down(self, *, purge: bool = False) -> list[_procs.ProcessRecord]:
        """Stop every recorded process (and what it spawned); return what was stopped.
        ``purge`` also deletes the state directory (etcd data, certificates, logs)."""
        with self._lock():
            stopped = self._stop_all()
        if purge and self.state_dir.exists():
            if not (
                paths.cluster_file(self.state_dir).exists()
                or paths.pki_dir(self.state_dir).exists()
            ):
                raise PermanentError(
                    f"refusing to delete {self.state_dir}: it does not look like a devcluster state directory"
                )
            shutil.rmtree(self.state_dir)
        return stopped

    def status(self) -> list[ComponentStatus]:
        expected = self.components()
        ports = Ports.load(paths.cluster_file(self.state_dir))
        result = []
        for name in COMPONENTS:
            record = _procs.read_record(paths.pid_file(self.state_dir, name))
            logfile = paths.component_log(self.state_dir, name)
            if record is None:
                state = "stopped" if name in expected else "disabled"
                detail = "" if name in expected else self._disabled_reason()
                result.append(ComponentStatus(name, state, None, detail, logfile))
            elif _procs.is_alive(record):
                detail = self._url(name, ports)
                if name == APISERVER:
                    detail += " (ready)" if self._apiserver_ready() else " (not ready)"
                result.append(ComponentStatus(name, "running", record.pid, detail, logfile))
            else:
                code = _procs.exit_code(record.pid)
                said = f"exit code {code}" if code is not None else "process gone"
                detail = f"pid {record.pid}: {said}; last log lines:\n{log_tail(logfile, 10)}"
                result.append(ComponentStatus(name, "crashed", record.pid, detail, logfile))
        return result

    def healthy(self) -> bool:
        states = {s.name: s.state for s in self.status()}
        return all(states[c] == "running" for c in self.components()) and self._apiserver_ready()

    # -- internals --------------------------------------------------------------------------

    def _disabled_reason(self) -> str:
        if not self.agent:
            return "disabled (PINSTER_DEVCLUSTER_AGENT=false)"
        return f"not installed ({AGENT_MODULE} not importable)"

    @staticmethod
    def _url(name: str, ports: Ports | None) -> str:
        if ports is None:
            return ""
        return {
            ETCD: f"http://127.0.0.1:{ports.etcd_client}",
            APISERVER: f"https://127.0.0.1:{ports.apiserver}",
            CONTROLLER_MANAGER: f"https://127.0.0.1:{ports.controller_manager}/healthz",
            SCHEDULER: f"https://127.0.0.1:{ports.scheduler}/healthz",
            AGENT: f"node {NODE_NAME}",
        }[name]

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Two `up`s at once (two terminals, parallel test sessions) would start two etcds.
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _layout(self) -> Layout:
        ports = Ports.load(paths.cluster_file(self.state_dir))
        if ports is None:
            raise PermanentError(f"no devcluster in {self.state_dir} (run `devcluster up`)")
        return Layout(self.state_dir, self.bin_dir, ports, self.python)

    def _apiserver_ready(self) -> bool:
        try:
            layout = self._layout()
            context = _health.admin_context(layout.pki)
        except (PermanentError, OSError):
            return False
        return _health.ok(f"{layout.server}/readyz", context)

    def _prepare(self) -> Layout:
        previous = Ports.load(paths.cluster_file(self.state_dir))
        layout = Layout(self.state_dir, self.bin_dir, Ports.pick(previous), self.python)
        for directory in (paths.logs_dir, paths.pids_dir, paths.etcd_dir, paths.pods_dir):
            directory(self.state_dir).mkdir(parents=True, exist_ok=True)
        # etcd refuses a data directory that others can read.
        paths.etcd_dir(self.state_dir).chmod(0o700)
        pki = generate(paths.pki_dir(self.state_dir), service_ip=SERVICE_IP)
        for user, target in (
            ("admin", self.kubeconfig),
            (CONTROLLER_MANAGER, layout.client_kubeconfig(CONTROLLER_MANAGER)),
            (SCHEDULER, layout.client_kubeconfig(SCHEDULER)),
        ):
            cert_name = user.removeprefix("kube-")
            _kubeconfig.write(
                target,
                server=layout.server,
                ca_cert=pki.ca_cert,
                client_cert=pki.client_cert(cert_name),
                client_key=pki.client_key(cert_name),
                user=user,
            )
        layout.ports.save(paths.cluster_file(self.state_dir))
        return layout

    def _start(self) -> None:
        layout = self._prepare()
        env = self.env
        env.pop("KUBECONFIG")  # every component is told its kubeconfig explicitly
        started: dict[str, _procs.ProcessRecord] = {}

        def start(name: str) -> None:
            log.info("starting %s", name)
            record = _procs.spawn(
                layout.argv(name),
                log=paths.component_log(self.state_dir, name),
                env=env,
                cwd=self.state_dir,
            )
            _procs.write_record(paths.pid_file(self.state_dir, name), record)
            started[name] = record

        deadline = time.monotonic() + self.start_timeout
        wait = _Waiter(self.state_dir, started, deadline)
        try:
            context = _health.admin_context(layout.pki)
            # The apiserver retries etcd by itself, so both start at once.
            start(ETCD)
            start(APISERVER)
            wait(lambda: _health.ok(f"{layout.server}/readyz", context), "kube-apiserver /readyz")
            # The controller-manager gives up after ~10 s without an apiserver: start it now.
            start(CONTROLLER_MANAGER)
            start(SCHEDULER)
            if AGENT in self.components():
                start(AGENT)
            sa_url = f"{layout.server}/api/v1/namespaces/default/serviceaccounts/default"
            wait(lambda: _health.ok(sa_url, context), "the default service account")
            cm_url = self._url(CONTROLLER_MANAGER, layout.ports)
            sched_url = self._url(SCHEDULER, layout.ports)
            insecure = _health.self_signed_context()
            wait(lambda: _health.ok(cm_url, insecure), "kube-controller-manager /healthz")
            wait(lambda: _health.ok(sched_url, insecure), "kube-scheduler /healthz")
            if AGENT in started:
                wait(
                    lambda: _health.node_ready(layout.server, context, NODE_NAME),
                    f"node {NODE_NAME} Ready",
                )
        except BaseException:
            # Leave nothing half-started behind (also on Ctrl-C).
            self._stop_all()
            raise

    def _stop_all(self) -> list[_procs.ProcessRecord]:
        stopped: list[_procs.ProcessRecord] = []
        for name in reversed(COMPONENTS):
            pid_path = paths.pid_file(self.state_dir, name)
            record = _procs.read_record(pid_path)
            if record is not None:
                log.info("stopping %s (pid %d)", name, record.pid)
                stopped += _procs.stop(record, self.stop_grace)
            pid_path.unlink(missing_ok=True)
        return stopped


class _Waiter:
    """Waits for a readiness condition while watching that nothing started has died."""

    def __init__(
        self, state_dir: Path, started: dict[str, _procs.ProcessRecord], deadline: float
    ) -> None:
        self.state_dir = state_dir
        self.started = started
        self.deadline = deadline

    def __call__(self, predicate: Callable[[], bool], what: str) -> None:
        delay = 0.05
        while True:
            self._check_alive()
            if predicate():
                return
            if time.monotonic() >= self.deadline:
                raise StartupError(self._explain(f"timed out waiting for {what}", COMPONENTS))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _check_alive(self) -> None:
        for name, record in self.started.items():
            if not _procs.is_alive(record):
                code = _procs.exit_code(record.pid)
                said = f" with exit code {code}" if code is not None else ""
                raise StartupError(self._explain(f"{name} exited during startup{said}", [name]))

    def _explain(self, headline: str, names: Sequence[str]) -> str:
        parts = [headline]
        for name in names:
            if name in self.started:
                logfile = paths.component_log(self.state_dir, name)
                parts.append(f"--- last lines of {logfile}:\n{log_tail(logfile)}")
        return "\n".join(parts)
