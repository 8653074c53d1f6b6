"""Direct-to-storage uploads with the product as users install it: the chart's upload
service (the product's image, on the node) signs the form, the client stores the image
in MinIO itself, MinIO's event reaches the Service's cluster IP with the token the chart
made, and the operator takes the ImageUpload to Ready."""

from __future__ import annotations

import hashlib

import pytest

from tests.support.images import jpeg
from tests.support.stack import SIZES, Stack

pytestmark = pytest.mark.cluster


def test_a_direct_upload_is_processed_to_ready(stack: Stack, devcluster: object) -> None:
    stack.start(directUploads={"enabled": True})
    bucket = stack.storage_env["PINSTER_S3_UPLOAD_BUCKET"]
    devcluster.set_storage_events(  # type: ignore[attr-defined]
        bucket, f"{stack.url}/v1/storage-events", stack.events_token()
    )
    try:
        image = jpeg(800, 600)
        permit = stack.upload_direct(image)
        obj = stack.wait_terminal(permit["name"], timeout=180)
    finally:
        devcluster.set_storage_events(bucket, None)  # type: ignore[attr-defined]
    md5 = hashlib.md5(image).hexdigest()
    assert obj["status"]["phase"] == "Ready", obj["status"]
    assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "direct"
    assert obj["spec"]["name"] == "A direct pin"
    assert {md5, *(f"{md5}_{size}" for size in SIZES)} <= stack.public_keys()
    [post] = stack.api.accepted("/v1/images/")
    assert post.body["data"]["base_file_name"] == md5
