"""The node agent's pure parts: environment, status and addressing rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from pinster_devcluster.agent import _env
from pinster_devcluster.agent._pods import IpAllocator
from pinster_devcluster.agent._probes import ProbeState
from pinster_devcluster.agent._status import MESSAGE_LIMIT, Container, phase_of, termination_message

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "a"}},
    "spec": {"nodeName": "n", "serviceAccountName": "sa"},
    "status": {"podIP": "127.1.0.2", "hostIP": "127.0.0.1"},
}


def lookup(kind: str, namespace: str, name: str) -> dict[str, str] | None:
    objects = {
        ("ConfigMap", "ns", "cm"): {"A": "1", "B": "2"},
        ("Secret", "ns", "s"): {"TOKEN": "t"},
    }
    return objects.get((kind, namespace, name))


def test_expand_replaces_defined_names_escapes_and_keeps_undefined() -> None:
    env = {"A": "x"}
    assert _env.expand("$(A)-$(B)-$$(A)", env) == "x-$(B)-$(A)"


def test_resolve_orders_env_from_then_env_with_references() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "TOKEN"}}},
            {
                "name": "MISSING",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
            {"name": "GREETING", "value": "$(NAME)@$(IP) $(CM_A)"},
        ],
    }
    env = _env.resolve(POD, container, lookup, {"PATH": "/bin"})
    assert env["GREETING"] == "p@127.1.0.2 1"
    assert env["APP"] == "a" and env["TOKEN"] == "t" and env["CM_B"] == "2"
    assert "MISSING" not in env and env["PATH"] == "/bin"


def test_resolve_refuses_a_missing_required_key() -> None:
    container = {
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "Z"}}}]
    }
    with pytest.raises(_env.EnvError, match="couldn't find key Z"):
        _env.resolve(POD, container, lookup, {})


def test_resource_field_ref_uses_limits_and_divisor() -> None:
    container = {
        "resources": {"limits": {"memory": "64Mi"}},
        "env": [
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            }
        ],
    }
    assert _env.resolve(POD, container, lookup, {})["MEM"] == "64"


def test_service_links_follow_the_kubelet_naming() -> None:
    service = {
        "metadata": {"name": "pinster-images"},
        "spec": {
            "clusterIP": "127.96.0.9",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    }
    env = _env.service_links([service])
    assert env["PINSTER_IMAGES_SERVICE_HOST"] == "127.96.0.9"
    assert env["PINSTER_IMAGES_SERVICE_PORT_HTTP"] == "80"
    assert env["PINSTER_IMAGES_PORT"] == "tcp://127.96.0.9:80"


def test_termination_message_is_capped_and_falls_back_to_logs(tmp_path: Path) -> None:
    message, log = tmp_path / "msg", tmp_path / "log"
    message.write_text("x" * (MESSAGE_LIMIT + 100))
    assert len(termination_message(message, "File", 1, log)) == MESSAGE_LIMIT
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    fallback = termination_message(tmp_path / "none", "FallbackToLogsOnError", 1, log)
    assert fallback.splitlines()[-1] == "line 199" and len(fallback.splitlines()) == 80
    assert termination_message(tmp_path / "none", "FallbackToLogsOnError", 0, log) == ""


def _terminated(code: int) -> Container:
    container = Container("c", "img")
    container.mark_running(1)
    container.mark_terminated(code, "")
    return container


def test_phase_follows_restart_policy() -> None:
    assert phase_of([_terminated(0)], "Never", False) == "Succeeded"
    assert phase_of([_terminated(1)], "Never", False) == "Failed"
    assert phase_of([_terminated(1)], "OnFailure", False) == "Running"
    assert phase_of([_terminated(0)], "Always", False) == "Running"
    assert phase_of([Container("c", "img")], "Never", False) == "Pending"
    assert phase_of([Container("c", "img")], "Never", True) == "Failed"


def test_restart_keeps_the_last_state_and_counts() -> None:
    container = _terminated(3)
    container.mark_running(2)
    status = container.to_status()
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["state"]["running"] is not None and status["state"]["terminated"] is None


def test_ip_allocator_gives_distinct_addresses_and_reuses_released_ones() -> None:
    ips = IpAllocator()
    first, second = ips.allocate("a"), ips.allocate("b")
    assert first != second and first.startswith("127.1.")
    assert ips.allocate("a") == first
    ips.release("a")
    assert ips.allocate("c") == first
    assert ips.allocate("d", preferred="127.1.9.9") == "127.1.9.9"


def test_probe_state_needs_consecutive_failures() -> None:
    state = ProbeState({"failureThreshold": 2, "periodSeconds": 1}, started=0.0)
    state.record(True, 0)
    assert state.passing
    state.record(False, 1)
    assert state.passing and not state.failed
    state.record(False, 2)
    assert not state.passing and state.failed
