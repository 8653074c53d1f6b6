"""Small HTTPS probes of the running cluster (stdlib only: ``up`` stays quick to import)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from pinster_devcluster._network import NODE_IP
from pinster_devcluster._pki import Pki

_TIMEOUT = 2.0
_LOCAL = tuple(
    f"{scheme}://{host}:" for scheme in ("http", "https") for host in ("127.0.0.1", NODE_IP)
)


def admin_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert("admin")), str(pki.client_key("admin")))
    return context


def ca_context(pki: Pki) -> ssl.SSLContext:
    """Trusts the cluster CA (the registry's certificate), presents no client certificate."""
    return ssl.create_default_context(cafile=str(pki.ca_cert))


def self_signed_context() -> ssl.SSLContext:
    # controller-manager and scheduler serve /healthz with a certificate they make up at
    # start; on loopback, liveness is all we ask of it.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """Status and body; (0, reason) when nothing answers."""
    if not url.startswith(_LOCAL):
        raise ValueError(f"only this machine's cluster addresses are probed, not {url!r}")
    try:
        # Only loopback http(s), checked above.
        with urllib.request.urlopen(url, timeout=_TIMEOUT, context=context) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


def ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    return get(url, context)[0] == 200


def get_json(url: str, context: ssl.SSLContext) -> dict[str, Any] | None:
    status, body = get(url, context)
    if status != 200:
        return None
    data: dict[str, Any] = json.loads(body)
    return data


def node_ready(server: str, context: ssl.SSLContext, node: str) -> bool:
    data = get_json(f"{server}/api/v1/nodes/{node}", context)
    if data is None:
        return False
    conditions = data.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def deployment_available(server: str, context: ssl.SSLContext, namespace: str, name: str) -> bool:
    data = get_json(f"{server}/apis/apps/v1/namespaces/{namespace}/deployments/{name}", context)
    if data is None:
        return False
    conditions = data.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)
