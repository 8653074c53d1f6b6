"""The node agent: registers the Node, watches the Pods bound to it and runs a worker
per Pod; serves ClusterIP Services on loopback."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from pinster_devcluster import paths
from pinster_devcluster.agent._node import HOST_IP, Node
from pinster_devcluster.agent._pods import IpAllocator, PodWorker, Runtime
from pinster_devcluster.agent._process import kill_stale
from pinster_devcluster.agent._proxy import ServiceProxy
from pinster_images import kube

log = logging.getLogger("pinster_devcluster.agent")


class Agent:
    def __init__(self, kubeconfig: Path, state_dir: Path, node_name: str) -> None:
        self.api = kube.api_client(str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.node = Node(self.api, node_name)
        configuration = self.api.configuration
        # Pods find `pinster-images`, python and the tools of the agent's environment first.
        bin_dir = str(Path(sys.executable).parent)
        self.runtime = Runtime(
            core=self.core,
            serialize=self.api.sanitize_for_serialization,
            state_dir=state_dir,
            node_name=node_name,
            host_ip=HOST_IP,
            server=configuration.host,
            ca_file=configuration.ssl_ca_cert,
            base_path=os.pathsep.join([bin_dir, os.environ.get("PATH", os.defpath)]),
        )
        self.ips = IpAllocator()
        self.workers: dict[str, PodWorker] = {}
        self.stop = threading.Event()

    def _handle(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.deleting.set()
                worker.shutdown.set()
                self.workers.pop(uid, None)
            return
        if worker is None:
            worker = PodWorker(self.runtime, self.ips, pod)
            worker.update(pod)
            self.workers[uid] = worker
            worker.start()
        else:
            worker.update(pod)
        for dead in [u for u, w in self.workers.items() if not w.is_alive() and u != uid]:
            self.workers.pop(dead)

    def _watch_pods(self) -> None:
        selector = f"spec.nodeName={self.node.name}"
        while not self.stop.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                present = set()
                for item in listing.items:
                    pod = self.api.sanitize_for_serialization(item)
                    present.add(pod["metadata"]["uid"])
                    self._handle("ADDED", pod)
                for uid in set(self.workers) - present:
                    self._handle("DELETED", {"metadata": {"uid": uid}})
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=60,
                )
                for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._handle(event["type"], event["raw_object"])
                    elif event["type"] == "ERROR":  # e.g. 410 Gone: list and watch again
                        log.info("pod watch ended: %s", event["raw_object"].get("message"))
                        break
                    if self.stop.is_set():
                        break
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: resource version too old; list again
                    log.warning("pod watch failed: %s", exc.reason)
                    self.stop.wait(1)
            except Exception:
                log.exception("pod watch failed; restarting")
                self.stop.wait(1)

    def run(self) -> int:
        killed = kill_stale(paths.pods_dir(self.runtime.state_dir))
        if killed:
            log.info("killed %d processes left by a previous agent", killed)
        self.node.register()
        threading.Thread(
            target=self.node.run_heartbeats, args=(self.stop,), daemon=True, name="heartbeat"
        ).start()
        threading.Thread(
            target=ServiceProxy(self.api).run, args=(self.stop,), daemon=True, name="proxy"
        ).start()
        watcher = threading.Thread(target=self._watch_pods, daemon=True, name="pod-watch")
        watcher.start()
        log.info("node agent running", extra={"node": self.node.name})
        self.stop.wait()
        for worker in list(self.workers.values()):
            worker.shutdown.set()
        for worker in list(self.workers.values()):
            worker.join(timeout=35)
        return 0

    def request_stop(self, signum: int, _frame: object) -> None:
        log.info("stopping on signal %d; ending every container", signum)
        self.stop.set()


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
