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

#: What the kubelet asks for: with the API server's default
#: ``--service-account-extend-token-expiration`` a Pod-bound token of exactly 3607 s for the
#: default audience is issued for a year (and only warned about after 3607 s), so clients
#: that read their token once (the Python client, kopf) keep working in long-running Pods.
TOKEN_SECONDS = 3607
#: The kubelet refreshes at 80 % of the requested lifetime; the file is rewritten then.
REFRESH_SECONDS = TOKEN_SECONDS * 0.8


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


def _replace(path: Path, text: str) -> None:
    # Readers never see a half-written file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)


def write_kubeconfig(
    path: Path, server: str, ca_file: str | None, token: str, namespace: str
) -> None:
    """The kubeconfig holds the token inline (kopf reads only that) and names a token file
    beside it, which client-go (kubectl, helm) re-reads, so refreshes reach it."""
    token_file = path.with_name(f"{path.name}.token")
    _replace(token_file, token)
    cluster: dict[str, Any] = {"server": server}
    if ca_file:
        cluster["certificate-authority-data"] = base64.b64encode(
            Path(ca_file).read_bytes()
        ).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": cluster}],
        "users": [
            {"name": "service-account", "user": {"token": token, "tokenFile": str(token_file)}}
        ],
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
    _replace(path, yaml.safe_dump(config))
