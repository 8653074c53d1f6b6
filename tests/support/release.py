"""The chart installed in a test's namespace, as a user installs it on their cluster:
the product's image from the node's registry, S3 with credentials from a Secret, keys
from Secrets, PinsterApi somewhere the operator's Pod reaches."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pinster_images import keys
from tests.support.helm import CHART, helm
from tests.support.s3 import S3Server

KEYS_SECRET = "pinster-keys"
S3_SECRET = "pinster-s3"


def create_secrets(
    kube_api: Any,
    namespace: str,
    *,
    api_public: bytes,
    service_private: bytes,
    s3: S3Server,
    api_private: bytes | None = None,
) -> None:
    """The keys Secret (PinsterApi's public key, the service's private key, and for `helm
    test` PinsterApi's private key) and the S3 credentials Secret."""
    from kubernetes import client

    data = {keys.API_PUBLIC: api_public, keys.SERVICE_PRIVATE: service_private}
    if api_private is not None:
        data[keys.API_PRIVATE] = api_private
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": KEYS_SECRET},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        },
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": S3_SECRET}, "stringData": s3.credentials}
    )


def values(
    *,
    image: Any | None,
    namespace: str,
    storage_env: dict[str, str],
    s3: S3Server,
    service_url: str,
    api_url: str,
    helm_test: bool = False,
) -> dict[str, Any]:
    """Values for the devcluster: ci/devcluster-values.yaml plus these (the CRD is
    installed by the session, outside Helm). ``image`` None leaves the image out."""
    public_bucket = storage_env["PINSTER_S3_PUBLIC_BUCKET"]
    chosen: dict[str, Any] = {
        "crds": {"enabled": False},
        "operator": {"watchNamespaces": [namespace]},
        "storage": {
            "publicUrl": s3.endpoint.public_url(public_bucket),
            "s3": {
                "endpointUrl": s3.endpoint_url,
                "uploadBucket": storage_env["PINSTER_S3_UPLOAD_BUCKET"],
                "publicBucket": public_bucket,
                "credentialsSecret": S3_SECRET,
            },
        },
        "config": {"serviceUrl": service_url, "apiUrl": api_url},
        "auth": {
            "apiPublicKey": {"secretName": KEYS_SECRET},
            "servicePrivateKey": {"secretName": KEYS_SECRET},
        },
    }
    if image is not None:
        chosen["image"] = {"repository": image.repository, "tag": image.tag, "digest": image.digest}
    if helm_test:
        chosen["tests"] = {"enabled": True, "signingKey": {"secretName": KEYS_SECRET}}
    return chosen


def merge(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """``more`` over ``base``, dictionaries merged key by key (as Helm merges -f files)."""
    merged = dict(base)
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class Release:
    """``helm install|upgrade|uninstall`` of the chart with a values file of its own."""

    name: str
    namespace: str
    kubeconfig: Path
    directory: Path
    revision: int = field(default=0)

    def _values_file(self, chosen: dict[str, Any]) -> Path:
        self.revision += 1
        path = self.directory / f"{self.name}-values-{self.revision}.yaml"
        path.write_text(yaml.safe_dump(chosen))
        return path

    def _common(self) -> list[str]:
        return ["--kubeconfig", str(self.kubeconfig), "-n", self.namespace]

    def install(self, chosen: dict[str, Any], timeout: str = "180s", *, wait: bool = True) -> None:
        """``wait``: until every Pod is Ready (helm's --wait)."""
        waiting = ["--wait", "--timeout", timeout] if wait else []
        helm("upgrade", "--install", self.name, str(CHART), *self._common(),
             "-f", str(CHART / "ci" / "devcluster-values.yaml"),
             "-f", str(self._values_file(chosen)), *waiting)  # fmt: skip

    def test(self, timeout: str = "300s") -> Any:
        return helm("test", self.name, *self._common(), "--timeout", timeout, check=False)

    def uninstall(self) -> None:
        helm("uninstall", self.name, *self._common(), "--wait", "--timeout", "120s", check=False)
