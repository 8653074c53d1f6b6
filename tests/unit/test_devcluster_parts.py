"""devcluster pieces that need no cluster: settings, PKI, component files, process records."""

from __future__ import annotations

import dataclasses
import os
import ssl
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from pinster_devcluster import DevCluster, DevClusterSettings, check_bin_dir
from pinster_devcluster._components import Layout, Ports
from pinster_devcluster._pki import generate
from pinster_devcluster._procs import family, is_alive, read_record, spawn, stop, write_record
from pinster_devcluster.cli import main

from pinster_images.errors import ConfigError
from tests.support.waiting import wait_for


def test_settings_from_env() -> None:
    settings = DevClusterSettings.from_env(
        {
            "PINSTER_DEVCLUSTER_DIR": "/srv/dc",
            "PINSTER_CACHE_DIR": "/cache",
            "PINSTER_DEVCLUSTER_NODE": "false",
            "PINSTER_DEVCLUSTER_TIMEOUT": "30",
        }
    )
    assert settings.state_dir == Path("/srv/dc")
    assert settings.bin_dir == Path("/cache/bin/current")
    assert settings.node is False
    assert settings.cache_dir == Path("/cache")
    assert settings.start_timeout == 30.0
    explicit = DevClusterSettings.from_env({"PINSTER_BIN_DIR": "/b", "PINSTER_CACHE_DIR": "/c"})
    assert explicit.bin_dir == Path("/b")
    with pytest.raises(ConfigError, match="PINSTER_DEVCLUSTER_GRACE"):
        DevClusterSettings.from_env({"PINSTER_DEVCLUSTER_GRACE": "soon"})


def test_missing_binaries_say_how_to_build_them(tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("")
    with pytest.raises(ConfigError, match="make binaries") as missing:
        check_bin_dir(tmp_path)
    assert "kube-apiserver" in str(missing.value) and "etcd," not in str(missing.value)
    # A cluster with a node needs the node's binaries too; one without does not.
    assert "kubelet" in str(missing.value) and "cni/bridge" in str(missing.value)
    with pytest.raises(ConfigError) as control_plane_only:
        check_bin_dir(tmp_path, node=False)
    assert "kubelet" not in str(control_plane_only.value)
    with pytest.raises(ConfigError, match="make binaries"):
        DevCluster(tmp_path / "state", tmp_path).up()


def test_cli_up_without_binaries_fails_with_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PINSTER_BIN_DIR", str(tmp_path / "nothing"))
    assert main(["up", "--state-dir", str(tmp_path / "state")]) == 1
    assert "make binaries" in capsys.readouterr().err


def test_pki_identities_and_key_permissions(tmp_path: Path) -> None:
    pki = generate(tmp_path / "pki", service_ip="10.96.0.1", node_ip="10.253.0.1")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(pki.client_cert("admin").read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())

    assert admin.issuer == ca.subject
    orgs = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.253.0.1",
        "10.96.0.1",
    }
    assert {"localhost", "kubernetes.default.svc"} <= set(sans.get_values_for_type(x509.DNSName))
    for key in (pki.ca_key, pki.serving_key, pki.sa_key, pki.client_key("admin")):
        assert key.stat().st_mode & 0o777 == 0o600, key
    # The node's identities: what the Node authorizer keys on, and the kubelet's server.
    kubelet = x509.load_pem_x509_certificate(pki.client_cert("kubelet").read_bytes())
    assert kubelet.subject.rfc4514_string() == "CN=system:node:devcluster-node,O=system:nodes"
    kubelet_serving = x509.load_pem_x509_certificate(pki.server_cert("kubelet").read_bytes())
    node_sans = kubelet_serving.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert [str(ip) for ip in node_sans.value.get_values_for_type(x509.IPAddress)] == ["10.253.0.1"]
    assert pki.server_cert("kubelet") != pki.client_cert("kubelet")
    # The chain verifies with the standard library, as the kubernetes client will do it.
    ssl.create_default_context(cafile=str(pki.ca_cert)).load_cert_chain(
        str(pki.client_cert("admin")), str(pki.client_key("admin"))
    )
    # Idempotent: an existing set is kept (kubeconfigs already handed out stay valid).
    before = pki.ca_cert.read_bytes()
    generate(tmp_path / "pki", service_ip="10.96.0.1", node_ip="10.253.0.1")
    assert pki.ca_cert.read_bytes() == before
    # ...unless an address moved: the serving certificates must name the new one.
    generate(tmp_path / "pki", service_ip="10.96.0.1", node_ip="10.253.9.1")
    assert pki.ca_cert.read_bytes() != before


def test_ports_are_kept_when_free_and_replaced_when_taken(tmp_path: Path) -> None:
    import socket

    first = Ports.pick()
    assert len(set(dataclasses.astuple(first))) == len(dataclasses.fields(Ports))
    Layout(tmp_path, tmp_path, first, node=True).save(tmp_path / "cluster.json")
    saved = Layout.load(tmp_path / "cluster.json", tmp_path, tmp_path)
    assert saved is not None and (saved.ports, saved.node) == (first, True)
    assert Ports.pick(first) == first
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", first.apiserver))
        busy.listen()
        moved = Ports.pick(first)
    assert moved.apiserver != first.apiserver
    assert moved.etcd_client == first.etcd_client


def test_a_record_with_another_start_time_is_never_signalled(tmp_path: Path) -> None:
    record = spawn(["sleep", "60"], log=tmp_path / "sleep.log", env=os.environ)
    try:
        assert is_alive(record)
        impostor = dataclasses.replace(record, start_time=record.start_time - 1)
        assert not is_alive(impostor)
        stop(impostor, grace=0.5)
        assert is_alive(record)
    finally:
        stop(record, grace=2)
    assert not is_alive(record)


def test_stop_takes_the_children_along(tmp_path: Path) -> None:
    # A parent that ignores SIGTERM, with a child that would outlive it.
    script = "trap '' TERM; sleep 60 & echo $! > child.pid; wait"
    record = spawn(["sh", "-c", script], log=tmp_path / "sh.log", env=os.environ, cwd=tmp_path)
    child_pid = wait_for(
        lambda: (tmp_path / "child.pid").exists() and (tmp_path / "child.pid").read_text().strip(),
        timeout=10,
        what="child pid",
    )
    members = family(record)
    assert {m.pid for m in members} == {record.pid, int(child_pid)}

    stopped = stop(record, grace=0.5)

    assert {m.pid for m in stopped} == {record.pid, int(child_pid)}
    assert not any(is_alive(m) for m in members)


def test_records_round_trip_and_torn_files_identify_nothing(tmp_path: Path) -> None:
    record = spawn([sys.executable, "-c", "pass"], log=tmp_path / "x.log", env=os.environ)
    write_record(tmp_path / "x.pid", record)
    assert read_record(tmp_path / "x.pid") == record
    (tmp_path / "torn.pid").write_text('{"pid": 12')
    assert read_record(tmp_path / "torn.pid") is None
    assert read_record(tmp_path / "absent.pid") is None
    wait_for(lambda: not is_alive(record), timeout=10, what="python exits")


def test_an_object_store_that_dies_while_starting_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MinIO's boot can panic (an upstream race): the restart starts it again, a bounded
    number of times, and gives up with the error when every start died."""
    from pinster_devcluster import _cluster
    from pinster_devcluster._procs import ProcessRecord

    cluster = DevCluster(tmp_path / "state", tmp_path)
    died = ProcessRecord(pid=1, start_time=-1)
    spawned: list[ProcessRecord] = []
    outcomes: list[Exception | None] = []

    def spawn(layout: object, name: str) -> ProcessRecord:
        spawned.append(died)
        return died

    def wait(layout: object, record: ProcessRecord) -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(cluster, "_spawn", spawn)
    monkeypatch.setattr(cluster, "_stop", lambda name, record: None)
    monkeypatch.setattr(cluster, "_wait_for_objectstore", wait)
    monkeypatch.setattr(_cluster._procs, "is_alive", lambda record: False)
    layout: object = None

    outcomes[:] = [_cluster.StartupError("objectstore exited during startup"), None]
    cluster._restart_objectstore(layout, died)  # type: ignore[arg-type]
    assert len(spawned) == 2

    spawned.clear()
    outcomes[:] = [_cluster.StartupError("objectstore exited during startup")] * 3
    with pytest.raises(_cluster.StartupError, match="exited during startup"):
        cluster._restart_objectstore(layout, died)  # type: ignore[arg-type]
    assert len(spawned) == 3
