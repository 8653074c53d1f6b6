"""`make deploy` against the devcluster as if it were any cluster: the current kubeconfig
context, a registry path of our choosing with its own CA, our own values file."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from pinster_images import keys
from tests.support import release
from tests.support.helm import helm
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_make_deploy_builds_pushes_and_installs_on_the_current_context(
    devcluster: Any,
    kube_api: Any,
    namespace: str,
    crd_installed: str,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    api_private = keys.generate_private_key()
    release.create_secrets(
        kube_api,
        namespace,
        api_public=keys.public_key_of(api_private),
        service_private=keys.generate_private_key(),
        s3=s3_server,
    )
    # What a user writes for their cluster: storage, keys, URLs (no image: deploy sets it).
    values = release.values(
        image=None,
        namespace=namespace,
        storage_env=s3_server.fresh_env(),
        s3=s3_server,
        service_url="http://images.deploy.test",
        api_url="http://api.deploy.test",
    )
    values_file = tmp_path / "my-values.yaml"
    values_file.write_text(
        yaml.safe_dump(release.merge(values, {"moderation": {"backend": "none"}}))
    )
    registry = f"{devcluster.registry}/team-{namespace[-6:]}"

    # The user's shell: their kubeconfig, nothing of the test session's.
    env = {**os.environ, "KUBECONFIG": str(devcluster.kubeconfig)}
    deployed = subprocess.run(
        ["make", "deploy", f"REGISTRY={registry}", f"REGISTRY_CA={devcluster.ca_cert}",
         f"VALUES={values_file}", f"NAMESPACE={namespace}", "RELEASE=mine"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert f"deployed {registry}/pinster-images:" in deployed.stdout

    status = json.loads(
        helm(
            "status",
            "mine",
            "-n",
            namespace,
            "-o",
            "json",
            env={"KUBECONFIG": str(devcluster.kubeconfig)},
        ).stdout
    )
    assert status["info"]["status"] == "deployed"
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/instance=mine"
    )
    images = {c.image for p in pods.items for c in p.spec.containers}
    assert len(images) == 1
    [image] = images
    assert image.startswith(f"{registry}/pinster-images:") and "@sha256:" in image
    # The base was pushed beside it, to the same registry path.
    assert _has_base(devcluster, registry)

    service = client.CoreV1Api(kube_api).read_namespaced_service("mine-pinster-images", namespace)
    url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/readyz"

    def ready() -> bool:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)

    wait_for(ready, 60, what="the deployed upload service ready (storage and API server reachable)")


def _has_base(devcluster: Any, registry: str) -> bool:
    from pinster_devcluster._images import registry_context

    host, _, prefix = registry.partition("/")
    request = urllib.request.Request(f"https://{host}/v2/{prefix}/devcluster/python/tags/list")
    with urllib.request.urlopen(
        request, timeout=5, context=registry_context(devcluster.ca_cert)
    ) as answer:
        return bool(json.load(answer).get("tags"))
