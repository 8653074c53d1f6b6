"""Connecting to the Kubernetes API: in-cluster service account, else KUBECONFIG.

Two ways in, one choice of credentials: :func:`api_client` (the kubernetes client, for
the long-running roles) and :class:`ApiReader` (plain GETs over urllib3, for the Job
pods: importing the kubernetes client costs them ~0.25 s of CPU at every start, and
tearing its thousands of model classes down another ~0.1 s).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pinster_images.config import CONNECTION_POOL

if TYPE_CHECKING:
    import urllib3
    from kubernetes import client

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_ACCOUNT_TOKEN = SERVICE_ACCOUNT / "token"


def in_cluster(kubeconfig: str | None = None) -> bool:
    """In a Pod with its service-account token mounted, and no kubeconfig named.
    Elsewhere (a shell, or a Pod that opted out of the token and mounts a kubeconfig)
    the kubeconfig is used."""
    return (
        kubeconfig is None
        and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and SERVICE_ACCOUNT_TOKEN.exists()
    )


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient for the service account when running in a Pod, else for the
    kubeconfig named by the argument, ``$KUBECONFIG`` or ``~/.kube/config``."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if in_cluster(kubeconfig):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    # The default is 5 per core: fewer than the threads that call it on a small node.
    configuration.connection_pool_maxsize = CONNECTION_POOL
    return client.ApiClient(configuration)


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: bytes


@dataclass(frozen=True)
class ApiReader:
    """GETs from the API server with the same credentials :func:`api_client` would use.

    Only what a Job pod needs (a bearer token or a client certificate, a CA); the token
    is read at every call because the kubelet rotates a projected token in its file.
    Connection errors raise ``urllib3.exceptions.HTTPError`` after urllib3's retries.
    """

    url: str
    pool: urllib3.PoolManager
    token: Callable[[], str | None]

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> ApiReader:
        import urllib3

        if in_cluster(kubeconfig):
            host = os.environ["KUBERNETES_SERVICE_HOST"]
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            host = f"[{host}]" if ":" in host else host  # an IPv6 service address
            pool = urllib3.PoolManager(ca_certs=str(SERVICE_ACCOUNT / "ca.crt"))
            return cls(
                f"https://{host}:{port}", pool, lambda: SERVICE_ACCOUNT_TOKEN.read_text().strip()
            )
        # Outside a Pod, the kubernetes client's own kubeconfig loader (its import cost
        # is paid only here).
        configuration = api_client(kubeconfig).configuration
        tls: dict[str, Any] = {
            "ca_certs": configuration.ssl_ca_cert,
            "cert_file": configuration.cert_file,
            "key_file": configuration.key_file,
        }
        if not configuration.verify_ssl:
            tls = {"cert_reqs": "CERT_NONE"}
        pool = urllib3.PoolManager(**{k: v for k, v in tls.items() if v})
        # "Bearer <token>" (kubernetes>=36 keeps it as BearerToken, older as authorization)
        bearer = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        return cls(configuration.host, pool, lambda: _bare_token(bearer))

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> ApiResponse:
        """As the kubernetes client's method of that name, answered raw."""
        return self.get(f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}")

    def get(self, path: str) -> ApiResponse:
        headers = {"Accept": "application/json"}
        if token := self.token():
            headers["Authorization"] = f"Bearer {token}"
        response = self.pool.request("GET", self.url + path, headers=headers, timeout=30.0)
        return ApiResponse(response.status, response.data)


def _bare_token(value: str | None) -> str | None:
    """The kubernetes client keeps ``Bearer <token>``; the reader adds the scheme."""
    if not value:
        return None
    return value.removeprefix("Bearer ").strip() or None
