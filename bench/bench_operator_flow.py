"""Operator throughput and latency on the devcluster's node, real Jobs, ``none`` moderation.

The chart is installed from the product's image, as users install it: the operator and
the Job pods are containers run by the kubelet; storage is the devcluster's object
store; PinsterApi is the stand-in from tests/support, on the node address.

1. Single-upload latency: one ImageUpload created, time until ``Ready`` (median of a few).
2. Throughput: N ImageUploads created at once (~200 KB JPEGs already in the upload
   bucket, as the upload service leaves them), time until all are ``Ready``, Jobs used,
   operator CPU seconds per upload (its container's cgroup: cpuacct).

Targets: 1,000 uploads < 3 min on 2 cores, < 10 ms operator CPU per upload, single upload
< 3 s. The last line: ``operator: X.X ms CPU per upload, 1000 Ready in Y.Y s``.

Run: ``.venv/bin/python bench/bench_operator_flow.py [--uploads 1000] [--latency-runs 5]``
(needs root and no other devcluster node on the machine).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image as PILImage  # noqa: E402

from pinster_images import keys, kube  # noqa: E402
from pinster_images.resource import (  # noqa: E402
    GROUP,
    PLURAL,
    VERSION,
    ImageUploadSpec,
    Uploader,
    manifest,
    upload_name,
)
from pinster_images.storage import Area, Storage, StorageSettings, raw_key  # noqa: E402
from tests.support import release  # noqa: E402
from tests.support.crd import install_crd  # noqa: E402
from tests.support.images import noisy_jpeg  # noqa: E402
from tests.support.pinster_api import PinsterApi  # noqa: E402
from tests.support.pods import container_cpu_seconds  # noqa: E402
from tests.support.s3 import S3Server  # noqa: E402

SERVICE_URL = "http://images.bench"


class Bench:
    def __init__(self, api: Any, storage: Storage, namespace: str) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api)
        self.storage = storage
        self.namespace = namespace
        self.image = noisy_jpeg(200_000)
        with PILImage.open(io.BytesIO(self.image)) as decoded:
            self.size = decoded.size

    def create(self, index: int) -> str:
        # Distinct bytes, same pixels: a JPEG comment segment right after SOI.
        comment = f"bench {index}".encode()
        data = (
            self.image[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        ) + self.image[2:]
        md5 = hashlib.md5(data).hexdigest()
        self.storage.put(Area.UPLOAD, raw_key(md5), data, content_type="image/jpeg")
        spec = ImageUploadSpec(
            md5=md5,
            bucket=self.storage.bucket(Area.UPLOAD),
            key=raw_key(md5),
            content_type="image/jpeg",
            byte_size=len(data),
            width=self.size[0],
            height=self.size[1],
            uploader=Uploader("u", "Pin", str(index)),
            thumbnail_sizes=("512x512", "128x128"),
        )
        name = upload_name(md5, "Pin", str(index))
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, manifest(name, self.namespace, spec)
        )
        return name

    def phases(self) -> dict[str, str]:
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        return {
            item["metadata"]["name"]: (item.get("status") or {}).get("phase", "")
            for item in listed["items"]
        }

    def wait_ready(self, names: set[str], timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            phases = self.phases()
            if all(phases.get(n) in ("Ready", "Rejected", "Failed") for n in names):
                bad = [n for n in names if phases.get(n) != "Ready"]
                if bad:
                    obj = self.custom.get_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, bad[0]
                    )
                    why = [
                        c["message"] for c in obj["status"]["conditions"] if c["type"] == "Ready"
                    ]
                    raise SystemExit(f"{len(bad)} uploads not Ready, e.g. {bad[0]}: {why}")
                return time.monotonic() - started
            time.sleep(0.1)
        raise SystemExit(f"timed out after {timeout}s")


def run(cluster: Any, uploads: int, latency_runs: int, work: Path) -> None:
    from kubernetes import client

    api = kube.api_client(str(cluster.kubeconfig))
    install_crd(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    image = cluster.build_image(ROOT)
    s3 = S3Server(cluster.s3)
    storage_env = s3.fresh_env()
    storage = StorageSettings.from_env(storage_env).open()
    private = keys.generate_private_key()
    pinster_api = PinsterApi(keys.public_key_of(private), SERVICE_URL).start(host=cluster.node_ip)
    release.create_secrets(
        api, namespace, api_public=keys.public_key_of(private), service_private=private, s3=s3
    )
    installed = release.Release("bench", namespace, cluster.kubeconfig, work)
    values = release.values(
        image=image,
        namespace=namespace,
        storage_env=storage_env,
        s3=s3,
        service_url=SERVICE_URL,
        api_url=pinster_api.url,
    )
    installed.install(
        release.merge(
            values,
            {
                "moderation": {"backend": "none"},
                "config": {"logLevel": "warning"},
                "operator": {"batch": {"maxSize": 50, "windowSeconds": 1}},
            },
        )
    )
    operator_pod = (
        client.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=operator")
        .items[0]
        .metadata.name
    )
    bench = Bench(api, storage, namespace)
    try:
        latencies = []
        for i in range(latency_runs):
            started = time.monotonic()
            name = bench.create(1_000_000 + i)
            bench.wait_ready({name}, timeout=60)
            latencies.append(time.monotonic() - started)
        cpu_before = container_cpu_seconds(api, namespace, operator_pod)
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            names = set(pool.map(bench.create, range(uploads)))
        created = time.monotonic() - started
        bench.wait_ready(names, timeout=1800)
        total = time.monotonic() - started
        user, system = (
            after - before
            for after, before in zip(
                container_cpu_seconds(api, namespace, operator_pod), cpu_before, strict=True
            )
        )
        cpu = user + system
        jobs = client.BatchV1Api(api).list_namespaced_job(namespace).items
        accepted = len(pinster_api.accepted("/v1/images/"))
    finally:
        installed.uninstall()
        pinster_api.stop()
        client.CoreV1Api(api).delete_namespace(namespace)
    print(
        f"single upload create -> Ready: median {statistics.median(latencies):.2f} s "
        f"(runs: {', '.join(f'{x:.2f}' for x in latencies)}; target < 3 s)"
    )
    print(
        f"{uploads} uploads created in {created:.1f} s, all Ready after {total:.1f} s "
        f"(target < 180 s for 1,000): {uploads / total:.1f} uploads/s"
    )
    print(
        f"Jobs: {len(jobs)} ({uploads / max(1, len(jobs) - latency_runs * 2):.1f} uploads per Job)"
    )
    print(
        f"operator CPU: {cpu:.2f} s (user {user:.2f}, system {system:.2f}), "
        f"{cpu / uploads * 1000:.2f} ms per upload (target < 10 ms)"
    )
    print(f"PinsterApi POSTs accepted: {accepted} (expected {uploads + latency_runs})")
    print(
        f"operator: {cpu / uploads * 1000:.1f} ms CPU per upload, {uploads} Ready in {total:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--latency-runs", type=int, default=5)
    args = parser.parse_args()
    from pinster_devcluster import DevCluster

    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        work = Path(tmp)
        cluster = DevCluster(work / "devcluster")
        cluster.up()
        try:
            run(cluster, args.uploads, args.latency_runs, work)
        finally:
            cluster.down()


if __name__ == "__main__":
    main()
