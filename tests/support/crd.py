"""The ImageUpload CRD on the devcluster, for suites that create ImageUploads.

Fixture ``crd_installed`` (registered in tests/conftest.py): the CRD from crds/ applied
and Established; returns its name. :func:`install_crd` does the same for scripts (bench).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.waiting import wait_for

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "imageuploads.images.pinster.io.yaml"


def install_crd(api_client: Any, path: Path = CRD_FILE, timeout: float = 60) -> str:
    """Create or update the CRD and wait until the API server serves it."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    manifest = yaml.safe_load(path.read_text())
    name = str(manifest["metadata"]["name"])
    api = client.ApiextensionsV1Api(api_client)
    try:
        api.create_custom_resource_definition(manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = api.read_custom_resource_definition(name)
        updated = copy.deepcopy(manifest)
        updated["metadata"]["resourceVersion"] = current.metadata.resource_version
        api.replace_custom_resource_definition(name, updated)

    def established() -> bool:
        crd = api.read_custom_resource_definition(name)
        conditions = crd.status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, timeout=timeout, what=f"CRD {name} to be Established")
    return name


@pytest.fixture
def crd_installed(kube_api: Any) -> str:
    return install_crd(kube_api)
