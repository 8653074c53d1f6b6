"""Connecting to the Kubernetes API: in-cluster service account, else KUBECONFIG."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config

from pinster_images.config import CONNECTION_POOL

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient for the service account when running in a Pod, else for the
    kubeconfig named by the argument, ``$KUBECONFIG`` or ``~/.kube/config``."""
    # In a Pod with its service-account token mounted; elsewhere (a shell, or a Pod that
    # opted out of the token and mounts a kubeconfig) the kubeconfig.
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_TOKEN.exists()
    if kubeconfig is None and in_cluster:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
    else:
        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    # The default is 5 per core: fewer than the threads that call it on a small node.
    configuration.connection_pool_maxsize = CONNECTION_POOL
    return client.ApiClient(configuration)
