"""The orphan sweep against the devcluster's API server and object store: an index that
has not seen an ImageUpload yet (the operator has just started, its first listing still
running) deletes nothing the API server still has, and only the orphans cost a request;
once the ImageUpload is gone, its raw bytes and its result record go too."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from pinster_operator._sweep import SweepSummary

from pinster_images import resource, results
from pinster_images.storage import Area, raw_key
from tests.support import images
from tests.support.jobs import stage_upload
from tests.support.operator_cluster import cluster_controller
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def test_the_sweep_asks_the_api_server_before_it_deletes(
    devcluster: Any,
    kube_api: Any,
    namespace: str,
    crd_installed: str,
    s3_env: dict[str, str],
    tmp_path: Path,
) -> None:
    controller = cluster_controller(
        devcluster,
        s3_env,
        tmp_path / "keys",
        PINSTER_WATCH_NAMESPACES=namespace,
        PINSTER_ADOPT_AFTER="0",  # no adoption: an orphan is deleted after the grace
        PINSTER_ORPHAN_GRACE="1",
    )
    storage = controller.storage
    name, spec = stage_upload(storage, images.jpeg(64, 48), width=64, height=48)
    uploads = client.CustomObjectsApi(kube_api)
    uploads.create_namespaced_custom_object(
        resource.GROUP,
        resource.VERSION,
        namespace,
        resource.PLURAL,
        resource.manifest(name, namespace, spec),
    )
    record = results.StageResult(namespace, name, resource.Stage.MODERATION, "job-1", "succeeded")
    results.write(storage, record)
    kept = [spec.key, results.result_key(namespace, name, resource.Stage.MODERATION)]
    orphan = raw_key(hashlib.md5(b"nobody's").hexdigest())
    storage.put(Area.UPLOAD, orphan, b"nobody's", content_type="image/jpeg")

    def sweep_deleting() -> SweepSummary | None:
        summary = controller.sweep_orphans()
        return summary if summary.deleted else None

    # The controller has seen no event: its index knows nothing, the API server does.
    swept = wait_for(
        sweep_deleting, timeout=30, interval=0.5, what="the orphan, past the grace, deleted"
    )
    assert swept.deleted == [orphan]
    assert swept.adopted == swept.rejected == swept.failed == []
    assert swept.listed == 3
    assert all(storage.exists(Area.UPLOAD, key) for key in kept)
    assert not storage.exists(Area.UPLOAD, orphan)

    uploads.delete_namespaced_custom_object(
        resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name
    )
    assert sorted(controller.sweep_orphans().deleted) == sorted(kept)
    assert not any(storage.exists(Area.UPLOAD, key) for key in kept)
