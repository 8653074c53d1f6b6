"""One Pod's life on the node agent: a PodWorker running real local processes, against an
in-process fake of the few CoreV1Api calls it makes (the real API is exercised by
tests/integration/test_node_agent.py)."""

from __future__ import annotations

import base64
import copy
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from pinster_devcluster import paths
from pinster_devcluster.agent import _pods
from pinster_devcluster.agent._pods import IpAllocator, PodWorker, Runtime

from tests.support.waiting import wait_for

TIMEOUT = 20


class FakeCore:
    """The CoreV1Api calls a PodWorker makes; records what it writes."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, int | None, str | None]] = []
        self.config_maps: dict[str, dict[str, str]] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self.services: list[client.V1Service] = []
        self.token_requests: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()

    def patch_namespaced_pod_status(self, name: str, namespace: str, body: Any) -> None:
        with self._lock:
            self.statuses.append(copy.deepcopy(body["status"]))

    def delete_namespaced_pod(
        self, name: str, namespace: str, grace_period_seconds: int | None = None, body: Any = None
    ) -> None:
        self.deleted.append((namespace, name, grace_period_seconds, body.preconditions.uid))

    def list_namespaced_service(self, namespace: str) -> Any:
        return SimpleNamespace(items=list(self.services))

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        if name not in self.config_maps:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=self.config_maps[name])

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        if name not in self.secrets:
            raise ApiException(status=404, reason="Not Found")
        data = {k: base64.b64encode(v.encode()).decode() for k, v in self.secrets[name].items()}
        return SimpleNamespace(data=data)

    def create_namespaced_service_account_token(self, name: str, namespace: str, body: Any) -> Any:
        self.token_requests.append((name, namespace, body))
        token = f"token-{len(self.token_requests)}"
        return SimpleNamespace(status=SimpleNamespace(token=token))

    @property
    def status(self) -> dict[str, Any]:
        with self._lock:
            return self.statuses[-1] if self.statuses else {}


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.core = FakeCore()
        self.state_dir = tmp_path / "state"
        self.work = tmp_path / "work"
        self.work.mkdir()
        bin_dir = str(Path(sys.executable).parent)
        self.runtime = Runtime(
            core=cast(client.CoreV1Api, self.core),
            serialize=client.ApiClient().sanitize_for_serialization,
            state_dir=self.state_dir,
            node_name="devcluster-node",
            host_ip="127.0.0.1",
            server="https://127.0.0.1:6443",
            ca_file=None,
            base_path=os.pathsep.join([bin_dir, os.environ.get("PATH", os.defpath)]),
        )
        self.ips = IpAllocator()
        self.workers: list[PodWorker] = []

    def run(self, pod: dict[str, Any]) -> PodWorker:
        worker = PodWorker(self.runtime, self.ips, pod)
        self.workers.append(worker)
        worker.start()
        return worker

    def phase(self, *phases: str) -> dict[str, Any]:
        """The latest status if its phase is one of ``phases``, else {} (falsy)."""
        status = self.core.status
        return status if status.get("phase") in phases else {}

    def log(self, pod: dict[str, Any], container: str) -> str:
        meta = pod["metadata"]
        log = paths.container_log(self.state_dir, meta["namespace"], meta["name"], container)
        return log.read_text() if log.exists() else ""

    def close(self) -> None:
        for worker in self.workers:
            worker.shutdown.set()
        for worker in self.workers:
            worker.join(timeout=15)
            assert not worker.is_alive(), "the pod worker must end when the agent stops"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


def make_pod(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    for container in containers:
        container.setdefault("image", "busybox")
    spec.setdefault("restartPolicy", "Never")
    spec.setdefault("automountServiceAccountToken", False)
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": str(uuid.uuid4())},
        "spec": {"nodeName": "devcluster-node", "containers": containers, **spec},
        "status": {},
    }


def state(status: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    found: dict[str, Any] = next(s for s in status[key] if s["name"] == name)
    return found


def condition(status: dict[str, Any], type_: str) -> str:
    return str(next(c["status"] for c in status["conditions"] if c["type"] == type_))


def test_a_container_runs_with_its_env_args_and_termination_message(harness: Harness) -> None:
    harness.core.secrets["creds"] = {"password": "s3cret"}
    command = 'printf "%s|%s|%s" "$1" "$GREETING" "$(pwd)" > "$TERMINATION_MESSAGE_PATH"'
    pod = make_pod(
        [
            {
                "name": "main",
                "command": ["sh", "-c", command, "--"],
                "args": ["$(POD_NAME)@$(POD_IP)"],
                "workingDir": str(harness.work),
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {
                        "name": "PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                    },
                    {"name": "GREETING", "value": "pw=$(PASSWORD)"},
                ],
            }
        ]
    )

    harness.run(pod)
    status = wait_for(lambda: harness.phase("Succeeded", "Failed"), TIMEOUT, what="pod done")

    assert status["phase"] == "Succeeded"
    terminated = state(status, "main")["state"]["terminated"]
    ip = status["podIP"]
    assert ip.startswith("127.1.") and status["podIPs"] == [{"ip": ip}]
    assert terminated["message"] == f"p@{ip}|pw=s3cret|{harness.work}"
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert terminated["containerID"].startswith("local://")
    assert {"startedAt", "finishedAt"} <= set(terminated)
    assert condition(status, "Ready") == "False" and condition(status, "Initialized") == "True"
    assert status["hostIP"] == "127.0.0.1" and status["startTime"]
    # Phases seen in order, as the Job controller expects them.
    phases = [s["phase"] for s in harness.core.statuses]
    assert phases[0] == "Pending" and "Running" in phases and phases[-1] == "Succeeded"


def test_a_missing_command_fails_the_container_with_a_clear_message(harness: Harness) -> None:
    harness.run(make_pod([{"name": "main", "command": ["definitely-not-installed"]}]))

    status = wait_for(lambda: harness.phase("Failed"), TIMEOUT, what="pod failed")

    terminated = state(status, "main")["state"]["terminated"]
    assert terminated["reason"] == "StartError" and terminated["exitCode"] == 128
    assert "'definitely-not-installed' not found on PATH" in terminated["message"]
    assert "images are not pulled" in terminated["message"]


def test_on_failure_restarts_with_backoff_and_keeps_the_last_state(harness: Harness) -> None:
    script = "test -f marker && exit 0; touch marker; exit 3"
    pod = make_pod(
        [{"name": "main", "command": ["sh", "-c", script], "workingDir": str(harness.work)}],
        restartPolicy="OnFailure",
    )
    harness.run(pod)

    status = wait_for(lambda: harness.phase("Succeeded"), TIMEOUT, what="pod succeeded")

    main = state(status, "main")
    assert main["restartCount"] == 1
    assert main["lastState"]["terminated"]["exitCode"] == 3
    assert main["lastState"]["terminated"]["reason"] == "Error"
    # Between the runs the Pod stayed Running: OnFailure will restart a failed container.
    failed_once = [
        s for s in harness.core.statuses if state(s, "main")["state"]["terminated"] is not None
    ]
    assert failed_once[0]["phase"] == "Running"


def test_active_deadline_kills_the_pod(harness: Harness) -> None:
    pod = make_pod([{"name": "main", "command": ["sleep", "60"]}], activeDeadlineSeconds=1)
    worker = harness.run(pod)

    status = wait_for(lambda: harness.phase("Failed"), TIMEOUT, what="deadline")

    assert status["reason"] == "DeadlineExceeded"
    terminated = state(status, "main")["state"]["terminated"]
    assert terminated["exitCode"] in (137, 143) and terminated["reason"] == "Error"
    assert not worker.processes


def test_deletion_sends_sigterm_then_confirms_with_grace_zero(harness: Harness) -> None:
    script = 'trap "echo bye; exit 0" TERM; sleep 60 & wait'
    pod = make_pod([{"name": "main", "command": ["sh", "-c", script]}])
    worker = harness.run(pod)
    wait_for(lambda: harness.phase("Running"), TIMEOUT, what="running")
    wait_for(lambda: worker.processes, TIMEOUT, what="process")
    time.sleep(0.3)  # let the shell install its trap: this is not waiting for a condition
    deleted = copy.deepcopy(pod)
    deleted["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    deleted["metadata"]["deletionGracePeriodSeconds"] = 10

    worker.update(deleted)
    wait_for(lambda: harness.core.deleted, TIMEOUT, what="pod deletion confirmed")

    assert harness.core.deleted == [("ns", "p", 0, pod["metadata"]["uid"])]
    assert harness.log(pod, "main") == "bye\n"
    assert state(harness.core.status, "main")["state"]["terminated"]["exitCode"] == 0


def test_the_agent_stopping_ends_containers_within_its_own_grace(harness: Harness) -> None:
    pod = make_pod(
        [{"name": "main", "command": ["sh", "-c", "trap '' TERM; sleep 60"]}],
        terminationGracePeriodSeconds=120,
    )
    worker = harness.run(pod)
    wait_for(lambda: worker.processes, TIMEOUT, what="process")
    started = time.monotonic()

    worker.shutdown.set()
    worker.join(timeout=_pods.SHUTDOWN_GRACE + 10)

    assert not worker.is_alive()
    assert time.monotonic() - started < _pods.SHUTDOWN_GRACE + 5
    assert not harness.core.deleted, "the Pod stays: only the agent stopped"


def test_init_containers_run_first_and_in_order(harness: Harness) -> None:
    work = str(harness.work)
    pod = make_pod(
        [{"name": "main", "command": ["sh", "-c", "cat steps > $TERMINATION_MESSAGE_PATH"]}],
        initContainers=[
            {"name": "one", "command": ["sh", "-c", "echo one >> steps"], "workingDir": work},
            {"name": "two", "command": ["sh", "-c", "echo two >> steps"], "workingDir": work},
        ],
    )
    pod["spec"]["containers"][0]["workingDir"] = work
    harness.run(pod)

    status = wait_for(lambda: harness.phase("Succeeded"), TIMEOUT, what="pod done")

    assert state(status, "main")["state"]["terminated"]["message"] == "one\ntwo\n"
    for name in ("one", "two"):
        assert state(status, name, init=True)["state"]["terminated"]["reason"] == "Completed"
    assert condition(status, "Initialized") == "True"


def test_a_failed_init_container_fails_a_never_pod_without_starting_the_rest(
    harness: Harness,
) -> None:
    pod = make_pod(
        [{"name": "main", "command": ["true"]}],
        initContainers=[{"name": "init", "command": ["sh", "-c", "exit 4"]}],
    )
    harness.run(pod)

    status = wait_for(lambda: harness.phase("Failed"), TIMEOUT, what="pod failed")

    assert state(status, "init", init=True)["state"]["terminated"]["exitCode"] == 4
    assert state(status, "main")["state"]["waiting"] is not None
    assert condition(status, "Initialized") == "False"


def test_a_missing_config_map_waits_until_it_exists(harness: Harness) -> None:
    script = 'printf %s "$GREETING" > $TERMINATION_MESSAGE_PATH'
    env = [
        {
            "name": "GREETING",
            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}},
        }
    ]
    harness.run(make_pod([{"name": "main", "command": ["sh", "-c", script], "env": env}]))

    def waiting() -> dict[str, Any]:
        statuses = harness.core.status.get("containerStatuses") or []
        waiting: dict[str, Any] = (statuses[0]["state"]["waiting"] if statuses else None) or {}
        return waiting if waiting.get("reason") == "CreateContainerConfigError" else {}

    assert 'ConfigMap "settings" not found' in wait_for(waiting, TIMEOUT)["message"]
    assert harness.core.status["phase"] == "Pending"
    harness.core.config_maps["settings"] = {"greeting": "hello"}

    status = wait_for(lambda: harness.phase("Succeeded"), TIMEOUT, what="pod done")
    assert state(status, "main")["state"]["terminated"]["message"] == "hello"


def test_service_account_kubeconfig_and_service_links(harness: Harness) -> None:
    harness.core.services = [
        client.V1Service(
            metadata=client.V1ObjectMeta(name="db", namespace="ns"),
            spec=client.V1ServiceSpec(
                cluster_ip="127.96.0.7", ports=[client.V1ServicePort(port=5432, name="pg")]
            ),
        )
    ]
    script = 'printf "%s %s:%s" "$KUBECONFIG" "$DB_SERVICE_HOST" "$DB_SERVICE_PORT_PG" > "$1"'
    pod = make_pod(
        [
            {
                "name": "main",
                "command": ["sh", "-c", script, "--", "$(TERMINATION_MESSAGE_PATH)"],
            }
        ],
        serviceAccountName="builder",
        automountServiceAccountToken=None,
    )
    harness.run(pod)

    status = wait_for(lambda: harness.phase("Succeeded", "Failed"), TIMEOUT, what="pod done")

    kubeconfig_path, service = state(status, "main")["state"]["terminated"]["message"].split()
    assert service == "127.96.0.7:5432"
    kubeconfig = yaml.safe_load(Path(kubeconfig_path).read_text())
    user = kubeconfig["users"][0]["user"]
    assert user["token"] == "token-1"
    assert Path(user["tokenFile"]).read_text() == "token-1"
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert kubeconfig["contexts"][0]["context"]["namespace"] == "ns"
    account, namespace, request = harness.core.token_requests[0]
    assert (account, namespace) == ("builder", "ns")
    assert request.spec.bound_object_ref.uid == pod["metadata"]["uid"]
    assert request.spec.expiration_seconds == 3607  # the kubelet's, extended by the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_readiness_follows_http_and_exec_probes(harness: Harness) -> None:
    port = free_port()
    server = {
        "name": "web",
        "command": [sys.executable, "-m", "http.server", "--bind", "$(POD_IP)", str(port)],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "workingDir": str(harness.work),
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }
    # Ready only if the probe sees the container's env and working directory.
    check = f'test "$FLAVOUR" = mint && test "$(pwd)" = "{harness.work}"'
    sidecar = {
        "name": "side",
        "command": ["sleep", "60"],
        "env": [{"name": "FLAVOUR", "value": "mint"}],
        "workingDir": str(harness.work),
        "readinessProbe": {"exec": {"command": ["sh", "-c", check]}, "periodSeconds": 1},
    }
    harness.run(make_pod([server, sidecar], restartPolicy="Always"))

    def ready() -> dict[str, Any]:
        status = harness.core.status
        return status if status.get("conditions") and condition(status, "Ready") == "True" else {}

    status = wait_for(ready, TIMEOUT, what="pod ready")

    assert condition(status, "ContainersReady") == "True"
    assert all(s["ready"] and s["started"] for s in status["containerStatuses"])
    assert status["phase"] == "Running"


def test_a_failing_liveness_probe_restarts_the_container(harness: Harness) -> None:
    container = {
        "name": "main",
        "command": ["sleep", "60"],
        "livenessProbe": {
            "exec": {"command": ["false"]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    }
    harness.run(make_pod([container], restartPolicy="Always", terminationGracePeriodSeconds=5))

    def restarted() -> dict[str, Any]:
        statuses = harness.core.status.get("containerStatuses") or []
        return statuses[0] if statuses and statuses[0]["restartCount"] >= 1 else {}

    main = wait_for(restarted, TIMEOUT, what="a restart")

    assert main["lastState"]["terminated"]["exitCode"] == 143  # SIGTERM'd, as by the kubelet


def test_a_startup_probe_holds_readiness_and_started(harness: Harness) -> None:
    container = {
        "name": "main",
        "command": ["sh", "-c", "sleep 1.5; touch started; sleep 60"],
        "workingDir": str(harness.work),
        "startupProbe": {
            "exec": {"command": ["test", "-f", "started"]},
            "periodSeconds": 1,
            "failureThreshold": 10,
        },
    }
    harness.run(make_pod([container], restartPolicy="Always"))
    wait_for(lambda: harness.phase("Running"), TIMEOUT, what="running")

    early = state(harness.core.status, "main")
    status = wait_for(
        lambda: state(harness.core.status, "main")["started"] and harness.core.status,
        TIMEOUT,
        what="started",
    )

    assert early["started"] is False and early["ready"] is False
    assert condition(status, "Ready") == "True"


@pytest.mark.parametrize(("policy", "phase"), [("Never", "Failed"), ("OnFailure", "Succeeded")])
def test_after_an_agent_restart_running_containers_count_as_killed(
    harness: Harness, policy: str, phase: str
) -> None:
    pod = make_pod([{"name": "main", "command": ["true"]}], restartPolicy=policy)
    pod["status"] = {
        "phase": "Running",
        "podIP": "127.1.0.42",
        "startTime": "2026-01-01T00:00:00Z",
        "containerStatuses": [
            {
                "name": "main",
                "restartCount": 2,
                "containerID": "local://4242",
                "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}},
            }
        ],
    }
    harness.run(pod)

    status = wait_for(lambda: harness.phase(phase), TIMEOUT, what=f"pod {phase}")

    main = state(status, "main")
    assert status["podIP"] == "127.1.0.42" and status["startTime"] == "2026-01-01T00:00:00Z"
    if policy == "Never":
        assert main["state"]["terminated"]["exitCode"] == 137
        assert main["state"]["terminated"]["message"] == _pods.RESTARTED_MESSAGE
        assert main["restartCount"] == 2
        assert harness.log(pod, "main") == "", "a Never container is not run a second time"
    else:
        assert main["restartCount"] == 3
        assert main["lastState"]["terminated"]["exitCode"] == 137
        assert main["state"]["terminated"]["exitCode"] == 0
