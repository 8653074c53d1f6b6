"""The chart installed onto the devcluster as users install it: the product's image from
the node's registry, pulled and run by the kubelet under the chart's restricted security
context and service accounts (a missing RBAC rule fails here as on any cluster), the
devcluster's object store as its S3, PinsterApi on the node address."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client
from PIL import Image

from pinster_images import keys
from tests.support.helm import CHART, helm
from tests.support.kube import Kubectl
from tests.support.pinster_api import PinsterApi
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

SERVICE_URL = "http://images.test"
RELEASE = "pi"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"

#: What the runtime enforces in a running container, reported as JSON.
INSPECT = r"""
import json, os
facts = {"uid": os.getuid()}
try:
    open("/root-write", "w")
    facts["root_writable"] = True
except OSError:
    facts["root_writable"] = False
open("/tmp/probe", "w").write("ok")
status = dict(line.split(":\t", 1) for line in open("/proc/self/status") if ":\t" in line)
facts["cap_eff"] = status["CapEff"].strip()
facts["memory_limit"] = int(open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read())
print(json.dumps(facts))
"""


def _secrets(
    core: client.CoreV1Api, namespace: str, key_dir: Path, service_private: bytes, s3: S3Server
) -> None:
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
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "pinster-s3"}, "stringData": s3.credentials}
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


def _fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    """An anonymous GET, as a browser or CDN would fetch a published image."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, dict(answer.headers), answer.read()


def _healthy(url: str) -> bool:
    try:
        return _fetch(f"{url}/healthz")[0] == 200
    except OSError:
        return False


def test_install_upload_test_upgrade_uninstall(
    devcluster: Any,
    kube_api: Any,
    kubectl: Kubectl,
    namespace: str,
    crd_installed: str,
    product_image: Any,
    s3_server: S3Server,
    node_pinster_api: PinsterApi,
    service_keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    pinster_api = node_pinster_api
    key_dir = tmp_path / "keys"
    keys.generate_dir(key_dir)
    _secrets(core, namespace, key_dir, service_keys[0], s3_server)
    storage = s3_server.fresh_env()
    public_bucket = storage["PINSTER_S3_PUBLIC_BUCKET"]
    public_url = s3_server.endpoint.public_url(public_bucket)
    kubeconfig = ["--kubeconfig", str(devcluster.kubeconfig), "-n", namespace]
    common = [
        "-f", str(CHART / "ci" / "devcluster-values.yaml"),
        # The CRD is already there (installed outside Helm by the session); the chart's
        # own copy is checked in tests/unit/test_chart_render.py.
        "--set", "crds.enabled=false",
        "--set", f"image.repository={product_image.repository}",
        "--set", f"image.tag={product_image.tag}",
        "--set", f"image.digest={product_image.digest}",
        "--set", f"operator.watchNamespaces={{{namespace}}}",
        "--set", f"storage.s3.endpointUrl={s3_server.endpoint_url}",
        "--set", f"storage.s3.uploadBucket={storage['PINSTER_S3_UPLOAD_BUCKET']}",
        "--set", f"storage.s3.publicBucket={public_bucket}",
        "--set", "storage.s3.credentialsSecret=pinster-s3",
        "--set", f"storage.publicUrl={public_url}",
        "--set", f"config.serviceUrl={SERVICE_URL}",
        "--set", f"config.apiUrl={pinster_api.url}",
        "--set", "auth.apiPublicKey.secretName=pinster-keys",
        "--set", "auth.servicePrivateKey.secretName=pinster-keys",
        "--set", "tests.enabled=true",
        "--set", "tests.signingKey.secretName=pinster-keys",
    ]  # fmt: skip
    helm("install", RELEASE, str(CHART), *kubeconfig, *common, "--wait", "--timeout", "180s")

    # Every Pod runs the pushed image, pinned by digest, pulled by the node.
    pods = core.list_namespaced_pod(namespace, label_selector=INSTANCE).items
    assert pods and {p.spec.containers[0].image for p in pods} == {product_image.pinned}
    assert all(
        s.image_id.endswith(product_image.digest) for p in pods for s in p.status.container_statuses
    )

    # What the runtime enforces in the operator's container: the chart's restricted
    # security context and its memory limit.
    facts = json.loads(
        kubectl("exec", "-n", namespace, f"deploy/{RELEASE}-pinster-images-operator", "--",
                "python3", "-c", INSPECT).strip().splitlines()[-1]
    )  # fmt: skip
    assert facts == {
        "uid": 65532,
        "root_writable": False,
        "cap_eff": "0000000000000000",
        "memory_limit": 512 * 1024 * 1024,  # operator.resources.limits.memory
    }
    operator_logs = kubectl("logs", "-n", namespace, f"deploy/{RELEASE}-pinster-images-operator")
    assert json.loads(operator_logs.strip().splitlines()[0])["level"]  # JSON lines

    # An upload from outside the cluster through the Service's cluster IP reaches Ready.
    service = core.read_namespaced_service("pi-pinster-images", namespace)
    url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"
    wait_for(lambda: _healthy(url), 30, what="the upload Service through kube-proxy")
    image = tmp_path / "pin.png"
    Image.new("RGB", (320, 200), (20, 120, 200)).save(image)
    uploaded = _upload(devcluster, url, key_dir, pinster_api, image, "1")
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    wait_for(lambda: len(pinster_api.accepted()) == 1, 60, what="one notification")
    notified = pinster_api.accepted()[0].body["data"]
    md5 = notified["base_file_name"]
    # The URL PinsterApi was told is fetchable by anyone, with the original's headers.
    status, headers, body = _fetch(notified["storage_location_uri"])
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert headers["Cache-Control"] == "max-age=86400"
    assert Image.open(io.BytesIO(body)).size == (320, 200)
    thumbnails = [k for k in _keys(s3_server, public_bucket) if k.startswith(f"{md5}_")]
    assert thumbnails

    # A size nobody rendered, through the bucket's website rule (as the original's): the
    # front sends the missing key to GET /generate, which renders and stores it and
    # answers 301 to its public URL.
    devcluster.set_website_redirect(public_bucket, f"{url}/generate")
    try:
        on_demand = requests.get(f"{public_url}/{md5}_64xauto", timeout=60)
    finally:
        devcluster.set_website_redirect(public_bucket, None)
    assert [(r.status_code, r.headers["Location"]) for r in on_demand.history] == [
        (307, f"{url}/generate?key={md5}_64xauto"),
        (301, f"{public_url}/{md5}_64xauto"),
    ]
    assert on_demand.status_code == 200 and on_demand.headers["Content-Type"] == "image/jpeg"
    assert on_demand.headers["Cache-Control"] == "max-age=86400"
    assert Image.open(io.BytesIO(on_demand.content)).size == (64, 40)
    assert f"{md5}_64xauto" in _keys(s3_server, public_bucket)

    # helm test: its Pod uploads through the Service by its DNS name and waits for Ready.
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
    wait_for(lambda: _healthy(url), 30, what="the upload Service after the rollout")
    second = tmp_path / "second.png"
    Image.new("RGB", (640, 480), (200, 120, 20)).save(second)
    uploaded = _upload(devcluster, url, key_dir, pinster_api, second, "3")
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    md5_second = pinster_api.accepted()[-1].body["data"]["base_file_name"]
    assert md5_second != md5
    published = sorted(k for k in _keys(s3_server, public_bucket) if k.startswith(f"{md5_second}_"))
    assert published == [f"{md5_second}_300x200"]
    _, _, body = _fetch(f"{public_url}/{published[0]}")
    assert Image.open(io.BytesIO(body)).size == (267, 200)  # 640x480 fit inside 300x200

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
    assert md5 in _keys(s3_server, public_bucket)


def _keys(s3: S3Server, bucket: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return [item["Key"] for item in listed]


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
