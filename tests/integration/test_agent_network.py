"""Networking on the devcluster node (issue 2, for the chart of issue 6): each Pod has its
own loopback IP, and ClusterIP Services are served by the node agent's userspace proxy.

Real parts: the devcluster control plane and its node agent; the servers are Python's
http.server run as the Pods' commands.
"""

from __future__ import annotations

import socket
import sys
import textwrap
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.support.waiting import wait_for

TIMEOUT = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def web_pod(name: str, app: str, port: int, root: Path) -> dict[str, Any]:
    """http.server on the Pod's own IP, serving ``root``; ready when it answers."""
    return {
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "web",
                    "image": "python",
                    "command": [sys.executable, "-m", "http.server"],
                    "args": ["--bind", "$(POD_IP)", str(port)],
                    "workingDir": str(root),
                    "env": [
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                    ],
                    "ports": [{"name": "http", "containerPort": port}],
                    "readinessProbe": {
                        "httpGet": {"path": "/", "port": "http"},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def ready(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    pod = core.read_namespaced_pod(name, namespace)
    conditions = {c.type: c.status for c in pod.status.conditions or []}
    return pod if conditions.get("Ready") == "True" else None


CLIENT = textwrap.dedent(
    """
    import os, urllib.request
    url = "http://%s:%s/name.txt" % (os.environ["WEB_SERVICE_HOST"], os.environ["WEB_SERVICE_PORT"])
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    with open(os.environ["TERMINATION_MESSAGE_PATH"], "w") as out:
        out.write(body)
    """
)


def test_pods_share_a_port_on_their_own_ips_and_a_service_reaches_the_selected_one(
    kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube_api)
    port = free_port()
    for app in ("a", "b"):
        root = tmp_path / app
        root.mkdir()
        (root / "name.txt").write_text(f"served by {app}")
        core.create_namespaced_pod(namespace, web_pod(f"web-{app}", app, port, root))
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "a"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    )

    pods = [
        wait_for(partial(ready, core, namespace, f"web-{app}"), TIMEOUT, what=f"web-{app} ready")
        for app in "ab"
    ]

    # Same port, two Pods: each on an address of its own in 127.1.0.0/16.
    ips = [p.status.pod_ip for p in pods]
    assert ips[0] != ips[1] and all(ip.startswith("127.1.") for ip in ips)
    for pod, app in zip(pods, "ab", strict=True):
        direct = urllib.request.urlopen(f"http://{pod.status.pod_ip}:{port}/name.txt", timeout=5)
        assert direct.read().decode() == f"served by {app}"

    # The Service's cluster IP is on loopback and answers through the agent's proxy.
    cluster_ip = core.read_namespaced_service("web", namespace).spec.cluster_ip
    assert cluster_ip.startswith("127.96.")

    def through_service() -> str:
        with urllib.request.urlopen(f"http://{cluster_ip}:80/name.txt", timeout=5) as answer:
            return str(answer.read().decode())

    assert wait_for(through_service, 30, what="the service proxy") == "served by a"

    # A Pod finds the Service through the kubelet's service environment variables.
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "client"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "c", "image": "python", "command": [sys.executable, "-c", CLIENT]}
                ],
            },
        },
    )

    def finished() -> Any:
        pod = core.read_namespaced_pod("client", namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    client_pod = wait_for(finished, TIMEOUT, what="client pod done")
    terminated = client_pod.status.container_statuses[0].state.terminated
    assert (client_pod.status.phase, terminated.message) == ("Succeeded", "served by a")


def test_a_service_without_ready_endpoints_refuses_connections(
    kube_api: Any, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "nobody"},
            "spec": {"selector": {"app": "none"}, "ports": [{"port": 81}]},
        },
    )
    cluster_ip = core.read_namespaced_service("nobody", namespace).spec.cluster_ip

    def closed_at_once() -> bool:
        # The proxy listens (connect succeeds) and closes: no endpoint to forward to.
        with socket.create_connection((cluster_ip, 81), timeout=5) as sock:
            sock.settimeout(5)
            return sock.recv(1) == b""

    assert wait_for(closed_at_once, 30, what="the proxy listening")
