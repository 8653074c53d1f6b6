"""Fixtures shared by every suite.

The devcluster fixtures start the local cluster lazily: only a test that asks for
``devcluster``, ``kube_api``, ``namespace``, ``kubectl``, ``product_image`` or an S3 or
stand-in fixture brings it up (once per session, in a temporary state directory), so
unit tests never pay for it. The cluster has a real node of this machine, so it needs
root and the host packages (`make host-deps`); missing binaries, packages, or another
devcluster holding the machine's node fail those tests with the message saying what to
do. Nothing is skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.kube import Kubectl, unique_name
from tests.support.waiting import wait_for

pytest_plugins = [
    "tests.support.s3",
    "tests.support.pinster_api",
    "tests.support.crd",
    "tests.support.rekognition",
    "tests.support.stack",
]


@pytest.fixture(autouse=True)
def _no_default_boto3_session_left() -> Iterator[None]:
    """boto3's default session keeps the credentials it first resolved for the rest of
    the process: a test that set fake ones (``monkeypatch.setenv``) left them to every
    later client, and MinIO refused the S3 tests that ran after it
    (``InvalidAccessKeyId``). No test leaves one behind."""
    yield
    boto3 = sys.modules.get("boto3")
    if boto3 is not None:
        boto3.DEFAULT_SESSION = None


@pytest.fixture(scope="session")
def devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running :class:`pinster_devcluster.DevCluster` with its node (``.kubeconfig``,
    ``.state_dir``, ``.bin_dir``, ``.env``, ``.node_ip``, ``.registry``, ``.s3``), stopped
    at the end of the session even after failures. ``.machine_before`` is this machine
    as it was before the node started (for the test that ``down`` restores it)."""
    from pinster_devcluster import DevCluster
    from pinster_devcluster._procs import stop
    from pinster_devcluster._watchdog import watch

    from pinster_images.errors import PermanentError
    from tests.support.machine import snapshot

    cluster = DevCluster(tmp_path_factory.mktemp("devcluster"))
    cluster.machine_before = snapshot()  # type: ignore[attr-defined]
    try:
        cluster.up()
    except PermanentError as exc:  # binaries, packages, root, another node: say what to do
        pytest.fail(str(exc), pytrace=False)
    # Should this session be killed before its finalizers run, the cluster goes too.
    watchdog = watch(cluster)
    try:
        yield cluster
    finally:
        cluster.down()
        stop(watchdog, grace=1)


@pytest.fixture(scope="session")
def product_image(devcluster: Any) -> Any:
    """The product's image (:class:`pinster_devcluster.ImageRef`), built from the
    repository's Dockerfile with BuildKit and pushed to the node's registry, as `make run`
    does; ``.pinned`` is what a Pod spec names."""
    from pathlib import Path

    return devcluster.build_image(Path(__file__).resolve().parents[1])


@pytest.fixture(scope="session")
def kube_api(devcluster: Any) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` with the admin credentials."""
    from pinster_images.kube import api_client

    client = api_client(str(devcluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def kubectl(devcluster: Any) -> Kubectl:
    """``kubectl(*args, input=None) -> stdout`` as the cluster admin;
    ``kubectl.run(..., check=False)`` for the CompletedProcess."""
    return Kubectl(devcluster.bin_dir / "kubectl", devcluster.env)


@pytest.fixture
def namespace(kube_api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for this test (its default service account already exists, so
    Pods are admitted at once); deleted afterwards without waiting for finalization."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube_api)
    name = unique_name(request.node.name, max_length=40)
    core.create_namespace({"metadata": {"name": name, "labels": {"pinster.io/test": "true"}}})

    def default_service_account() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    try:
        wait_for(default_service_account, timeout=30, what=f"serviceaccount {name}/default")
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
