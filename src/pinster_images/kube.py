"""Connecting to the Kubernetes API: in-cluster service account, else KUBECONFIG.

For the long-running roles only: Job pods make no Kubernetes call (their uploads come
in ``PINSTER_UPLOADS``), so they never import the kubernetes client either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pinster_images.config import CONNECTION_POOL

if TYPE_CHECKING:
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
