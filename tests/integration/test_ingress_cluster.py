"""The upload service over HTTP against the devcluster's API server and object store."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
import yaml
from pinster_ingress import KubeImageUploads, create_app

from pinster_images import resource
from pinster_images.kube import api_client
from pinster_images.storage import StorageSettings
from tests.support import images
from tests.support import ingress as si
from tests.support.serving import serve
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.cluster

PAIR = si.key_pair()


@dataclass
class Stack:
    url: str
    namespace: str
    s3: Any  # boto3 client
    bucket: str
    kube: Any  # ApiClient
    proxy: TcpProxy

    def post(
        self, data: bytes, content_type: str = "image/jpeg", **claims: Any
    ) -> requests.Response:
        uri = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
        return requests.post(
            f"{self.url}/v1/images",
            json={"data": {"image": uri, "name": "Cluster pin", "featured": "2024-05-01"}},
            headers=si.bearer(PAIR, **claims),
            timeout=60,
        )

    def resources(self) -> list[dict[str, Any]]:
        from kubernetes import client

        listed = client.CustomObjectsApi(self.kube).list_namespaced_custom_object(
            resource.GROUP, resource.VERSION, self.namespace, resource.PLURAL
        )
        items: list[dict[str, Any]] = listed["items"]
        return items

    def raw_keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="raw/")
        return [item["Key"] for item in listed.get("Contents", [])]


def _proxied_kubeconfig(kubeconfig: Path, tmp_path: Path) -> tuple[Path, TcpProxy]:
    """A copy of the kubeconfig whose server is a TCP proxy we can stop and start."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    server = urlparse(cluster["server"])
    assert server.port is not None
    proxy = TcpProxy(server.hostname or "127.0.0.1", server.port).start()
    # The proxy listens on loopback, which the API server's certificate also names.
    cluster["server"] = f"{server.scheme}://127.0.0.1:{proxy.port}"
    # Relative certificate paths keep working from the copy's directory only if absolute.
    for key in ("certificate-authority",):
        if key in cluster and not Path(cluster[key]).is_absolute():
            cluster[key] = str((kubeconfig.parent / cluster[key]).resolve())
    for user in config.get("users", []):
        for key in ("client-certificate", "client-key"):
            value = user.get("user", {}).get(key)
            if value and not Path(value).is_absolute():
                user["user"][key] = str((kubeconfig.parent / value).resolve())
    path = tmp_path / "kubeconfig-proxied"
    path.write_text(yaml.safe_dump(config))
    return path, proxy


@pytest.fixture
def stack(
    devcluster: Any,
    kube_api: Any,
    namespace: str,
    crd_installed: str,
    s3_env: dict[str, str],
    s3_server: Any,
    tmp_path: Path,
) -> Iterator[Stack]:
    kubeconfig, proxy = _proxied_kubeconfig(Path(devcluster.kubeconfig), tmp_path)
    settings = si.settings(
        tmp_path, PAIR.public, namespace=namespace, storage=StorageSettings.from_env(s3_env)
    )
    uploads = KubeImageUploads(api_client(str(kubeconfig)), timeout=5)
    app = create_app(settings, uploads=uploads)
    try:
        with serve(app) as url:
            yield Stack(
                url,
                namespace,
                s3_server.client(),
                s3_env["PINSTER_S3_UPLOAD_BUCKET"],
                kube_api,
                proxy,
            )
    finally:
        proxy.stop()


def test_valid_upload_stores_object_and_creates_matching_imageupload(stack: Stack) -> None:
    data = images.jpeg(640, 480)
    md5 = hashlib.md5(data).hexdigest()
    response = stack.post(data, user_id="u-1", imageable_type="Pin", imageable_id="9")
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["md5"] == md5 and answer["namespace"] == stack.namespace

    head = stack.s3.head_object(Bucket=stack.bucket, Key=f"raw/{md5}")
    assert head["CacheControl"] == "max-age=86400"
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"] == {
        "user_id": "u-1",
        "imageable_type": "Pin",
        "imageable_id": "9",
        "name": "Cluster pin",
        "featured": "2024-05-01",
        "base_file_name": md5,
    }
    stored = stack.s3.get_object(Bucket=stack.bucket, Key=f"raw/{md5}")["Body"].read()
    assert stored == data

    (obj,) = stack.resources()
    assert obj["metadata"]["name"] == answer["name"] == resource.upload_name(md5, "Pin", "9")
    assert obj["metadata"]["labels"][resource.LABEL_MD5] == md5
    assert obj["spec"] == {
        "md5": md5,
        "source": {"bucket": stack.bucket, "key": f"raw/{md5}"},
        "contentType": "image/jpeg",
        "byteSize": len(data),
        "width": 640,
        "height": 480,
        "uploader": {"userId": "u-1", "imageableType": "Pin", "imageableId": "9"},
        "thumbnailSizes": list(resource.DEFAULT_THUMBNAIL_SIZES),
        "name": "Cluster pin",
        "featured": "2024-05-01",
    }
    status = requests.get(
        f"{stack.url}{answer['status_url']}", headers=si.bearer(PAIR, imageable_id="9"), timeout=30
    )
    assert status.status_code == 200
    assert (status.json()["name"], status.json()["phase"]) == (answer["name"], "Pending")


def test_same_upload_twice_gives_one_object_and_one_resource(stack: Stack) -> None:
    data = images.jpeg(100, 80)
    first, second = stack.post(data), stack.post(data)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json() == second.json()
    assert len(stack.raw_keys()) == 1
    assert len(stack.resources()) == 1


def test_two_imageables_same_bytes_give_one_object_two_resources(stack: Stack) -> None:
    data = images.png(50, 50)
    a = stack.post(data, "image/png", imageable_id="1")
    b = stack.post(data, "image/png", imageable_id="2")
    assert (a.status_code, b.status_code) == (202, 202)
    assert len(stack.raw_keys()) == 1
    names = sorted(item["metadata"]["name"] for item in stack.resources())
    assert names == sorted([a.json()["name"], b.json()["name"]])
    assert {item["spec"]["uploader"]["imageableId"] for item in stack.resources()} == {"1", "2"}


def test_api_server_outage_gives_retryable_503_then_the_retry_succeeds(stack: Stack) -> None:
    data = images.jpeg(120, 90)
    assert requests.get(f"{stack.url}/readyz", timeout=30).status_code == 200
    stack.proxy.stop()  # the API server is unreachable from the service from here on
    failed = stack.post(data)
    assert failed.status_code == 503, failed.text
    assert int(failed.headers["Retry-After"]) > 0
    assert failed.json()["reason"] == "KubernetesUnavailable"
    assert requests.get(f"{stack.url}/readyz", timeout=30).status_code == 503
    assert stack.resources() == []  # nothing half-made in the cluster
    assert len(stack.raw_keys()) == 1  # the bytes wait, content-addressed, for the retry

    stack.proxy.start()  # back, on the same address
    retried = stack.post(data)
    assert retried.status_code == 202, retried.text
    assert len(stack.resources()) == 1
    assert len(stack.raw_keys()) == 1
    assert requests.get(f"{stack.url}/readyz", timeout=30).status_code == 200


def test_refused_images_leave_nothing_behind(stack: Stack) -> None:
    assert stack.post(images.png_bomb(), "image/png").status_code == 422
    assert stack.post(b"plain text", "image/png").status_code == 415
    assert stack.raw_keys() == [] and stack.resources() == []
