"""The Node object and its heartbeats (Lease and status), so it stays Ready and is never
tainted or evicted by the node-lifecycle controller."""

from __future__ import annotations

import logging
import platform
import threading
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from pinster_devcluster.agent._status import now

log = logging.getLogger("pinster_devcluster.agent.node")

HOST_IP = "127.0.0.1"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "100Gi"}
#: GOARCH names, as the kubelet reports them and as nodeSelectors use them
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine(), platform.machine()
)


def _conditions(since: str) -> list[dict[str, Any]]:
    """Every heartbeat moves lastHeartbeatTime; lastTransitionTime stays at ``since``
    (the agent's start), as nothing ever changes."""
    stamp = now()
    quiet = [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ]
    conditions = [
        {"type": t, "status": "False", "reason": r, "message": "devcluster node agent",
         "lastHeartbeatTime": stamp, "lastTransitionTime": since}
        for t, r in quiet
    ]  # fmt: skip
    conditions.append(
        {"type": "Ready", "status": "True", "reason": "KubeletReady",
         "message": "devcluster node agent is posting ready status",
         "lastHeartbeatTime": stamp, "lastTransitionTime": since}
    )  # fmt: skip
    return conditions


def node_status(kubelet_version: str, since: str | None = None) -> dict[str, Any]:
    return {
        "capacity": CAPACITY,
        "allocatable": CAPACITY,
        "conditions": _conditions(since or now()),
        "addresses": [
            {"type": "InternalIP", "address": HOST_IP},
            {"type": "Hostname", "address": "localhost"},
        ],
        "nodeInfo": {
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": kubelet_version,
            "operatingSystem": "linux",
            "architecture": ARCH,
            "containerRuntimeVersion": "local://pinster-devcluster",
            "osImage": "pinster devcluster (local processes)",
            "kernelVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    }


class Node:
    def __init__(self, api: client.ApiClient, name: str) -> None:
        self.name = name
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.version = client.VersionApi(api).get_code().git_version
        self.since = now()

    def register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": ARCH,
                    "node.kubernetes.io/instance-type": "devcluster",
                },
            },
        }
        try:
            self.core.create_node(body)
            log.info("registered node", extra={"node": self.name})
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.heartbeat()

    def heartbeat(self) -> None:
        self.core.patch_node_status(self.name, {"status": node_status(self.version, self.since)})
        self._renew_lease()

    def _renew_lease(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": stamp,
        }
        try:
            self.coordination.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": spec})
        except ApiException as exc:
            if exc.status != 404:
                raise
            node = self.core.read_node(self.name)
            self.coordination.create_namespaced_lease(
                "kube-node-lease",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": self.name,
                                "uid": node.metadata.uid,
                            }
                        ],
                    },
                    "spec": spec,
                },
            )

    def run_heartbeats(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                self.heartbeat()
            except Exception:
                log.exception("node heartbeat failed; retrying", extra={"node": self.name})
