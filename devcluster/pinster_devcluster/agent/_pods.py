"""Running one Pod: init containers, then containers as local processes, with restart
policy, deadlines, probes, deletion and a kubelet-shaped status."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from pinster_devcluster import paths
from pinster_devcluster.agent import _env, _tokens
from pinster_devcluster.agent._probes import ProbeState, check
from pinster_devcluster.agent._process import START_ERROR_EXIT, Process, StartError
from pinster_devcluster.agent._status import (
    Container,
    condition,
    now,
    phase_of,
    termination_message,
)

log = logging.getLogger("pinster_devcluster.agent.pods")

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
TICK = 0.2
BACKOFF_START, BACKOFF_MAX = 1.0, 30.0
#: When the agent itself stops, containers get at most this long after SIGTERM: the
#: devcluster's ``down`` waits only a little longer for the agent before SIGKILL.
SHUTDOWN_GRACE = 5.0
RESTARTED_MESSAGE = "the process ended when the devcluster node agent restarted"


@dataclass
class Runtime:
    """What every Pod worker shares."""

    core: client.CoreV1Api
    serialize: Any  # ApiClient.sanitize_for_serialization
    state_dir: Path
    node_name: str
    host_ip: str
    server: str
    ca_file: str | None
    base_path: str


class IpAllocator:
    """One loopback address per Pod, so Pods can listen on the same port."""

    def __init__(self, prefix: str = "127.1") -> None:
        self._prefix = prefix
        self._used: dict[str, str] = {}
        self._lock = threading.Lock()

    def allocate(self, uid: str, preferred: str | None = None) -> str:
        with self._lock:
            if uid in self._used:
                return self._used[uid]
            taken = set(self._used.values())
            if preferred and preferred.startswith(f"{self._prefix}.") and preferred not in taken:
                self._used[uid] = preferred
                return preferred
            for index in range(2, 65534):
                ip = f"{self._prefix}.{index // 256}.{index % 256}"
                if ip not in taken:
                    self._used[uid] = ip
                    return ip
            raise RuntimeError("no free pod IP left")

    def release(self, uid: str) -> None:
        with self._lock:
            self._used.pop(uid, None)


class PodWorker(threading.Thread):
    def __init__(self, runtime: Runtime, ips: IpAllocator, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.runtime, self.ips, self.pod = runtime, ips, pod
        self.namespace, self.pod_name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = paths.pod_dir(runtime.state_dir, self.namespace, self.pod_name)
        self.deleting = threading.Event()
        self.shutdown = threading.Event()  # the agent itself is stopping
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.inits = [
            Container(c["name"], c.get("image", "")) for c in spec.get("initContainers") or []
        ]
        self.containers = [Container(c["name"], c.get("image", "")) for c in spec["containers"]]
        self.specs = {
            c["name"]: c for c in [*(spec.get("initContainers") or []), *spec["containers"]]
        }
        self.processes: dict[str, Process] = {}
        self.envs: dict[str, dict[str, str]] = {}  # of the current run, for exec probes
        self.probes: dict[str, dict[str, ProbeState]] = {}
        self.restart_at: dict[str, float] = {}
        self.pod_ip = ""
        self.start_time = (pod.get("status") or {}).get("startTime") or now()
        self.initialized = False
        self.init_failed = False
        self.reason = self.message = ""
        self._transitions: dict[str, tuple[str, str]] = {}
        self._last_status: dict[str, Any] | None = None
        self._token_at = 0.0
        self._kubeconfig: Path | None = None

    # --- entry points called by the agent's watch loop ---

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker crashed", extra={"pod": f"{self.namespace}/{self.pod_name}"})
            self._stop_all(0)
        finally:
            self.ips.release(self.uid)

    # --- the lifecycle ---

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        status = self.pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            self._await_deletion()
            return
        self.pod_ip = self.ips.allocate(self.uid, status.get("podIP"))
        self._recover(status)
        self._publish()
        if not self._run_inits():
            self._publish()
            self._await_deletion()
            return
        self.initialized = True
        for container in self.containers:
            if container.state != "terminated":  # recovered ones restart per restartPolicy
                self._start(container)
        self._publish()
        while not self._done():
            if self._interrupted():
                break
            self._tick()
            self._publish()
            time.sleep(TICK)
        self._publish()
        self._await_deletion()

    def _recover(self, status: dict[str, Any]) -> None:
        """A Pod this node was running before the agent restarted. Its processes ended
        with the old agent (or were killed as stale), so they are reported as ended and
        the restart policy decides, as the kubelet does for containers that died."""
        previous = {
            s["name"]: s
            for s in [
                *(status.get("initContainerStatuses") or []),
                *(status.get("containerStatuses") or []),
            ]
        }
        for container in [*self.inits, *self.containers]:
            old = previous.get(container.name)
            if old is not None:
                container.restore(old, RESTARTED_MESSAGE)

    def _interrupted(self) -> bool:
        """Deletion, the agent stopping, or activeDeadlineSeconds: stop every container."""
        if self.deleting.is_set() or self.shutdown.is_set():
            self._stop_all(self._stop_grace())
            return True
        if self._deadline_exceeded():
            self._stop_all(0)
            self.reason = "DeadlineExceeded"
            self.message = "Pod was active on the node longer than the specified deadline"
            return True
        return False

    def _run_inits(self) -> bool:
        """Init containers one after the other, each until it exits 0."""
        for container in self.inits:
            while not (container.state == "terminated" and container.exit_code == 0):
                if self._interrupted():
                    return False
                if container.state == "running":
                    self._reap(container)
                elif container.state == "terminated" and self.restart_policy == "Never":
                    self.init_failed = True
                    return False
                elif container.state == "waiting" and container.reason == "ContainerCreating":
                    self._start(container)
                else:  # failed, or its ConfigMap/Secret is missing: retry after a backoff
                    self._restart_when_due(container, time.monotonic())
                self._publish()
                time.sleep(TICK)
        return True

    def _done(self) -> bool:
        phase = phase_of(self.containers, self.restart_policy, self.init_failed)
        return phase in ("Succeeded", "Failed")

    def _deadline_exceeded(self) -> bool:
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline is None:
            return False
        started = datetime.strptime(self.start_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return (datetime.now(UTC) - started).total_seconds() >= float(deadline)

    def _grace(self) -> float:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    def _stop_grace(self) -> float:
        grace = self._grace()
        if self.shutdown.is_set() and not self.deleting.is_set():
            return min(grace, SHUTDOWN_GRACE)
        return grace

    def _tick(self) -> None:
        clock = time.monotonic()
        self._refresh_token()
        for container in self.containers:
            if container.state == "running":
                self._reap(container)
                self._probe(container, clock)
            retry = (
                container.state == "waiting" and container.reason == "CreateContainerConfigError"
            )
            if retry or (container.state == "terminated" and self._should_restart(container)):
                self._restart_when_due(container, clock)

    def _restart_when_due(self, container: Container, clock: float) -> None:
        due = self.restart_at.setdefault(container.name, clock + self._backoff(container))
        if clock >= due:
            self.restart_at.pop(container.name)
            self._start(container)

    def _should_restart(self, container: Container) -> bool:
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and container.exit_code != 0

    @staticmethod
    def _backoff(container: Container) -> float:
        return min(BACKOFF_MAX, BACKOFF_START * 2.0 ** min(container.restart_count, 10))

    # --- containers ---

    def _environment(self, spec: dict[str, Any]) -> dict[str, str]:
        core, namespace = self.runtime.core, self.namespace
        base = {
            "PATH": self.runtime.base_path,
            "HOME": str(self.dir),
            "HOSTNAME": self.pod_name,
            "LANG": "C.UTF-8",
            "TERMINATION_MESSAGE_PATH": str(self._message_file(spec["name"])),
        }
        if self.pod["spec"].get("enableServiceLinks", True):
            services = core.list_namespaced_service(namespace).items
            base.update(
                _env.service_links(
                    [
                        self.runtime.serialize(s)
                        for s in services
                        # The kubelet's KUBERNETES_SERVICE_* would make clients look for a
                        # mounted token; Pods here get a KUBECONFIG instead.
                        if not (namespace == "default" and s.metadata.name == "kubernetes")
                    ]
                )
            )
        kubeconfig = self._service_account_kubeconfig()
        if kubeconfig is not None:
            base["KUBECONFIG"] = str(kubeconfig)
        pod = {**self.pod, "status": {**(self.pod.get("status") or {}), "podIP": self.pod_ip,
                                      "hostIP": self.runtime.host_ip,
                                      "podIPs": [{"ip": self.pod_ip}]}}  # fmt: skip
        return _env.resolve(pod, spec, self._lookup, base)

    def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        try:
            if kind == "ConfigMap":
                return dict(
                    self.runtime.core.read_namespaced_config_map(name, namespace).data or {}
                )
            secret = self.runtime.core.read_namespaced_secret(name, namespace)
            return _env.decode_secret(secret.data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _service_account_kubeconfig(self) -> Path | None:
        spec = self.pod["spec"]
        if spec.get("automountServiceAccountToken") is False:
            return None
        path = self.dir / "kubeconfig"
        if self._kubeconfig is None or time.monotonic() - self._token_at > _tokens.REFRESH_SECONDS:
            token = _tokens.request_token(self.runtime.core, self.pod)
            _tokens.write_kubeconfig(
                path, self.runtime.server, self.runtime.ca_file, token, self.namespace
            )
            self._kubeconfig, self._token_at = path, time.monotonic()
        return self._kubeconfig

    def _refresh_token(self) -> None:
        """Long-running Pods: rewrite the kubeconfig before the token's refresh time."""
        if self._kubeconfig is None:
            return
        try:
            self._service_account_kubeconfig()
        except ApiException as exc:
            self._token_at += 60  # retry in a minute; the current token is still valid
            log.warning("token refresh failed: %s", exc.reason,
                        extra={"pod": f"{self.namespace}/{self.pod_name}"})  # fmt: skip

    def _message_file(self, name: str) -> Path:
        return self.dir / f"{name}.termination-log"

    def _start(self, container: Container) -> None:
        spec = self.specs[container.name]
        message_file = self._message_file(container.name)
        message_file.unlink(missing_ok=True)
        log_file = paths.container_log(
            self.runtime.state_dir, self.namespace, self.pod_name, container.name
        )
        try:
            env = self._environment(spec)
            argv = [
                _env.expand(str(a), env)
                for a in [*(spec.get("command") or []), *(spec.get("args") or [])]
            ]
            process = Process(
                argv, env, spec.get("workingDir"), log_file, self.dir / f"{container.name}.pid"
            )
        except _env.EnvError as exc:
            # As the kubelet: wait (and retry) until the ConfigMap or Secret appears.
            container.mark_waiting("CreateContainerConfigError", str(exc))
            log.warning(
                "container config: %s", exc, extra={"pod": f"{self.namespace}/{self.pod_name}"}
            )
            return
        except StartError as exc:
            self._fail_start(container, "StartError", str(exc))
            return
        self.processes[container.name] = process
        self.envs[container.name] = env
        container.mark_running(process.pid)
        # Without probes a running container is ready; a startup probe holds both back.
        container.startup_passed = not spec.get("startupProbe")
        container.ready = container.startup_passed and not spec.get("readinessProbe")
        clock = time.monotonic()
        self.probes[container.name] = {
            kind: ProbeState(spec[kind], started=clock)
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if spec.get(kind)
        }
        log.info(
            "container started",
            extra={
                "pod": f"{self.namespace}/{self.pod_name}",
                "container": container.name,
                "pid": process.pid,
            },
        )

    def _fail_start(self, container: Container, reason: str, message: str) -> None:
        # Reported as a terminated container, so a Job counts the failure instead of hanging.
        container.pid = None
        container.started_at = container.started_at or now()
        container.mark_terminated(START_ERROR_EXIT, message, reason)
        log.warning(
            "container cannot start: %s",
            message,
            extra={"pod": f"{self.namespace}/{self.pod_name}"},
        )

    def _reap(self, container: Container, reason: str | None = None) -> None:
        process = self.processes.get(container.name)
        if process is None:
            return
        code = process.poll()
        if code is None:
            return
        self._terminated(container, code, reason)

    def _terminated(self, container: Container, code: int, reason: str | None = None) -> None:
        spec = self.specs[container.name]
        self.processes.pop(container.name, None)
        log_file = paths.container_log(
            self.runtime.state_dir, self.namespace, self.pod_name, container.name
        )
        message_path = self._message_file(container.name)
        custom = spec.get("terminationMessagePath")
        if (
            custom
            and custom != DEFAULT_TERMINATION_PATH
            and Path(custom).exists()
            and not message_path.exists()
        ):
            message_path = Path(custom)
        message = termination_message(
            message_path, spec.get("terminationMessagePolicy", "File"), code, log_file
        )
        container.mark_terminated(code, message, reason)
        log.info(
            "container exited",
            extra={
                "pod": f"{self.namespace}/{self.pod_name}",
                "container": container.name,
                "exit_code": code,
            },
        )

    def _probe(self, container: Container, clock: float) -> None:
        """The kubelet's order: readiness and liveness wait for the startup probe; a
        failed startup or liveness probe kills the container (restartPolicy decides)."""
        spec = self.specs[container.name]
        states = self.probes.get(container.name, {})
        env, cwd = self.envs.get(container.name, {}), spec.get("workingDir")

        def run(state: ProbeState) -> None:
            state.record(check(state.probe, spec, self.pod_ip, env, cwd), clock)

        startup = states.get("startupProbe")
        if startup and not container.startup_passed:
            if startup.due(clock):
                run(startup)
                container.startup_passed = startup.passing
                container.ready = startup.passing and "readinessProbe" not in states
            if startup.failed:
                self._kill(container, "startup", startup.probe)
            if not container.startup_passed:
                return
        readiness = states.get("readinessProbe")
        if readiness and readiness.due(clock):
            run(readiness)
            container.ready = readiness.passing
        liveness = states.get("livenessProbe")
        if liveness and liveness.due(clock):
            run(liveness)
            if liveness.failed:
                self._kill(container, "liveness", liveness.probe)

    def _kill(self, container: Container, kind: str, probe: Mapping[str, Any]) -> None:
        log.warning("%s probe failed; killing container", kind,
                    extra={"pod": f"{self.namespace}/{self.pod_name}", "container": container.name})  # fmt: skip
        process = self.processes.get(container.name)
        if process is not None:
            grace = probe.get("terminationGracePeriodSeconds")
            self._terminated(container, process.stop(self._grace() if grace is None else grace))

    def _stop_all(self, grace: float) -> None:
        for container in [*self.inits, *self.containers]:
            process = self.processes.get(container.name)
            if process is not None:
                process.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for container in [*self.inits, *self.containers]:
            process = self.processes.get(container.name)
            if process is not None:
                self._terminated(container, process.stop(max(0.0, deadline - time.monotonic())))

    # --- status ---

    def _condition(self, type_: str, value: bool, reason: str | None = None) -> dict[str, Any]:
        result = condition(type_, value, reason)
        previous = self._transitions.get(type_)
        status = result["status"]
        if previous and previous[0] == status:
            result["lastTransitionTime"] = previous[1]
        else:
            self._transitions[type_] = (status, result["lastTransitionTime"])
        return result

    def _status(self) -> dict[str, Any]:
        phase = phase_of(self.containers, self.restart_policy, self.init_failed)
        if self.reason == "DeadlineExceeded":
            phase = "Failed"
        terminal = phase in ("Succeeded", "Failed")
        ready = self.initialized and all(c.ready and c.state == "running" for c in self.containers)
        not_ready = "PodCompleted" if terminal else (None if ready else "ContainersNotReady")
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": self.runtime.host_ip,
            "hostIPs": [{"ip": self.runtime.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            # The API server sets qosClass from the resources at creation and refuses any
            # change (422), so keep its value: Pods with requests are Burstable.
            "qosClass": (self.pod.get("status") or {}).get("qosClass", "BestEffort"),
            "conditions": [
                self._condition("PodReadyToStartContainers", True),
                self._condition(
                    "Initialized", self.initialized, None if self.initialized else "PodInitializing"
                ),
                self._condition("ContainersReady", ready, not_ready),
                self._condition("Ready", ready, not_ready),
                self._condition("PodScheduled", True),
            ],
            "containerStatuses": [c.to_status() for c in self.containers],
        }
        if self.inits:
            status["initContainerStatuses"] = [c.to_status() for c in self.inits]
        if self.reason:
            status["reason"], status["message"] = self.reason, self.message
        return status

    def _publish(self) -> None:
        status = self._status()
        if status == self._last_status:
            return
        try:
            self.runtime.core.patch_namespaced_pod_status(
                self.pod_name, self.namespace, {"status": status}
            )
            self._last_status = status
        except ApiException as exc:
            if exc.status != 404:
                log.warning("pod status patch failed: %s", exc.reason,
                            extra={"pod": f"{self.namespace}/{self.pod_name}"})  # fmt: skip

    def _await_deletion(self) -> None:
        """A finished Pod stays until deleted; then confirm the deletion as the kubelet does."""
        while not self.shutdown.is_set():
            if self.deleting.wait(1.0):
                try:
                    self.runtime.core.delete_namespaced_pod(
                        self.pod_name,
                        self.namespace,
                        grace_period_seconds=0,
                        body=client.V1DeleteOptions(
                            grace_period_seconds=0,
                            preconditions=client.V1Preconditions(uid=self.uid),
                        ),
                    )
                except ApiException as exc:
                    if exc.status not in (404, 409):
                        raise
                return
