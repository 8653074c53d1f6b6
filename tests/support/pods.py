"""Running a Pod on the devcluster's node and reading what it did."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from tests.support.waiting import wait_for

#: The chart's pod and container security contexts (values.yaml), for Pods of the tests.
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def pod_manifest(
    name: str,
    image: str,
    command: list[str],
    *,
    labels: dict[str, str] | None = None,
    restart: str = "Never",
    resources: dict[str, Any] | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """A restricted Pod (the chart's security contexts, /tmp an emptyDir)."""
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "securityContext": copy.deepcopy(RESTRICTED_POD),
        "containers": [
            {
                "name": "main",
                "image": image,
                "command": command,
                "securityContext": copy.deepcopy(RESTRICTED_CONTAINER),
                "resources": resources or {},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if service_account is not None:
        spec["serviceAccountName"] = service_account
    else:
        spec["automountServiceAccountToken"] = False
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def run_to_completion(
    kube_api: Any, namespace: str, manifest: dict[str, Any], timeout: float = 120
) -> tuple[int, str]:
    """Create the Pod, wait until its container has terminated; (exit code, logs)."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    name = manifest["metadata"]["name"]
    core.create_namespaced_pod(namespace, manifest)

    def terminated() -> Any:
        pod = core.read_namespaced_pod(name, namespace)
        for status in pod.status.container_statuses or []:
            if status.state.terminated is not None:
                return status.state.terminated
        return None

    state = wait_for(terminated, timeout, what=f"pod {namespace}/{name} to finish")
    # Unparsed: the client would otherwise turn a JSON log line into a Python repr.
    logs = core.read_namespaced_pod_log(name, namespace, _preload_content=False).data.decode()
    return int(state.exit_code), logs


def wait_running(kube_api: Any, namespace: str, name: str, timeout: float = 120) -> Any:
    """Wait until the Pod is Ready; returns it."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)

    def ready() -> Any:
        pod = core.read_namespaced_pod(name, namespace)
        conditions = pod.status.conditions or []
        ok = any(c.type == "Ready" and c.status == "True" for c in conditions)
        return pod if ok else None

    return wait_for(ready, timeout, what=f"pod {namespace}/{name} Ready")


def kill_container(kube_api: Any, namespace: str, pod_name: str) -> int:
    """SIGKILL every process of the Pod's (first) container, as the kernel's OOM killer
    or a crash would: no signal handler runs. Returns the container's restart count
    before the kill (the kubelet restarts it: wait for one more)."""
    import os
    import signal

    from kubernetes import client
    from pinster_devcluster._host import cgroup_dirs

    pod = client.CoreV1Api(kube_api).read_namespaced_pod(pod_name, namespace)
    status = pod.status.container_statuses[0]
    container_id = status.container_id.removeprefix("containerd://")
    pids: set[int] = set()
    for tree in cgroup_dirs("kubepods"):
        for directory, _, files in os.walk(tree):
            if os.path.basename(directory) == container_id and "cgroup.procs" in files:
                with open(os.path.join(directory, "cgroup.procs")) as procs:
                    pids.update(int(p) for p in procs.read().split())
    assert pids, f"no processes found for container {container_id} of {namespace}/{pod_name}"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return int(status.restart_count)


def _container_cgroup(kube_api: Any, namespace: str, pod_name: str) -> str:
    """The cpuacct cgroup directory of the Pod's first container (cgroup v1)."""
    import os

    from kubernetes import client
    from pinster_devcluster._host import cgroup_dirs

    pod = client.CoreV1Api(kube_api).read_namespaced_pod(pod_name, namespace)
    container_id = pod.status.container_statuses[0].container_id.removeprefix("containerd://")
    for tree in cgroup_dirs("kubepods"):
        if os.path.basename(os.path.dirname(tree)) not in ("cpuacct", "cpu,cpuacct"):
            continue
        for directory, _, files in os.walk(tree):
            if os.path.basename(directory) == container_id and "cpuacct.stat" in files:
                return directory
    raise AssertionError(
        f"no cpuacct cgroup for container {container_id} of {namespace}/{pod_name}"
    )


def container_cpu_seconds(kube_api: Any, namespace: str, pod_name: str) -> tuple[float, float]:
    """(user, system) CPU seconds of the Pod's first container so far, from its cgroup
    (cgroup v1 cpuacct.stat, in USER_HZ ticks)."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    with open(os.path.join(_container_cgroup(kube_api, namespace, pod_name), "cpuacct.stat")) as f:
        values = dict(line.split() for line in f)
    return int(values["user"]) / ticks, int(values["system"]) / ticks


def container_thread_cpu_seconds(
    kube_api: Any, namespace: str, pod_name: str
) -> dict[tuple[int, int], float]:
    """CPU seconds so far of each live thread of the Pod's first container, by (process
    id, thread id) on this machine: a process's main thread has the process's id."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[tuple[int, int], float] = {}
    with open(os.path.join(_container_cgroup(kube_api, namespace, pod_name), "tasks")) as f:
        for line in f:
            tid = int(line)
            with contextlib.suppress(OSError, IndexError, ValueError):  # ended meanwhile
                # The thread's own figures (/proc/<tid>/stat would be its whole process's).
                with open(f"/proc/{tid}/task/{tid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{tid}/status") as status:
                    tgid = next(int(x.split()[1]) for x in status if x.startswith("Tgid:"))
                found[tgid, tid] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def metric_samples(kube_api: Any, namespace: str, pod_name: str, name: str) -> list[Any]:
    """The samples called ``name`` that the Pod's ``metrics`` port serves (Prometheus
    text format), read from this machine through the Pod's address."""
    import urllib.request

    from kubernetes import client
    from prometheus_client.parser import text_string_to_metric_families

    pod = client.CoreV1Api(kube_api).read_namespaced_pod(pod_name, namespace)
    port = next(
        p.container_port for c in pod.spec.containers for p in c.ports or [] if p.name == "metrics"
    )
    url = f"http://{pod.status.pod_ip}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
