"""The operator against the devcluster, for the integration tests that run it in their
process or as one: the environment it needs (the object store's settings, a signing key
of its own, the URLs of the upload service and PinsterApi, which no such test calls) and
a controller built from it, as ``cli.py`` builds one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pinster_operator import Controller, OperatorSettings
from pinster_operator._kube import Kube

from pinster_images import keys
from pinster_images.kube import api_client


def operator_env(s3_env: dict[str, str], keys_dir: Path, **overrides: str) -> dict[str, str]:
    keys.generate_dir(keys_dir)
    return {
        **s3_env,
        "PINSTER_SERVICE_URL": "http://images.test",
        "PINSTER_API_URL": "http://api.test",
        "PINSTER_SERVICE_PRIVATE_KEY_FILE": str(keys_dir / keys.SERVICE_PRIVATE),
        **overrides,
    }


def cluster_controller(
    devcluster: Any, s3_env: dict[str, str], keys_dir: Path, **overrides: str
) -> Controller:
    """A controller (not started) on the devcluster's API server and object store."""
    settings = OperatorSettings.from_env(operator_env(s3_env, keys_dir, **overrides))
    api = api_client(str(devcluster.kubeconfig))
    return Controller(settings, Kube(api, settings.namespaces), settings.storage.open())
