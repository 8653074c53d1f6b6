"""Upload service throughput, latency and memory, beside the bare work it wraps.

For 200 KB and 5 MB JPEGs, with the devcluster's object store (MinIO, a production S3
server, over HTTP on the node address) as storage, 16 concurrent
clients upload distinct images to ``pinster-images ingress`` (a subprocess, so its peak
RSS is its own) in the original JSON data-URI form and in the raw form. Beside each, in
the same run: the bare cost of what the service must do anyway - ``storage.put`` of the
same bytes plus creating the ImageUpload through the same API server - at the same
concurrency. Prints a table with the ratios.

Kubernetes is the devcluster's real API server (started here with its own state
directory, stopped at the end; it holds this machine's node, so no other devcluster may
run). Run: ``.venv/bin/python bench/bench_ingress.py [--quick]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pinster_images import keys, resource  # noqa: E402
from pinster_images.kube import api_client  # noqa: E402
from pinster_images.storage import Area, StorageSettings, raw_key  # noqa: E402
from tests.support.crd import install_crd  # noqa: E402
from tests.support.images import noisy_jpeg  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.procstat import cpu_seconds, memory_mib  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

CLIENTS = 16
SERVICE_URL, API_URL = "http://images.bench", "http://pinster-api.bench"


def variant(base: bytes, index: int) -> bytes:
    """The same JPEG with a unique comment segment: distinct md5, same pixels."""
    comment = f"bench {index} {uuid.uuid4()}".encode()
    return base[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + base[2:]


@dataclass
class Result:
    label: str
    count: int
    seconds: float
    latencies: list[float]
    peak_rss_mb: float | None = None
    idle_rss_mb: float | None = None
    cpu_ms: float | None = None  # service process CPU per upload

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def warm_up(work: Callable[[int], None]) -> None:
    """Connections, imports and the API server's caches, outside the measurement."""
    for index in range(1, 4):
        work(-index)


def run_concurrently(count: int, work: Callable[[int], None]) -> Result:
    latencies: list[float] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        started = time.perf_counter()
        work(index)
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(count)))
    return Result("", count, time.perf_counter() - started, latencies)


@contextmanager
def service(env: dict[str, str]) -> Iterator[tuple[str, int]]:
    port = free_port()
    full = {
        **os.environ,
        **env,
        "PINSTER_INGRESS_PORT": str(port),
        "PINSTER_INGRESS_HOST": "127.0.0.1",
        "PINSTER_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "pinster_images", "ingress"], env=full)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: requests.get(f"{url}/healthz", timeout=1).ok,
            timeout=30,
            what="the ingress to start",
        )
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def bench_service(url: str, pid: int, base: bytes, count: int, raw: bool, private: bytes) -> Result:
    session = threading.local()

    # One token for the run: minting loads the RSA key (~35 ms of CPU, GIL held), which
    # would make the clients, not the service, the bottleneck.
    token = keys.mint(
        private,
        issuer=API_URL,
        audience=SERVICE_URL,
        ttl=600,
        claims={"user_id": "b", "imageable_type": "Pin", "imageable_id": "1"},
    )

    # Bodies are built before the clock starts: the clients' base64 and JSON encoding
    # would otherwise compete with the service for the same two cores.
    def build(index: int) -> bytes:
        data = variant(base, index)
        if raw:
            return data
        uri = "data:image/jpeg;base64," + base64.b64encode(data).decode()
        return json.dumps({"data": {"image": uri}}).encode()

    payloads = {index: build(index) for index in (-1, -2, -3, *range(count))}
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "image/jpeg" if raw else "application/json",
    }

    def work(index: int) -> None:
        if not hasattr(session, "s"):
            session.s = requests.Session()
        response = session.s.post(
            f"{url}/v1/images", data=payloads[index], headers=headers, timeout=300
        )
        if response.status_code != 202:
            raise RuntimeError(f"upload {index}: {response.status_code} {response.text[:300]}")

    warm_up(work)
    idle = memory_mib(pid, "VmRSS")
    cpu = cpu_seconds(pid)
    result = run_concurrently(count, work)
    result.cpu_ms = (cpu_seconds(pid) - cpu) / count * 1000
    result.peak_rss_mb = memory_mib(pid, "VmHWM")
    result.idle_rss_mb = idle
    return result


def bench_bare(
    storage_env: dict[str, str], kubeconfig: str, namespace: str, base: bytes, count: int
) -> Result:
    storage = StorageSettings.from_env(storage_env).open()
    from kubernetes import client

    api = client.CustomObjectsApi(api_client(kubeconfig))

    datas = {index: variant(base, index) for index in (-1, -2, -3, *range(count))}

    def work(index: int) -> None:
        data = datas[index]
        md5 = hashlib.md5(data).hexdigest()
        storage.put(
            Area.UPLOAD,
            raw_key(md5),
            data,
            content_type="image/jpeg",
            metadata={
                "user_id": "b",
                "imageable_type": "Pin",
                "imageable_id": str(index),
                "base_file_name": md5,
            },
        )
        spec = resource.ImageUploadSpec(
            md5=md5,
            bucket=storage.bucket(Area.UPLOAD),
            key=raw_key(md5),
            content_type="image/jpeg",
            byte_size=len(data),
            width=1,
            height=1,
            uploader=resource.Uploader("b", "Pin", str(index)),
        )
        name = resource.upload_name(md5, "Pin", str(index))
        api.create_namespaced_custom_object(
            resource.GROUP,
            resource.VERSION,
            namespace,
            resource.PLURAL,
            resource.manifest(name, namespace, spec),
        )

    warm_up(work)
    return run_concurrently(count, work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer uploads per run")
    args = parser.parse_args()
    from pinster_devcluster import DevCluster

    work = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    keys.generate_dir(work / "keys")
    private = (work / "keys" / keys.API_PRIVATE).read_bytes()
    cluster = DevCluster(work / "cluster")
    print("starting the devcluster (real API server, MinIO object store) ...", flush=True)
    cluster.up()
    kubeconfig = str(cluster.kubeconfig)
    kube = api_client(kubeconfig)
    install_crd(kube)
    from kubernetes import client

    endpoint = cluster.s3
    s3_credentials = {
        "AWS_ACCESS_KEY_ID": endpoint.access_key,
        "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
        "AWS_DEFAULT_REGION": endpoint.region,
    }
    os.environ.update(s3_credentials)  # boto3 in this process (the bare reference)
    sizes = {"200KB": noisy_jpeg(200_000, seed=1), "5MB": noisy_jpeg(5_000_000, seed=2)}
    counts = {"200KB": 64 if args.quick else 192, "5MB": 16 if args.quick else 48}
    rows: list[tuple[str, str, str, Result]] = []
    try:
        backend = "S3"  # the table keeps a storage column for other stores
        for size, base in sizes.items():
            namespace = f"bench-{uuid.uuid4().hex[:6]}"
            client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
            suffix = uuid.uuid4().hex[:8]
            s3 = endpoint.client()
            for bucket in (f"up-{suffix}", f"pub-{suffix}"):
                s3.create_bucket(Bucket=bucket)
            storage_env = endpoint.env(f"up-{suffix}", f"pub-{suffix}")
            env = {
                **storage_env,
                "KUBECONFIG": kubeconfig,
                "PINSTER_NAMESPACE": namespace,
                "PINSTER_SERVICE_URL": SERVICE_URL,
                "PINSTER_API_URL": API_URL,
                "PINSTER_API_PUBLIC_KEY_FILE": str(work / "keys" / keys.API_PUBLIC),
            }
            count = counts[size]
            print(f"{backend} {size} x{count}: bare ...", flush=True)
            rows.append(
                (
                    backend,
                    size,
                    "bare put+create",
                    bench_bare(storage_env, kubeconfig, namespace, base, count),
                )
            )
            for raw in (False, True):
                form = "raw" if raw else "json"
                print(f"{backend} {size} x{count}: service {form} ...", flush=True)
                with service(env) as (url, pid):
                    rows.append(
                        (
                            backend,
                            size,
                            f"service {form}",
                            bench_service(url, pid, base, count, raw, private),
                        )
                    )
            client.CoreV1Api(kube).delete_namespace(namespace)
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"{CLIENTS} concurrent clients; image sizes {[f'{len(b) / 1e6:.2f} MB' for b in sizes.values()]}"
    )
    header = (
        f"{'storage':<7} {'size':<6} {'what':<16} {'n':>4} {'up/s':>7} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'x bare/s':>8} {'x p50':>6} {'RSS idle':>8} {'RSS peak':>8} {'CPU ms':>7}"
    )
    print(header)
    print("-" * len(header))
    bare: dict[tuple[str, str], Result] = {}
    for backend, size, what, result in rows:
        if what.startswith("bare"):
            bare[(backend, size)] = result
        base_result = bare[(backend, size)]
        rss = (
            f"{result.idle_rss_mb:>7.0f}M {result.peak_rss_mb:>7.0f}M {result.cpu_ms or 0:>7.1f}"
            if result.peak_rss_mb is not None
            else f"{'-':>8} {'-':>8} {'-':>7}"
        )
        print(
            f"{backend:<7} {size:<6} {what:<16} {result.count:>4} {result.rate:>7.1f} "
            f"{result.pct(0.5):>8.1f} {result.pct(0.99):>8.1f} "
            f"{result.rate / base_result.rate:>8.2f} {result.pct(0.5) / base_result.pct(0.5):>6.2f} "
            f"{rss}"
        )
    print(
        "\nx bare/s: service uploads/s divided by bare put+create/s (1.0 = no overhead);"
        "\nx p50: service median latency over bare median. RSS of the service process"
        " (VmRSS before the run, VmHWM after)."
    )
    print("\nmemory per in-flight upload, (peak - idle RSS) / (16 x image size):")
    for backend, size, what, result in rows:
        if result.peak_rss_mb is not None and result.idle_rss_mb is not None:
            multiple = (result.peak_rss_mb - result.idle_rss_mb) / (
                len(sizes[size]) / 2**20 * CLIENTS
            )
            print(f"  {backend:<5} {size:<5} {what:<14} {multiple:5.2f} x image size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
