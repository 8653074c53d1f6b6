"""Services on the devcluster node: a userspace proxy from each ClusterIP Service port
(the service CIDR is on loopback) to a ready endpoint, as kube-proxy's old userspace
mode did. Enough for Pods and people on this machine to reach a Service by its IP."""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import socket
import threading
from typing import Any

from kubernetes import client, watch

log = logging.getLogger("pinster_devcluster.agent.proxy")

LOOPBACK_PREFIX = "127."


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


class ServiceProxy:
    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.serialize = api.sanitize_for_serialization
        self._listeners: dict[tuple[str, int], tuple[socket.socket, str, str, str]] = {}
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._round_robin = itertools.count()

    # --- which endpoints serve a Service port ---

    def _endpoints(self, namespace: str, service: str, port_name: str) -> list[tuple[str, int]]:
        """Ready Pods selected by the Service. EndpointSlices cannot be used: the API
        server refuses loopback endpoint addresses, and Pod IPs here are loopback."""
        spec = self.core.read_namespaced_service(service, namespace).spec
        if not spec.selector:
            return []
        port = next((p for p in spec.ports or [] if (p.name or "") == port_name), None)
        if port is None:
            return []
        selector = ",".join(f"{k}={v}" for k, v in spec.selector.items())
        result: list[tuple[str, int]] = []
        for pod in self.core.list_namespaced_pod(namespace, label_selector=selector).items:
            ready = any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )
            if not ready or not pod.status.pod_ip or pod.metadata.deletion_timestamp:
                continue
            target = port.target_port if port.target_port is not None else port.port
            if isinstance(target, str) and not target.isdigit():
                named = [
                    p.container_port
                    for c in pod.spec.containers
                    for p in c.ports or []
                    if p.name == target
                ]
                if not named:
                    continue
                target = named[0]
            result.append((pod.status.pod_ip, int(target)))
        return result

    def _accept(self, listener: socket.socket) -> None:
        key = listener.getsockname()
        with self._lock:
            entry = self._listeners.get((key[0], key[1]))
        if entry is None:
            return
        _, namespace, service, port_name = entry
        connection, _ = listener.accept()
        try:
            endpoints = self._endpoints(namespace, service, port_name)
        except Exception:
            endpoints = []
        if not endpoints:
            connection.close()  # as kube-proxy: no ready endpoint, connection refused/reset
            return
        target_address = endpoints[next(self._round_robin) % len(endpoints)]
        try:
            upstream = socket.create_connection(target_address, timeout=5)
            upstream.settimeout(None)
        except OSError:
            connection.close()
            return
        threading.Thread(target=_pipe, args=(connection, upstream), daemon=True).start()
        threading.Thread(target=_pipe, args=(upstream, connection), daemon=True).start()

    # --- keeping listeners in line with Services ---

    def _sync_service(self, service: dict[str, Any], deleted: bool) -> None:
        meta, spec = service["metadata"], service.get("spec", {})
        ip = spec.get("clusterIP") or ""
        wanted: set[tuple[str, int]] = set()
        if not deleted and ip.startswith(LOOPBACK_PREFIX):
            for port in spec.get("ports") or []:
                if port.get("protocol", "TCP") == "TCP":
                    wanted.add((ip, int(port["port"])))
                    self._listen(
                        ip,
                        int(port["port"]),
                        meta["namespace"],
                        meta["name"],
                        port.get("name") or "",
                    )
        with self._lock:
            stale = [
                k for k, v in self._listeners.items()
                if v[1] == meta["namespace"] and v[2] == meta["name"] and k not in wanted
            ]  # fmt: skip
        for key in stale:
            self._close(key)

    def _listen(self, ip: str, port: int, namespace: str, name: str, port_name: str) -> None:
        with self._lock:
            if (ip, port) in self._listeners:
                return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((ip, port))
        except OSError as exc:
            log.warning("cannot serve service %s/%s on %s:%s: %s", namespace, name, ip, port, exc)
            listener.close()
            return
        listener.listen(64)
        listener.setblocking(False)
        with self._lock:
            self._listeners[(ip, port)] = (listener, namespace, name, port_name)
        self._selector.register(listener, selectors.EVENT_READ)
        log.info(
            "serving service", extra={"service": f"{namespace}/{name}", "address": f"{ip}:{port}"}
        )

    def _close(self, key: tuple[str, int]) -> None:
        with self._lock:
            entry = self._listeners.pop(key, None)
        if entry is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(entry[0])
            entry[0].close()

    def run(self, stop: threading.Event) -> None:
        threading.Thread(target=self._serve, args=(stop,), daemon=True, name="proxy-serve").start()
        while not stop.is_set():
            try:
                listing = self.core.list_service_for_all_namespaces()
                for item in listing.items:
                    self._sync_service(self.serialize(item), deleted=False)
                stream = watch.Watch().stream(
                    self.core.list_service_for_all_namespaces,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=120,
                )
                for event in stream:
                    self._sync_service(event["raw_object"], deleted=event["type"] == "DELETED")
                    if stop.is_set():
                        break
            except Exception:
                log.exception("service watch failed; restarting")
                stop.wait(2)
        for key in list(self._listeners):
            self._close(key)

    def _serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self._selector.get_map():
                stop.wait(0.2)
                continue
            try:
                events = self._selector.select(timeout=0.5)
            except (OSError, ValueError):
                continue
            for key, _ in events:
                with contextlib.suppress(OSError):
                    self._accept(key.fileobj)  # type: ignore[arg-type]
