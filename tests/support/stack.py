"""The product installed by its chart in a test's namespace, driven as clients drive it:
uploads through the Service's cluster IP, status read from the API server, published
objects listed in the object store. The stand-ins (PinsterApi, Rekognition) listen on
the node address; the operator and the Job pods reach them there.

Register with ``pytest_plugins = ["tests.support.stack"]``; the ``stack`` fixture gives a
:class:`Stack` with values for fast tests (short poll and backoff), not yet installed:
``stack.start(**values)`` installs it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from pinster_images import keys
from pinster_images.resource import GROUP, PLURAL, VERSION
from tests.support import release
from tests.support.kube import Kubectl
from tests.support.pinster_api import PinsterApi
from tests.support.pods import kill_container, metric_samples
from tests.support.rekognition import RekognitionStandIn
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

SERVICE_URL = "http://images.e2e.test"
SIZES = ("400x300", "128xauto")
TERMINAL = ("Ready", "Rejected", "Failed")
RELEASE = "e2e"
OPERATOR = f"{RELEASE}-pinster-images-operator"
INGRESS = f"{RELEASE}-pinster-images"


@dataclass
class Stack:
    """Everything one e2e test runs against, with helpers to drive and inspect it."""

    namespace: str
    kube_api: Any
    kubectl: Kubectl
    api: PinsterApi
    s3: S3Server
    storage_env: dict[str, str]
    values: dict[str, Any]
    api_private: bytes
    release: release.Release
    url: str = ""

    def start(self, *, wait: bool = True, **more: Any) -> Stack:
        """Install the chart with these values (merged over the stack's own); ``wait``
        until every Pod is Ready (the upload service is waited for in any case)."""
        self.release.install(release.merge(self.values, more), wait=wait)
        from kubernetes import client

        service = client.CoreV1Api(self.kube_api).read_namespaced_service(INGRESS, self.namespace)
        self.url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"
        wait_for(self._healthy, 30, what="the upload Service through kube-proxy")
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        self.release.uninstall()

    def operator_pod(self) -> str:
        from kubernetes import client

        pods = client.CoreV1Api(self.kube_api).list_namespaced_pod(
            self.namespace, label_selector="app.kubernetes.io/component=operator"
        )
        [pod] = [p for p in pods.items if not p.metadata.deletion_timestamp]
        return str(pod.metadata.name)

    def operator_metric(self, name: str, **labels: str) -> float:
        """One sample of the operator's metrics, 0 if absent."""
        samples = metric_samples(self.kube_api, self.namespace, self.operator_pod(), name)
        return next((float(s.value) for s in samples if s.labels == labels), 0.0)

    def kill_operator(self) -> None:
        """SIGKILL the operator's container; the kubelet restarts it in the same Pod."""
        from kubernetes import client

        pod = self.operator_pod()
        restarts = kill_container(self.kube_api, self.namespace, pod)
        core = client.CoreV1Api(self.kube_api)

        def restarted() -> bool:
            status = core.read_namespaced_pod(pod, self.namespace).status
            [container] = status.container_statuses
            return bool(container.restart_count > restarts and container.ready)

        wait_for(restarted, 120, what="the operator's container restarted and ready")

    def upload(self, data: bytes, imageable_id: str = "42") -> dict[str, Any]:
        response = self.post(data, imageable_id)
        assert response.status_code in (200, 202), response.text
        body: dict[str, Any] = response.json()
        return body

    def token(self, imageable_id: str) -> str:
        """An upload token of user ``u-1`` for the Pin ``imageable_id``, as PinsterApi signs it."""
        return keys.mint(
            self.api_private,
            issuer=self.api.url,
            audience=SERVICE_URL,
            claims={"user_id": "u-1", "imageable_type": "Pin", "imageable_id": imageable_id},
            ttl=60,
        )

    def post(self, data: bytes, imageable_id: str = "42") -> requests.Response:
        """``POST /`` as a client sends it, whatever the answer."""
        token = self.token(imageable_id)
        uri = "data:image/jpeg;base64," + base64.b64encode(data).decode()
        return requests.post(
            f"{self.url}/",
            json={"data": {"image": uri, "name": "A pin picture"}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def upload_direct(self, data: bytes, imageable_id: str = "42") -> dict[str, Any]:
        """``POST /v1/uploads``, then the presigned POST to the object store, as a client
        of direct uploads does; the permit's answer."""
        token = self.token(imageable_id)
        described = {
            "md5": hashlib.md5(data).hexdigest(),
            "content_type": "image/jpeg",
            "size": len(data),
            "name": "A direct pin",
        }
        response = requests.post(
            f"{self.url}/v1/uploads",
            json={"data": described},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        permit: dict[str, Any] = response.json()["data"]
        stored = requests.post(
            permit["url"],
            data=permit["fields"],
            files={"file": ("pin.jpg", data, "image/jpeg")},
            timeout=60,
        )
        assert stored.status_code == 204, stored.text
        return permit

    def events_token(self) -> str:
        """The token the chart made for the object store's events."""
        from kubernetes import client

        secret = client.CoreV1Api(self.kube_api).read_namespaced_secret(
            f"{INGRESS}-storage-events", self.namespace
        )
        return base64.b64decode(secret.data["token"]).decode()

    def get_or_none(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.get(name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def get(self, name: str) -> dict[str, Any]:
        from kubernetes import client

        obj: dict[str, Any] = client.CustomObjectsApi(self.kube_api).get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return obj

    def wait_terminal(self, name: str, timeout: float = 120) -> dict[str, Any]:
        def terminal() -> dict[str, Any] | None:
            obj = self.get(name)
            return obj if (obj.get("status") or {}).get("phase") in TERMINAL else None

        try:
            return wait_for(terminal, timeout=timeout, what=f"{name} to finish")
        except TimeoutError:
            print(self.kubectl("get", "iu,jobs,pods", "-n", self.namespace, "-o", "wide"))
            print(
                self.kubectl.run(
                    "logs", "-n", self.namespace, f"deploy/{OPERATOR}", check=False
                ).stdout[-6000:]
            )
            raise

    def jobs(self) -> list[dict[str, Any]]:
        return list(
            json.loads(self.kubectl("get", "jobs", "-n", self.namespace, "-o", "json"))["items"]
        )

    def public_keys(self) -> set[str]:
        return self._keys(self.storage_env["PINSTER_S3_PUBLIC_BUCKET"])

    def upload_keys(self, prefix: str) -> set[str]:
        return self._keys(self.storage_env["PINSTER_S3_UPLOAD_BUCKET"], prefix)

    def _keys(self, bucket: str, prefix: str = "") -> set[str]:
        pages = (
            self.s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return {item["Key"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture
def stack(
    namespace: str,
    kube_api: Any,
    kubectl: Kubectl,
    crd_installed: str,
    devcluster: Any,
    product_image: Any,
    s3_server: S3Server,
    node_pinster_api: PinsterApi,
    service_keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> Iterator[Stack]:
    node_pinster_api.service_url = SERVICE_URL  # the issuer it expects in our tokens
    api_private = keys.generate_private_key()
    release.create_secrets(
        kube_api,
        namespace,
        api_public=keys.public_key_of(api_private),
        service_private=service_keys[0],
        s3=s3_server,
    )
    storage_env = s3_server.fresh_env()
    values = release.merge(
        release.values(
            image=product_image,
            namespace=namespace,
            storage_env=storage_env,
            s3=s3_server,
            service_url=SERVICE_URL,
            api_url=node_pinster_api.url,
        ),
        {
            "config": {"thumbnailSizes": list(SIZES), "logFormat": "text"},
            "moderation": {"backend": "none"},
            "operator": {
                "batch": {"windowSeconds": 0.5},
                "extraEnv": [
                    {"name": "PINSTER_POLL_INTERVAL", "value": "2"},
                    {"name": "PINSTER_NOTIFY_BACKOFF_INITIAL", "value": "0.5"},
                    {"name": "PINSTER_NOTIFY_BACKOFF_MAX", "value": "2"},
                ],
            },
            "jobs": {"backoffLimit": 1, "attempts": 2},
        },
    )
    result = Stack(
        namespace,
        kube_api,
        kubectl,
        node_pinster_api,
        s3_server,
        storage_env,
        values,
        api_private,
        release.Release(RELEASE, namespace, devcluster.kubeconfig, tmp_path),
    )
    try:
        yield result
    finally:
        result.stop()


def rekognition_values(stand_in: RekognitionStandIn) -> dict[str, Any]:
    """The chart's moderation values for the stand-in (the Job pods sign with the S3
    credentials of the chart's Secret; the stand-in takes any)."""
    return {
        "moderation": {
            "backend": "rekognition",
            "rekognition": {"endpointUrl": stand_in.endpoint_url, "region": "us-east-1"},
        }
    }
