"""Direct-to-storage uploads against the devcluster's MinIO and API server: the presigned
POST as the object store enforces it (each refusal a clear S3 error, nothing stored),
the store's event reaching the upload service, and what a stored object becomes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from pinster_ingress import KubeImageUploads, create_app
from pinster_ingress._settings import DirectUploadSettings
from pinster_ingress.client import s3_error

from pinster_images import resource
from pinster_images.config import Secret
from pinster_images.kube import api_client
from pinster_images.sniff import ImageLimits
from pinster_images.storage import StorageSettings
from tests.support import images
from tests.support import ingress as si
from tests.support.serving import serve
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

PAIR = si.key_pair()
TOKEN = "direct-uploads-events-token"
#: Small, so that an over-size form is quick to make.
LIMITS = ImageLimits(max_bytes=256 * 1024)
#: The shortest expiry the service allows: the expired case waits it out.
EXPIRES = 10


@dataclass
class Direct:
    url: str
    namespace: str
    s3: Any  # boto3 client
    bucket: str
    kube: Any

    def permit(self, data: bytes, **fields: Any) -> dict[str, Any]:
        described = {
            "md5": hashlib.md5(data).hexdigest(),
            "content_type": "image/jpeg",
            "size": len(data),
            **fields,
        }
        response = requests.post(
            f"{self.url}/v1/uploads",
            json={"data": described},
            headers=si.bearer(PAIR),
            timeout=30,
        )
        assert response.status_code == 201, response.text
        permit: dict[str, Any] = response.json()["data"]
        return permit

    @staticmethod
    def store(
        permit: dict[str, Any], data: bytes, content_type: str = "image/jpeg", **changed: str
    ) -> requests.Response:
        fields = {**permit["fields"], **changed}
        return requests.post(
            permit["url"],
            data=fields,
            files={"file": ("image.jpg", data, content_type)},
            timeout=60,
        )

    def upload(self, name: str) -> dict[str, Any] | None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            found: dict[str, Any] = client.CustomObjectsApi(self.kube).get_namespaced_custom_object(
                resource.GROUP, resource.VERSION, self.namespace, resource.PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def raw_keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="raw/")
        return [item["Key"] for item in listed.get("Contents", [])]

    def status(self, name: str) -> requests.Response:
        return requests.get(f"{self.url}/v1/images/{name}", headers=si.bearer(PAIR), timeout=30)


@pytest.fixture
def direct(
    devcluster: Any,
    kube_api: Any,
    namespace: str,
    crd_installed: str,
    s3_env: dict[str, str],
    s3_server: Any,
    tmp_path: Path,
) -> Iterator[Direct]:
    settings = si.settings(
        tmp_path,
        PAIR.public,
        namespace=namespace,
        limits=LIMITS,
        storage=StorageSettings.from_env(s3_env),
        direct=DirectUploadSettings(events_token=Secret(TOKEN), expires_in=EXPIRES),
    )
    uploads = KubeImageUploads(api_client(str(devcluster.kubeconfig)), timeout=10)
    bucket = s3_env["PINSTER_S3_UPLOAD_BUCKET"]
    # MinIO is a process of this machine: it reaches the service on loopback.
    with serve(create_app(settings, uploads=uploads)) as url:
        devcluster.set_storage_events(bucket, f"{url}/v1/storage-events", TOKEN)
        try:
            yield Direct(url, namespace, s3_server.client(), bucket, kube_api)
        finally:
            devcluster.set_storage_events(bucket, None)


def test_a_direct_upload_becomes_its_imageupload(direct: Direct) -> None:
    data = images.jpeg(320, 200)
    md5 = hashlib.md5(data).hexdigest()
    permit = direct.permit(data, name="Direct pin")
    stored = direct.store(permit, data)
    assert stored.status_code == 204, stored.text
    # The object as POST / would have stored it.
    head = direct.s3.head_object(Bucket=direct.bucket, Key=f"raw/{md5}")
    assert head["ContentType"] == "image/jpeg"
    assert head["CacheControl"] == "max-age=86400"
    assert head["Metadata"] == {
        **si.CLAIMS,
        "name": "Direct pin",
        "base_file_name": md5,
    }
    # The store's event made the ImageUpload.
    created = wait_for(lambda: direct.upload(permit["name"]), timeout=30, what="the ImageUpload")
    spec = created["spec"]
    assert (spec["md5"], spec["width"], spec["height"], spec["byteSize"]) == (
        md5,
        320,
        200,
        len(data),
    )
    assert spec["source"] == {"bucket": direct.bucket, "key": f"raw/{md5}"}
    assert created["metadata"]["labels"][resource.LABEL_COMPONENT] == "direct"
    assert direct.status(permit["name"]).json()["phase"] == "Pending"


def refused(direct: Direct, response: requests.Response, status: int, code: str) -> str:
    """S3 refused the form with ``code``; nothing was stored, nothing was created."""
    message = s3_error(response)
    assert response.status_code == status, message
    assert f" {code}: " in message, message
    assert direct.raw_keys() == []
    return message


def test_a_form_for_another_key_is_refused(direct: Direct) -> None:
    data = images.jpeg()
    permit = direct.permit(data)
    response = direct.store(permit, data, key=f"raw/{'0' * 32}")
    # MinIO's words; AWS names the condition too ("...: [eq, $key, raw/...]").
    assert "Policy Condition failed" in refused(direct, response, 403, "AccessDenied")


def test_another_content_type_is_refused(direct: Direct) -> None:
    data = images.jpeg()
    permit = direct.permit(data)
    response = direct.store(permit, data, **{"Content-Type": "image/png"})
    assert "Policy Condition failed" in refused(direct, response, 403, "AccessDenied")


def test_bytes_other_than_the_md5_are_refused(direct: Direct) -> None:
    permit = direct.permit(images.jpeg(64, 48))
    refused(direct, direct.store(permit, images.jpeg(65, 48)), 400, "BadDigest")


def test_more_bytes_than_the_limit_are_refused(direct: Direct) -> None:
    big = images.noisy_jpeg(LIMITS.max_bytes + 50_000)
    # Said to be small (the service checks the size it is told), sent big.
    permit = direct.permit(big, size=1000)
    refused(direct, direct.store(permit, big), 400, "EntityTooLarge")


def test_an_expired_form_is_refused(direct: Direct) -> None:
    data = images.jpeg()
    permit = direct.permit(data)
    expires = time.time() + EXPIRES + 1
    wait_for(lambda: time.time() > expires, timeout=EXPIRES + 5, what="the form to expire")
    message = refused(direct, direct.store(permit, data), 403, "AccessDenied")
    assert "expired" in message.lower()


def test_a_stored_object_failing_the_checks_is_deleted_and_reported(direct: Direct) -> None:
    """A store that does not check Content-MD5: a form signed without it (as another
    client of the bucket could make) stores bytes whose md5 is not the key's."""
    data, claimed = images.jpeg(64, 48), "f" * 32
    post = direct.s3.generate_presigned_post(
        Bucket=direct.bucket,
        Key=f"raw/{claimed}",
        Fields={
            "Content-Type": "image/jpeg",
            **{f"x-amz-meta-{k}": v for k, v in si.CLAIMS.items()},
        },
        Conditions=[
            {"Content-Type": "image/jpeg"},
            *({f"x-amz-meta-{k}": v} for k, v in si.CLAIMS.items()),
        ],
        ExpiresIn=60,
    )
    stored = requests.post(post["url"], data=post["fields"], files={"file": data}, timeout=30)
    assert stored.status_code == 204, stored.text
    name = resource.upload_name(claimed, si.CLAIMS["imageable_type"], si.CLAIMS["imageable_id"])

    def reported() -> dict[str, Any] | None:
        response = direct.status(name)
        return response.json() if response.status_code == 200 else None

    status = wait_for(reported, timeout=30, what="the rejection to be reported")
    assert (status["phase"], status["terminal"]) == ("Rejected", True)
    (condition,) = status["conditions"]
    assert condition["reason"] == "Md5Mismatch"
    assert hashlib.md5(data).hexdigest() in condition["message"]
    assert direct.raw_keys() == []
    assert direct.upload(name) is None


def test_the_client_uploads_directly(direct: Direct, tmp_path: Path) -> None:
    from pinster_ingress.client import main

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "pinster-api.key").write_bytes(PAIR.private)
    image = tmp_path / "photo.jpg"
    image.write_bytes(images.jpeg(100, 80))
    args = [
        str(image), "--direct", "--url", direct.url, "--keys", str(tmp_path / "keys"),
        "--service-url", si.SERVICE_URL, "--api-url", si.API_URL,
        "--user-id", "user-1", "--imageable-type", "Pin", "--imageable-id", "42",
    ]  # fmt: skip
    assert main(args) == 0
    md5 = hashlib.md5(image.read_bytes()).hexdigest()
    name = resource.upload_name(md5, "Pin", "42")
    wait_for(lambda: direct.upload(name), timeout=30, what="the ImageUpload")
