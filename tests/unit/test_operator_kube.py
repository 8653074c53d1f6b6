"""The operator's Kubernetes calls against a small HTTP/1.1 stand-in of the API server:
every call hands its connection back to the pool (one TCP connection for many calls)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client
from pinster_operator._kube import Kube

from pinster_images.resource import API_VERSION, KIND, Stage


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API server

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length)) if length else None
        server: _Server = self.server  # type: ignore[assignment]
        server.calls.append((self.command, self.path, request))
        if isinstance(request, dict) and request["metadata"].get("name") == "taken":
            status, body = 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if "/jobs/missing" in self.path:
            self._answer(404, {"kind": "Status", "code": 404})
        elif "/jobs" in self.path:
            self._answer(200, {"items": [{"metadata": {"name": "j"}}]})
        else:
            self._answer(200, {"metadata": {"name": "u", "resourceVersion": "7"}})

    def do_POST(self) -> None:
        self._answer(201, {"kind": "Event" if "/events" in self.path else "Job", "big": "x" * 9000})

    def do_PUT(self) -> None:
        self._answer(200, {"metadata": {"name": "u", "resourceVersion": "8"}, "status": {}})

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    calls: list[tuple[str, str, Any]]
    connections = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.calls = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _kube(server: _Server) -> Kube:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    return Kube(client.ApiClient(configuration), ("ns",))


UPLOAD = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": {"name": "u", "namespace": "ns", "uid": "uid-u", "resourceVersion": "7"},
    "spec": {"md5": "0" * 32},
}


TAKEN = {**UPLOAD, "metadata": {"name": "taken", "namespace": "ns"}}


def test_every_call_returns_its_connection_to_the_pool(server: _Server) -> None:
    kube = _kube(server)
    for _ in range(3):
        kube.event(UPLOAD, "Normal", "Moderating", "a message")
        assert kube.create_job({"metadata": {"name": "j", "namespace": "ns"}}) is True
        assert kube.get_upload("ns", "u") is not None
        assert kube.replace_status(UPLOAD, {"phase": "Pending"})["metadata"]["resourceVersion"]
        assert kube.get_job("ns", "missing") is None
        assert kube.list_jobs("ns", Stage.MODERATION)
        assert kube.create_upload(UPLOAD) is True
        assert kube.create_upload(TAKEN) is False
    assert len(server.calls) == 24
    assert server.connections == 1


def test_event_and_status_bodies(server: _Server) -> None:
    kube = _kube(server)
    kube.event(UPLOAD, "Warning", "Failed", "m" * 2000)
    kube.replace_status(UPLOAD, {"phase": "Ready"})
    (_, event_path, event), (_, status_path, put) = server.calls
    assert event_path == "/api/v1/namespaces/ns/events"
    assert event["involvedObject"] == {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": "u",
        "namespace": "ns",
        "uid": "uid-u",
    }
    assert (event["type"], event["reason"], len(event["message"])) == ("Warning", "Failed", 1024)
    assert event["metadata"] == {"generateName": "u.", "namespace": "ns"}
    assert status_path.endswith("/namespaces/ns/imageuploads/u/status")
    assert put["metadata"] == {"name": "u", "namespace": "ns", "resourceVersion": "7"}
    assert put["status"] == {"phase": "Ready"}
    assert put["spec"] == UPLOAD["spec"]


def test_create_upload_posts_the_manifest_and_says_whether_it_was_new(server: _Server) -> None:
    kube = _kube(server)
    assert kube.create_upload(UPLOAD) is True
    assert kube.create_upload(TAKEN) is False  # 409 AlreadyExists: the name is deterministic
    (method, path, body), _ = server.calls
    assert (method, path) == ("POST", "/apis/images.pinster.io/v1alpha1/namespaces/ns/imageuploads")
    assert body == UPLOAD
