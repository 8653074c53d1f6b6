"""The devcluster control plane: API server behaviour, and the up/status/down lifecycle.

Lifecycle tests run their own control-plane-only clusters (``node=False``: loopback
ports of their own, no node) in their own state directories, so killing and stopping
components never disturbs the session cluster, which holds this machine's node. The
node's own lifecycle is in test_node.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pinster_devcluster import DevCluster, ProcessRecord, StartupError
from pinster_devcluster._procs import family, is_alive, read_record
from pinster_devcluster.paths import pid_file

from tests.support.procstat import live_processes_with
from tests.support.waiting import wait_for


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinster_images.cli", "devcluster", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def all_families(cluster: DevCluster) -> list[ProcessRecord]:
    members: list[ProcessRecord] = []
    for name in cluster.components():
        record = read_record(pid_file(cluster.state_dir, name))
        assert record is not None, name
        members += family(record)
    return members


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[DevCluster]:
    """A separate cluster for tests that kill or stop components."""
    cluster = DevCluster(tmp_path / "state", start_timeout=90, stop_grace=5, node=False)
    try:
        yield cluster
    finally:
        cluster.down()


# -- the API server as the operator needs it -----------------------------------------------


def test_crd_structural_schema_prunes_unknown_fields_and_enforces_cel(
    kube_api: Any, namespace: str
) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.devcluster.test"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "min": {"type": "integer"},
                                        "max": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.min <= self.max",
                                            "message": "min must not exceed max",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    extensions = client.ApiextensionsV1Api(kube_api)
    extensions.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            found = extensions.read_custom_resource_definition(f"widgets.{group}")
            conditions = (found.status.conditions if found.status else None) or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_for(established, timeout=30, what="CRD Established")
        objects = client.CustomObjectsApi(kube_api)

        def create(name: str, spec: dict[str, Any]) -> dict[str, Any]:
            body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name}}
            body["spec"] = spec
            created: dict[str, Any] = objects.create_namespaced_custom_object(
                group, "v1", namespace, "widgets", body
            )
            return created

        # The discovery of a fresh CRD may lag its Established condition by a moment.
        created = wait_for(
            lambda: create("ok", {"min": 1, "max": 2, "undeclared": "dropped"}),
            timeout=30,
            what="first Widget accepted",
        )
        assert created["spec"] == {"min": 1, "max": 2}
        stored = objects.get_namespaced_custom_object(group, "v1", namespace, "widgets", "ok")
        assert stored["spec"] == {"min": 1, "max": 2}

        with pytest.raises(ApiException) as refused:
            create("bad", {"min": 3, "max": 2})
        assert refused.value.status == 422
        assert "min must not exceed max" in refused.value.body
    finally:
        extensions.delete_custom_resource_definition(f"widgets.{group}")


def test_rbac_is_enforced_for_unprivileged_users(kube_api: Any, namespace: str) -> None:
    # A service account without any RoleBinding, asked through the real authorizer.
    authz = client.AuthorizationV1Api(kube_api)
    review = authz.create_subject_access_review(
        {
            "spec": {
                "user": f"system:serviceaccount:{namespace}:default",
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": "create",
                    "group": "batch",
                    "resource": "jobs",
                },
            }
        }
    )
    assert review.status.allowed is False


# -- lifecycle -------------------------------------------------------------------------------


def test_up_is_idempotent_and_status_reports_a_crashed_component(own_cluster: DevCluster) -> None:
    first = own_cluster.up()
    assert first.already_running is False
    before = read_record(pid_file(own_cluster.state_dir, "kube-scheduler"))
    assert before is not None

    again = own_cluster.up()
    assert again.already_running is True
    assert read_record(pid_file(own_cluster.state_dir, "kube-scheduler")) == before

    os.kill(before.pid, signal.SIGKILL)
    wait_for(lambda: not is_alive(before), timeout=10, what="scheduler gone")
    states = {s.name: s for s in own_cluster.status()}
    assert states["kube-scheduler"].state == "crashed"
    assert str(before.pid) in states["kube-scheduler"].detail
    assert "last log lines" in states["kube-scheduler"].detail
    assert states["kube-apiserver"].state == "running"

    shown = cli("status", "--state-dir", str(own_cluster.state_dir))
    assert shown.returncode == 1
    assert "kube-scheduler" in shown.stdout and "crashed" in shown.stdout

    # `up` repairs it: a restarted cluster on the same ports, all running again.
    server = own_cluster.server
    repaired = own_cluster.up()
    assert repaired.already_running is False
    assert own_cluster.server == server
    assert own_cluster.healthy()
    assert cli("status", "--state-dir", str(own_cluster.state_dir)).returncode == 0


def test_down_leaves_no_process_of_the_cluster(own_cluster: DevCluster) -> None:
    own_cluster.up()
    members = all_families(own_cluster)
    assert len(members) >= len(own_cluster.components())
    assert live_processes_with(str(own_cluster.state_dir))

    stopped = own_cluster.down()

    assert {m.pid for m in members} <= {s.pid for s in stopped}
    assert [m for m in members if is_alive(m)] == []
    assert live_processes_with(str(own_cluster.state_dir)) == []
    assert all(s.state in ("stopped", "disabled") for s in own_cluster.status())
    assert list((own_cluster.state_dir / "pids").iterdir()) == []
    shown = cli("status", "--state-dir", str(own_cluster.state_dir))
    assert shown.returncode == 1


def test_a_component_dying_at_startup_is_reported_with_its_log(tmp_path: Path) -> None:
    real = DevCluster(tmp_path / "unused").bin_dir
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for binary in real.iterdir():
        (bin_dir / binary.name).symlink_to(binary.resolve())
    (bin_dir / "kube-apiserver").unlink()
    broken = bin_dir / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'cannot start: simulated failure' >&2\nexit 3\n")
    broken.chmod(0o755)
    cluster = DevCluster(tmp_path / "state", bin_dir, start_timeout=30, node=False)

    with pytest.raises(StartupError) as failed:
        cluster.up()

    message = str(failed.value)
    assert "kube-apiserver exited during startup with exit code 3" in message
    assert "cannot start: simulated failure" in message
    # What had started (etcd) was stopped again.
    assert live_processes_with(str(cluster.state_dir)) == []
    assert all(s.state in ("stopped", "disabled") for s in cluster.status())


OWNER = """
import sys, time
from pathlib import Path
from pinster_devcluster import DevCluster
from pinster_devcluster._watchdog import watch

cluster = DevCluster(Path(sys.argv[1]), node=False)
cluster.up()
watch(cluster)
print("up", flush=True)
time.sleep(600)
"""


def test_a_killed_owner_takes_its_cluster_along(tmp_path: Path) -> None:
    state = tmp_path / "state"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline() == "up\n"
        assert live_processes_with(str(state))
        owner.kill()  # as a timeout would: no finalizer runs
        owner.wait(timeout=10)

        wait_for(lambda: not live_processes_with(str(state)), 60, what="cluster stopped")
        assert "is gone: stopping the cluster" in (state / "logs" / "watchdog.log").read_text()
    finally:
        owner.kill()
        DevCluster(state, node=False).down()
