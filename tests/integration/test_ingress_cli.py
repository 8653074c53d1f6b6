"""``pinster-images ingress`` and ``pinster-images upload`` as processes, with the
devcluster's API server and object store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pinster_images import keys, resource
from tests.support import images
from tests.support.net import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
CLI = [sys.executable, "-m", "pinster_images"]


@pytest.fixture
def ingress(
    devcluster: Any, namespace: str, crd_installed: str, s3_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    keys.generate_dir(tmp_path / "keys")
    port = free_port()
    env = {
        **os.environ,
        **s3_env,
        "KUBECONFIG": str(devcluster.kubeconfig),
        "PINSTER_NAMESPACE": namespace,
        "PINSTER_SERVICE_URL": f"http://127.0.0.1:{port}",
        "PINSTER_API_URL": "http://pinster-api.test",
        "PINSTER_API_PUBLIC_KEY_FILE": str(tmp_path / "keys" / keys.API_PUBLIC),
        "PINSTER_INGRESS_HOST": "127.0.0.1",
        "PINSTER_INGRESS_PORT": str(port),
    }
    log = (tmp_path / "ingress.log").open("w")
    process = subprocess.Popen([*CLI, "ingress"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: requests.get(f"{url}/readyz", timeout=2).status_code == 200,
            timeout=30,
            what="the ingress to be ready",
        )
        yield url, tmp_path
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        log.close()
        assert "Traceback" not in (tmp_path / "ingress.log").read_text()


def test_cli_serves_and_the_upload_command_creates_the_resource(
    ingress: tuple[str, Path], kube_api: Any, namespace: str
) -> None:
    url, tmp = ingress
    image = tmp / "photo.jpg"
    image.write_bytes(images.jpeg(90, 60))
    result = subprocess.run(
        [
            *CLI,
            "upload",
            str(image),
            "--url",
            url,
            "--keys",
            str(tmp / "keys"),
            "--api-url",
            "http://pinster-api.test",
            "--imageable-id",
            "5",
            "--name",
            "From the CLI",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PINSTER_SERVICE_URL": ""},
    )
    assert result.returncode == 0, result.stderr
    name = result.stdout.strip()
    from kubernetes import client

    obj = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name
    )
    assert obj["spec"]["name"] == "From the CLI"
    assert obj["spec"]["uploader"]["imageableId"] == "5"
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert 'outcome="Accepted",route="upload",status="202"} 1.0' in metrics
