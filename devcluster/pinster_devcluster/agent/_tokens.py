"""Service-account credentials for a Pod: a TokenRequest-bound token in a kubeconfig.

The kubelet mounts a projected token at /var/run/secrets/...; processes here share the
node's file system, so the agent writes a kubeconfig into the Pod's directory instead
and points ``KUBECONFIG`` at it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

TOKEN_SECONDS = 3600


def request_token(core: client.CoreV1Api, pod: dict[str, Any]) -> str:
    metadata = pod["metadata"]
    body = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(
            audiences=[],
            expiration_seconds=TOKEN_SECONDS,
            bound_object_ref=client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=metadata["name"], uid=metadata["uid"]
            ),
        )
    )
    service_account = pod["spec"].get("serviceAccountName") or "default"
    response = core.create_namespaced_service_account_token(
        service_account, metadata["namespace"], body
    )
    token: str = response.status.token
    return token


def write_kubeconfig(
    path: Path, server: str, ca_file: str | None, token: str, namespace: str
) -> None:
    cluster: dict[str, Any] = {"server": server}
    if ca_file:
        cluster["certificate-authority-data"] = base64.b64encode(
            Path(ca_file).read_bytes()
        ).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": cluster}],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [
            {
                "name": "devcluster",
                "context": {
                    "cluster": "devcluster",
                    "user": "service-account",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "devcluster",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    tmp.chmod(0o600)
    tmp.replace(path)
