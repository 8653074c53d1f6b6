"""Jobs and Pods through the real controllers, run by the node agent (issue 2).

The agent runs each container's command as a local process: the image is ignored, so the
commands here are what any machine has (sh, sleep, and the test's own python).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pinster_devcluster import NODE_NAME, DevCluster

from tests.support.kube import Kubectl
from tests.support.procstat import live_processes_with
from tests.support.waiting import wait_for

JOB_TIMEOUT = 90


def job_body(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": command}],
                }
            },
            **spec,
        },
    }


def job_condition(batch: client.BatchV1Api, namespace: str, name: str) -> Any:
    """The Job's Complete or Failed condition once it has one, else None."""
    job = batch.read_namespaced_job(name, namespace)
    for condition in (job.status.conditions if job.status else None) or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return condition
    return None


def job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[Any]:
    pods: list[Any] = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    return pods


def devcluster_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinster_images.cli", "devcluster", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def test_node_is_registered_and_ready(kube_api: Any) -> None:
    node = client.CoreV1Api(kube_api).read_node(NODE_NAME)
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert ready and ready[0].status == "True"


def test_a_job_exiting_0_completes_and_its_output_is_kept(
    kube_api: Any, namespace: str, devcluster: DevCluster
) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    batch.create_namespaced_job(
        namespace, job_body("ok", ["sh", "-c", "echo hello; echo oops >&2"])
    )

    condition = wait_for(
        lambda: job_condition(batch, namespace, "ok"), JOB_TIMEOUT, what="job ok done"
    )

    assert condition.type == "Complete"
    (pod,) = job_pods(core, namespace, "ok")
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert terminated.reason == "Completed"
    logs = devcluster_cli(
        "logs", pod.metadata.name, "-n", namespace, "--state-dir", str(devcluster.state_dir)
    )
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "hello\noops\n"


def test_a_failing_job_with_backoff_limit_1_fails_after_exactly_two_pods(
    kube_api: Any, namespace: str
) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    batch.create_namespaced_job(
        namespace, job_body("fails", ["sh", "-c", "exit 1"], backoffLimit=1)
    )

    # The Job controller waits ~10 s before the retry.
    condition = wait_for(
        lambda: job_condition(batch, namespace, "fails"), JOB_TIMEOUT, what="job fails done"
    )

    assert condition.type == "Failed"
    assert condition.reason == "BackoffLimitExceeded"
    pods = job_pods(core, namespace, "fails")
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Failed"
        assert pod.status.container_statuses[0].state.terminated.exit_code == 1
    assert batch.read_namespaced_job("fails", namespace).status.failed == 2


def test_the_termination_message_appears_in_the_pod_status(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    script = 'printf "result: %s" ok > "$TERMINATION_MESSAGE_PATH"'
    big = 'head -c 5000 /dev/zero | tr "\\0" y > "$TERMINATION_MESSAGE_PATH"'
    fallback = 'echo "last words on stdout"; exit 2'
    containers = [
        {"name": "small", "image": "busybox", "command": ["sh", "-c", script]},
        {"name": "big", "image": "busybox", "command": ["sh", "-c", big]},
        {
            "name": "fallback",
            "image": "busybox",
            "command": ["sh", "-c", fallback],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        },
    ]
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "messenger"},
            "spec": {"restartPolicy": "Never", "containers": containers},
        },
    )

    def finished() -> Any:
        pod = core.read_namespaced_pod("messenger", namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = wait_for(finished, JOB_TIMEOUT, what="pod messenger finished")
    terminated = {s.name: s.state.terminated for s in pod.status.container_statuses}
    assert terminated["small"].message == "result: ok"
    assert terminated["big"].message is not None
    assert 0 < len(terminated["big"].message) <= 4096
    assert set(terminated["big"].message) == {"y"}
    assert terminated["fallback"].exit_code == 2
    assert "last words on stdout" in terminated["fallback"].message
    assert pod.status.phase == "Failed"


def test_active_deadline_seconds_kills_a_long_runner(kube_api: Any, namespace: str) -> None:
    batch = client.BatchV1Api(kube_api)
    marker = f"deadline-{uuid.uuid4().hex}"
    command = ["sh", "-c", f"sleep 300; : {marker}"]
    batch.create_namespaced_job(
        namespace, job_body("slow", command, activeDeadlineSeconds=3, backoffLimit=0)
    )
    wait_for(lambda: live_processes_with(marker), 60, what="the long runner started")

    condition = wait_for(
        lambda: job_condition(batch, namespace, "slow"), JOB_TIMEOUT, what="job slow done"
    )

    assert condition.type == "Failed"
    assert condition.reason == "DeadlineExceeded"
    wait_for(lambda: not live_processes_with(marker), 45, what="the long runner's process gone")


def test_deleting_a_job_garbage_collects_its_pods(kube_api: Any, namespace: str) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    marker = f"gc-{uuid.uuid4().hex}"
    batch.create_namespaced_job(
        namespace, job_body("owner", ["sh", "-c", f"sleep 300; : {marker}"])
    )
    pods = wait_for(lambda: job_pods(core, namespace, "owner"), 60, what="the job's pod")
    owners = pods[0].metadata.owner_references
    assert [(o.kind, o.name, o.controller) for o in owners] == [("Job", "owner", True)]
    wait_for(lambda: live_processes_with(marker), 60, what="the pod's process")

    # Background propagation: the Job goes at once, the garbage collector removes the Pods.
    batch.delete_namespaced_job("owner", namespace, propagation_policy="Background")

    wait_for(lambda: not job_pods(core, namespace, "owner"), 60, what="pods collected")
    wait_for(lambda: not live_processes_with(marker), 45, what="the pod's process gone")


RBAC_PROBE = textwrap.dedent(
    """
    import os
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    config.load_kube_config()  # $KUBECONFIG: the pod's service-account token
    namespace = os.environ["POD_NAMESPACE"]
    job = {
        "metadata": {"name": "made-by-" + os.environ["POD_NAME"]},
        "spec": {
            "suspend": True,
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}},
        },
    }
    try:
        client.BatchV1Api().create_namespaced_job(namespace, job)
        answer = "201"
    except ApiException as exc:
        answer = str(exc.status)
    with open(os.environ["TERMINATION_MESSAGE_PATH"], "w") as out:
        out.write(answer)
    """
)


def test_rbac_decides_what_a_pods_service_account_may_do(kube_api: Any, namespace: str) -> None:
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    for account in ("denied", "granted"):
        core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "job-creator"},
            "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "job-creator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "job-creator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "granted", "namespace": namespace}],
        },
    )
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    for account in ("denied", "granted"):
        container = {
            "name": "probe",
            "image": "python",
            "command": ["python", "-c", RBAC_PROBE],
            "env": env,
        }
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": f"as-{account}"},
                "spec": {
                    "serviceAccountName": account,
                    "restartPolicy": "Never",
                    "containers": [container],
                },
            },
        )

    def message(pod_name: str) -> str | None:
        pod = core.read_namespaced_pod(pod_name, namespace)
        statuses = pod.status.container_statuses or []
        if statuses and statuses[0].state.terminated:
            text: str = (
                statuses[0].state.terminated.message
                or f"exit {statuses[0].state.terminated.exit_code}"
            )
            return text
        return None

    assert wait_for(lambda: message("as-denied"), JOB_TIMEOUT, what="denied probe") == "403"
    assert wait_for(lambda: message("as-granted"), JOB_TIMEOUT, what="granted probe") == "201"
    made = client.BatchV1Api(kube_api).read_namespaced_job("made-by-as-granted", namespace)
    assert made.spec.suspend is True
    with pytest.raises(ApiException) as absent:
        client.BatchV1Api(kube_api).read_namespaced_job("made-by-as-denied", namespace)
    assert absent.value.status == 404


def test_as_a_new_user_up_job_logs_down(tmp_path: Path) -> None:
    """The issue's walk-through, through the CLI, in a cluster of its own."""
    env = {**os.environ, "PINSTER_DEVCLUSTER_DIR": str(tmp_path / "state")}
    env.pop("KUBECONFIG", None)
    up = devcluster_cli("up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "devcluster up in" in up.stderr
        kubeconfig = devcluster_cli("kubeconfig", env=env).stdout.strip()
        assert kubeconfig == str(tmp_path / "state" / "kubeconfig")
        cluster = DevCluster(tmp_path / "state")
        kubectl = Kubectl(cluster.bin_dir / "kubectl", {**env, "KUBECONFIG": kubeconfig})

        nodes = kubectl("get", "nodes", "--no-headers")
        assert nodes.split()[:2] == [NODE_NAME, "Ready"]
        assert len(nodes.strip().splitlines()) == 1
        kubectl("create", "job", "hello", "--image=busybox", "--", "sh", "-c", "echo hi")
        kubectl("wait", "--for=condition=complete", "job/hello", "--timeout=90s")
        pod = kubectl("get", "pods", "-l", "job-name=hello", "-o", "name").strip()
        logs = devcluster_cli("logs", pod.removeprefix("pod/"), env=env)
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout == "hi\n"

        # A running container too, to show that `down` takes it along.
        marker = f"down-{uuid.uuid4().hex}"
        kubectl(
            "run",
            "sleeper",
            "--image=busybox",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            f"sleep 300; : {marker}",
        )
        wait_for(lambda: live_processes_with(marker), 60, what="sleeper running")
    finally:
        down = devcluster_cli("down", env=env)
    assert down.returncode == 0, down.stderr
    assert live_processes_with(str(tmp_path / "state")) == []
    assert live_processes_with(marker) == []
    assert devcluster_cli("status", env=env).returncode == 1
