"""Node status, recovered container states and single probe attempts (no cluster)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pinster_devcluster.agent._node import HOST_IP, node_status
from pinster_devcluster.agent._probes import check
from pinster_devcluster.agent._status import Container


def test_node_status_is_ready_with_a_stable_transition_time() -> None:
    status = node_status("v1.35.4", since="2026-01-01T00:00:00Z")

    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "KubeletReady"
    assert {conditions[t]["status"] for t in ("MemoryPressure", "DiskPressure", "PIDPressure")} == {
        "False"
    }
    assert {c["lastTransitionTime"] for c in status["conditions"]} == {"2026-01-01T00:00:00Z"}
    assert status["addresses"][0] == {"type": "InternalIP", "address": HOST_IP}
    assert status["nodeInfo"]["kubeletVersion"] == "v1.35.4"
    assert int(status["allocatable"]["pods"]) >= 100


def test_restore_keeps_a_finished_state_and_counts() -> None:
    container = Container("c", "img")
    container.restore(
        {
            "restartCount": 1,
            "containerID": "local://77",
            "state": {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": "2026-01-01T00:00:00Z",
                    "finishedAt": "2026-01-01T00:00:05Z",
                    "containerID": "local://77",
                }
            },
            "lastState": {"terminated": {"exitCode": 2}},
        },
        "ended",
    )

    status = container.to_status()
    assert status["state"]["terminated"]["finishedAt"] == "2026-01-01T00:00:05Z"
    assert status["containerID"] == "local://77"
    assert status["restartCount"] == 1 and status["lastState"]["terminated"]["exitCode"] == 2


def test_restore_of_a_running_container_reports_it_killed() -> None:
    container = Container("c", "img")
    container.restore({"restartCount": 0, "state": {"running": {"startedAt": "t0"}}}, "gone")

    terminated = container.to_status()["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (
        137,
        "Error",
        "gone",
    )
    assert terminated["startedAt"] == "t0"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_probes_pass_on_2xx_and_fail_on_5xx(http_port: int) -> None:
    container = {"ports": [{"name": "web", "containerPort": http_port}]}
    assert check({"httpGet": {"path": "/ok", "port": "web"}}, container, "127.0.0.1", {})
    assert not check({"httpGet": {"path": "/bad", "port": http_port}}, container, "127.0.0.1", {})
    # A named port the container does not declare never passes.
    assert not check({"httpGet": {"path": "/ok", "port": "nope"}}, container, "127.0.0.1", {})


def test_tcp_probes_need_a_listener(http_port: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert check({"tcpSocket": {"port": http_port}}, {}, "127.0.0.1", {})
    assert not check({"tcpSocket": {"port": closed}}, {}, "127.0.0.1", {})


def test_exec_probes_expand_references_and_fail_on_a_missing_command() -> None:
    env = {"PATH": "/usr/bin:/bin", "WANT": "yes"}
    assert check({"exec": {"command": ["test", "$(WANT)", "=", "yes"]}}, {}, "", env)
    assert not check({"exec": {"command": ["test", "$(WANT)", "=", "no"]}}, {}, "", env)
    assert not check({"exec": {"command": ["no-such-probe-tool"]}}, {}, "", env)
    assert not check({"exec": {"command": []}}, {}, "", env)
