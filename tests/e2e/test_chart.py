"""The chart installed onto the devcluster. The node agent runs the operator, upload
service, Job and `helm test` Pods as local processes under the chart's service accounts,
so a missing RBAC rule fails here as it would in a real cluster."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from pinster_images import keys
from tests.support.helm import CHART, helm
from tests.support.pinster_api import PinsterApi
from tests.support.net import free_port
from tests.support.waiting import wait_for

SERVICE_URL = "http://images.test"
RELEASE = "pi"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"


def _secret(core: client.CoreV1Api, namespace: str, key_dir: Path, service_private: bytes) -> None:
    data = {
        keys.API_PUBLIC: (key_dir / keys.API_PUBLIC).read_bytes(),
        keys.API_PRIVATE: (key_dir / keys.API_PRIVATE).read_bytes(),
        keys.SERVICE_PRIVATE: service_private,
    }
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "pinster-keys"},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        },
    )


def _upload(
    devcluster: Any, url: str, key_dir: Path, api: PinsterApi, image: Path, imageable: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinster_images", "upload", "--wait", "--timeout", "240",
         "--url", url, "--keys", str(key_dir), "--service-url", SERVICE_URL, "--api-url", api.url,
         "--imageable-type", "Pin", "--imageable-id", imageable, str(image)],
        capture_output=True, text=True, env=devcluster.env, timeout=300, check=False,
    )  # fmt: skip


def _owned(kube_api: Any, namespace: str) -> dict[str, list[str]]:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    listings = {
        "deployments": apps.list_namespaced_deployment(namespace, label_selector=INSTANCE),
        "services": core.list_namespaced_service(namespace, label_selector=INSTANCE),
        "serviceaccounts": core.list_namespaced_service_account(namespace, label_selector=INSTANCE),
        "configmaps": core.list_namespaced_config_map(namespace, label_selector=INSTANCE),
        "roles": rbac.list_namespaced_role(namespace, label_selector=INSTANCE),
        "rolebindings": rbac.list_namespaced_role_binding(namespace, label_selector=INSTANCE),
        "secrets": core.list_namespaced_secret(namespace, label_selector="owner=helm"),
        "clusterroles": rbac.list_cluster_role(label_selector=INSTANCE),
        "clusterrolebindings": rbac.list_cluster_role_binding(label_selector=INSTANCE),
        "pods": core.list_namespaced_pod(namespace, label_selector=INSTANCE),
    }
    return {
        kind: [i.metadata.name for i in listing.items]
        for kind, listing in listings.items()
        if listing.items
    }


def test_install_upload_test_upgrade_uninstall(
    devcluster: Any,
    kube_api: Any,
    namespace: str,
    crd_installed: str,
    pinster_api: PinsterApi,
    service_keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    key_dir, storage = tmp_path / "keys", tmp_path / "storage"
    keys.generate_dir(key_dir)
    _secret(core, namespace, key_dir, service_keys[0])
    kubeconfig = ["--kubeconfig", str(devcluster.kubeconfig), "-n", namespace]
    common = [
        "-f", str(CHART / "ci" / "devcluster-values.yaml"),
        # The CRD is already there (installed outside Helm by the session); the chart's
        # own copy is checked in tests/unit/test_chart_render.py.
        "--set", "crds.enabled=false",
        "--set", f"operator.watchNamespaces={{{namespace}}}",
        "--set", f"storage.local.path={storage}",
        "--set", f"config.serviceUrl={SERVICE_URL}",
        "--set", f"config.apiUrl={pinster_api.url}",
        "--set", "auth.apiPublicKey.secretName=pinster-keys",
        "--set", "auth.servicePrivateKey.secretName=pinster-keys",
        "--set", "tests.enabled=true",
        "--set", "tests.signingKey.secretName=pinster-keys",
        # The operator binds its probe and metrics ports on 0.0.0.0 (it has no pod-IP
        # setting yet) and every devcluster Pod shares this host: free ports avoid
        # colliding with another stack (`make run`) on the same machine.
        "--set", f"operator.healthPort={free_port()}",
        "--set", f"operator.metricsPort={free_port()}",
    ]  # fmt: skip
    helm("install", RELEASE, str(CHART), *kubeconfig, *common, "--wait", "--timeout", "180s")

    # An upload from outside the cluster through the Service's cluster IP reaches Ready.
    service = core.read_namespaced_service("pi-pinster-images", namespace)
    url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"
    image = tmp_path / "pin.png"
    from PIL import Image

    Image.new("RGB", (320, 200), (20, 120, 200)).save(image)
    uploaded = _upload(devcluster, url, key_dir, pinster_api, image, "1")
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    wait_for(lambda: len(pinster_api.accepted()) == 1, 60, what="one notification")
    md5 = pinster_api.accepted()[0].body["data"]["base_file_name"]
    assert (storage / "public" / md5).is_file()
    assert sorted(p.name for p in (storage / "public").glob(f"{md5}_*"))

    # helm test: its Pod uploads through the Service by its service links and waits for Ready.
    tested = helm("test", RELEASE, *kubeconfig, "--timeout", "300s", check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert len(pinster_api.accepted()) == 2

    # An upgrade with changed settings rolls out new Pods that see them.
    before = {
        p.metadata.uid for p in core.list_namespaced_pod(namespace, label_selector=INSTANCE).items
    }
    helm("upgrade", RELEASE, str(CHART), *kubeconfig, *common, "--set", "config.thumbnailQuality=70",
         "--set", "config.thumbnailSizes={300x200}", "--wait", "--timeout", "180s")  # fmt: skip
    config = core.read_namespaced_config_map("pi-pinster-images-config", namespace)
    assert config.data["PINSTER_THUMBNAIL_QUALITY"] == "70"
    assert config.data["PINSTER_THUMBNAIL_SIZES"] == "300x200"

    def rolled_out() -> bool:
        pods = core.list_namespaced_pod(
            namespace, label_selector=f"{INSTANCE},app.kubernetes.io/component"
        )
        running = [
            p
            for p in pods.items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]
        return len(running) == 2 and not ({p.metadata.uid for p in running} & before)

    wait_for(rolled_out, 120, what="new operator and ingress pods")
    operator = apps.read_namespaced_deployment("pi-pinster-images-operator", namespace)
    assert operator.status.observed_generation == 2
    # The new pods use the new settings: a new upload gets only the new thumbnail size.
    second = tmp_path / "second.png"
    Image.new("RGB", (640, 480), (200, 120, 20)).save(second)
    uploaded = _upload(devcluster, url, key_dir, pinster_api, second, "3")
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    md5_second = pinster_api.accepted()[-1].body["data"]["base_file_name"]
    assert md5_second != md5
    published = sorted(p.name for p in (storage / "public").glob(f"{md5_second}_*"))
    assert published == [f"{md5_second}_300x200"]
    with Image.open(storage / "public" / published[0]) as thumbnail:
        assert thumbnail.size == (267, 200)  # 640x480 fit inside 300x200

    # Uninstall leaves only the CRD and the stored images behind.
    helm("uninstall", RELEASE, *kubeconfig, "--wait", "--timeout", "120s")
    remaining: dict[str, list[str]] = {}

    def all_gone() -> bool:
        remaining.clear()
        remaining.update(_owned(kube_api, namespace))
        return not remaining

    try:
        wait_for(all_gone, 60, interval=0.5, what="release objects gone")
    except TimeoutError:
        raise AssertionError(f"left behind after helm uninstall: {remaining}") from None
    ext = client.ApiextensionsV1Api(kube_api)
    assert ext.read_custom_resource_definition("imageuploads.images.pinster.io").metadata.name
    assert (storage / "public" / md5).is_file()


@pytest.mark.parametrize(
    "values", sorted((CHART / "ci").glob("*-values.yaml")), ids=lambda v: v.name
)
def test_every_ci_values_rendering_is_accepted_by_the_api_server(
    devcluster: Any, namespace: str, crd_installed: str, values: Path
) -> None:
    """Server-side dry run of everything the chart renders: the real API server validates
    each object against its schema (HPA, PDB, NetworkPolicy, RBAC, the CRD itself).
    ServiceMonitor is left out: its CRD belongs to the Prometheus Operator."""
    rendered = helm(
        "template", RELEASE, str(CHART), "-n", namespace, "-f", str(values),
        "--set", f"operator.watchNamespaces={{{namespace}}}",
        "--set", "auth.apiPublicKey.secretName=k", "--set", "auth.servicePrivateKey.secretName=k",
        "--set", "tests.enabled=true", "--set", "tests.signingKey.secretName=k",
    ).stdout  # fmt: skip
    documents = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] != "ServiceMonitor"]
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= kinds
    applied = subprocess.run(
        ["kubectl", "apply", "--dry-run=server", "-n", namespace, "-f", "-"],
        input=yaml.safe_dump_all(documents),
        capture_output=True, text=True, env=devcluster.env, timeout=120, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("(server dry run)") == len(documents)
