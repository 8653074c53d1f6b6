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
from pinster_operator import Controller, OperatorSettings
from pinster_operator._kube import Kube
from pinster_operator._sweep import SweepSummary

from pinster_images import keys, resource, results
from pinster_images.kube import api_client
from pinster_images.storage import Area, raw_key
from tests.support import images
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
    keys.generate_dir(tmp_path / "keys")
    settings = OperatorSettings.from_env(
        {
            **s3_env,
            "PINSTER_SERVICE_URL": "http://images.test",
            "PINSTER_API_URL": "http://api.test",
            "PINSTER_SERVICE_PRIVATE_KEY_FILE": str(tmp_path / "keys" / keys.SERVICE_PRIVATE),
            "PINSTER_WATCH_NAMESPACES": namespace,
            "PINSTER_ADOPT_AFTER": "0",  # no adoption: an orphan is deleted after the grace
            "PINSTER_ORPHAN_GRACE": "1",
        }
    )
    controller = Controller(
        settings,
        Kube(api_client(str(devcluster.kubeconfig)), settings.namespaces),
        settings.storage.open(),
    )
    storage = controller.storage
    data = images.jpeg(64, 48)
    md5 = hashlib.md5(data).hexdigest()
    spec = resource.ImageUploadSpec(
        md5=md5,
        bucket=storage.bucket(Area.UPLOAD),
        key=raw_key(md5),
        content_type="image/jpeg",
        byte_size=len(data),
        width=64,
        height=48,
        uploader=resource.Uploader("u-1", "Pin", "7"),
    )
    name = resource.upload_name(md5, "Pin", "7")
    uploads = client.CustomObjectsApi(kube_api)
    uploads.create_namespaced_custom_object(
        resource.GROUP,
        resource.VERSION,
        namespace,
        resource.PLURAL,
        resource.manifest(name, namespace, spec),
    )
    storage.put(Area.UPLOAD, raw_key(md5), data, content_type="image/jpeg")
    record = results.StageResult(namespace, name, resource.Stage.MODERATION, "job-1", "succeeded")
    results.write(storage, record)
    kept = [raw_key(md5), results.result_key(namespace, name, resource.Stage.MODERATION)]
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
