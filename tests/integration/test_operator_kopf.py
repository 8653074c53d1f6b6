"""The operator in this test's process under kopf's own test runner
(``kopf.testing.KopfRunner``), against the devcluster's API server and object store: the
handlers the operator registers are all kopf needs, kopf dispatches an ImageUpload's
events to the controller, the controller acts on them (status and a moderation Job),
and the run ends cleanly when the runner stops it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client
from pinster_operator._handlers import build_registry

from pinster_images import resource
from tests.support import images
from tests.support.jobs import stage_upload
from tests.support.net import free_port
from tests.support.operator_cluster import cluster_controller
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def test_kopf_runs_the_operator_and_dispatches_to_its_controller(
    devcluster: Any,
    kube_api: Any,
    namespace: str,
    crd_installed: str,
    s3_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(devcluster.kubeconfig))  # kopf's login reads it
    controller = cluster_controller(
        devcluster,
        s3_env,
        tmp_path / "keys",
        PINSTER_WATCH_NAMESPACES=namespace,
        PINSTER_OPERATOR_HOST="127.0.0.1",
        PINSTER_METRICS_PORT=str(free_port()),
        PINSTER_HEALTH_PORT="0",
        PINSTER_BATCH_WINDOW="0.2",
    )
    name, spec = stage_upload(controller.storage, images.jpeg(64, 48), width=64, height=48)
    uploads = client.CustomObjectsApi(kube_api)

    def moderating() -> dict[str, Any] | None:
        found: dict[str, Any] = uploads.get_namespaced_custom_object(
            resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name
        )
        return found if (found.get("status") or {}).get("phase") == "Moderating" else None

    args = ["run", "--standalone", "--namespace", namespace]
    with KopfRunner(args, registry=build_registry(controller)) as runner:
        uploads.create_namespaced_custom_object(
            resource.GROUP,
            resource.VERSION,
            namespace,
            resource.PLURAL,
            resource.manifest(name, namespace, spec),
        )
        found = wait_for(moderating, timeout=60, what="the upload to reach Moderating")
        jobs = client.BatchV1Api(kube_api).list_namespaced_job(
            namespace, label_selector=f"{resource.LABEL_STAGE}=moderation"
        )
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
    assert [h["phase"] for h in found["status"]["phaseHistory"]] == ["Pending", "Moderating"]
    (job,) = jobs.items
    assert job.metadata.labels[resource.LABEL_PART_OF] == resource.PART_OF
    # kopf kept nothing of its own in the object (event handlers only).
    assert not found["metadata"].get("finalizers")
    assert "kopf" not in found["status"]
