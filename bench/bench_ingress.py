"""Upload service throughput, latency, memory and CPU, beside the work it cannot avoid.

For 200 KB and 5 MB JPEGs, with the devcluster's object store (MinIO, a production S3
server, over HTTP on the node address) as storage, 16 concurrent
clients upload distinct images to ``pinster-images ingress`` (a subprocess, so its peak
RSS and CPU are its own) in the original JSON data-URI form and in the raw form. Beside
each, in the same run:

* bare: ``storage.put`` of the same bytes plus creating the ImageUpload through the same
  API server, at the same concurrency (uploads/s and latency to compare with);
* floor: single-threaded, in this process, the CPU of exactly the work no implementation
  can skip, on bodies built as the clients' are: the base64 decode (JSON), md5, the
  header sniff, one ``storage.put`` to the same MinIO and one ImageUpload create on the
  same API server. The service's CPU per upload is printed as a ratio to it; the last
  line is ``ingress cpu/floor: json-200KB 1.23x raw-200KB ...``;
* direct (5 MB): the same clients upload straight to MinIO with a presigned POST from
  ``POST /v1/uploads``; MinIO's event reaches the service, which checks the stored object
  (a streaming read, md5, sniff) and creates the ImageUpload. Uploads/s counts until every
  ImageUpload exists; CPU is the service's for the permits and the events, beside the
  through-the-service rows (``direct/service`` line).

Kubernetes is the devcluster's real API server (started here with its own state
directory, stopped at the end; it holds this machine's node, so no other devcluster may
run). Run: ``.venv/bin/python bench/bench_ingress.py [--quick]``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import shutil
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
from pinster_images.sniff import ImageLimits, sniff  # noqa: E402
from pinster_images.storage import Area, StorageSettings, raw_key  # noqa: E402
from tests.support.crd import install_crd  # noqa: E402
from tests.support.images import noisy_jpeg, with_comment  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.procstat import cpu_seconds, memory_mib  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

CLIENTS = 16
SERVICE_URL, API_URL = "http://images.bench", "http://pinster-api.bench"
FORMS = ("json", "raw")
#: Sizes also uploaded directly to the object store (issue 15's comparison).
DIRECT_SIZES = ("5MB",)
EVENTS_TOKEN = "bench-storage-events-token"
#: The uploads the object store's events made (the other rows' share the namespace).
DIRECT_LABEL = f"{resource.LABEL_COMPONENT}=direct"
#: The issue's targets (docs/ingress.md "Benchmark").
CPU_TARGET = 1.5  # service CPU per upload over the floor, every size and form
P99_TARGET_MS = 100.0  # 200 KB JSON at 16 clients
MEMORY_TARGET = {"json": 1.5, "raw": 1.2}  # memory per in-flight upload over image size


def variant(base: bytes, index: int) -> bytes:
    """The same JPEG with a unique comment segment: distinct md5, same pixels."""
    return with_comment(base, f"bench {index} {uuid.uuid4()}")


def body(image: bytes, form: str) -> bytes:
    """What a client sends: the image itself (raw) or the original data-URI JSON."""
    if form == "raw":
        return image
    uri = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    return json.dumps({"data": {"image": uri}}).encode()


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


#: Indices of the uploads that warm up, one per client; the measured ones count from 0.
WARM_UP = range(-CLIENTS, 0)
#: What the warm-up uploads: small, so that the service keeps no image-sized buffer from it.
WARM_UP_IMAGE = noisy_jpeg(2_000, seed=3)


def upload_image(base: bytes, index: int) -> bytes:
    """Upload ``index``'s image: the warm-up's small one, else a variant of ``base``."""
    return variant(WARM_UP_IMAGE if index < 0 else base, index)


def warm_up(work: Callable[[int], None]) -> None:
    """Connections, threads, imports and the API server's caches, outside the measurement:
    one small upload per client at once. The service's idle RSS afterwards holds what
    serving this concurrency costs whatever the image (threads, connections), so that
    (peak - idle) is what the images in flight cost."""
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(work, WARM_UP))


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


def run_token(private: bytes) -> str:
    """One token for a run: minting loads the RSA key (~35 ms of CPU, GIL held), which
    would make the clients, not the service, the bottleneck."""
    return keys.mint(
        private,
        issuer=API_URL,
        audience=SERVICE_URL,
        ttl=600,
        claims={"user_id": "b", "imageable_type": "Pin", "imageable_id": "1"},
    )


def bench_service(url: str, pid: int, base: bytes, count: int, form: str, private: bytes) -> Result:
    session = threading.local()

    token = run_token(private)

    # Bodies are built before the clock starts: the clients' base64 and JSON encoding
    # would otherwise compete with the service for the same two cores.
    payloads = {index: body(upload_image(base, index), form) for index in (*WARM_UP, *range(count))}
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "image/jpeg" if form == "raw" else "application/json",
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


def bench_direct(
    url: str, pid: int, base: bytes, count: int, private: bytes, backends: Backends
) -> Result:
    """Permit, then a presigned POST to MinIO, per upload; done when every ImageUpload
    exists (the object store's event made it)."""
    session = threading.local()
    token = run_token(private)
    datas = {index: upload_image(base, index) for index in (*WARM_UP, *range(count))}
    described = {
        index: {
            "md5": hashlib.md5(data).hexdigest(),
            "content_type": "image/jpeg",
            "size": len(data),
        }
        for index, data in datas.items()
    }

    def work(index: int) -> None:
        if not hasattr(session, "s"):
            session.s = requests.Session()
        response = session.s.post(
            f"{url}/v1/uploads",
            json={"data": described[index]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        if response.status_code != 201:
            raise RuntimeError(f"permit {index}: {response.status_code} {response.text[:300]}")
        permit = response.json()["data"]
        stored = session.s.post(
            permit["url"],
            data=permit["fields"],
            files={"file": ("image.jpg", datas[index], "image/jpeg")},
            timeout=300,
        )
        if stored.status_code != 204:
            raise RuntimeError(f"store {index}: {stored.status_code} {stored.text[:300]}")

    warm_up(work)
    backends.wait_uploads(CLIENTS, DIRECT_LABEL)
    idle = memory_mib(pid, "VmRSS")
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    result = run_concurrently(count, work)
    backends.wait_uploads(CLIENTS + count, DIRECT_LABEL)
    result.seconds = time.perf_counter() - started
    result.cpu_ms = (cpu_seconds(pid) - cpu) / count * 1000
    result.peak_rss_mb = memory_mib(pid, "VmHWM")
    result.idle_rss_mb = idle
    return result


class Backends:
    """The object store and the API server as the reference and the floor call them."""

    def __init__(self, storage_env: dict[str, str], kubeconfig: str, namespace: str) -> None:
        from kubernetes import client

        self.storage = StorageSettings.from_env(storage_env).open()
        self.api = client.CustomObjectsApi(api_client(kubeconfig))
        self.namespace = namespace

    def store_and_create(self, data: bytes, md5: str, imageable_id: str) -> None:
        """One storage put and one ImageUpload create, as the service makes them."""
        self.storage.put(
            Area.UPLOAD,
            raw_key(md5),
            data,
            content_type="image/jpeg",
            metadata={
                "user_id": "b",
                "imageable_type": "Pin",
                "imageable_id": imageable_id,
                "base_file_name": md5,
            },
        )
        spec = resource.ImageUploadSpec(
            md5=md5,
            bucket=self.storage.bucket(Area.UPLOAD),
            key=raw_key(md5),
            content_type="image/jpeg",
            byte_size=len(data),
            width=1,
            height=1,
            uploader=resource.Uploader("b", "Pin", imageable_id),
        )
        name = resource.upload_name(md5, "Pin", imageable_id)
        self.api.create_namespaced_custom_object(
            resource.GROUP,
            resource.VERSION,
            self.namespace,
            resource.PLURAL,
            resource.manifest(name, self.namespace, spec),
        )

    def wait_uploads(self, count: int, label_selector: str) -> None:
        def listed() -> bool:
            found = self.api.list_namespaced_custom_object(
                resource.GROUP,
                resource.VERSION,
                self.namespace,
                resource.PLURAL,
                label_selector=label_selector,
            )
            return len(found["items"]) >= count

        wait_for(listed, timeout=600, interval=0.1, what=f"{count} ImageUploads")


def bench_bare(backends: Backends, base: bytes, count: int) -> Result:
    datas = {index: upload_image(base, index) for index in (*WARM_UP, *range(count))}

    def work(index: int) -> None:
        data = datas[index]
        backends.store_and_create(data, hashlib.md5(data).hexdigest(), str(index))

    warm_up(work)
    return run_concurrently(count, work)


def unavoidable(backends: Backends, payload: bytes, form: str, imageable_id: str) -> None:
    """What any upload service must do with a body: the image's bytes (base64 decoded in
    C for JSON), their md5, the header sniff, one put and one create."""
    if form == "raw":
        image = payload
    else:
        start = payload.index(b";base64,") + len(b";base64,")
        image = binascii.a2b_base64(memoryview(payload)[start : payload.index(b'"', start)])
    md5 = hashlib.md5(image).hexdigest()
    sniff(image, ImageLimits())
    backends.store_and_create(image, md5, imageable_id)


def floor_cpu_ms(backends: Backends, base: bytes, count: int, form: str) -> float:
    """CPU of :func:`unavoidable` per upload, one thread, bodies built as the clients'
    (distinct images of the same size, so every put and create is a new one)."""
    payloads = [body(variant(base, index), form) for index in range(count + 1)]
    unavoidable(backends, payloads[0], form, f"floor-{form}-warm")  # connections, caches
    started = time.thread_time()
    for index, payload in enumerate(payloads[1:]):
        unavoidable(backends, payload, form, f"floor-{form}-{index}")
    return (time.thread_time() - started) / count * 1000


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
    rows: list[tuple[str, str, Result]] = []  # (size, what, result)
    floors: dict[tuple[str, str], float] = {}  # (size, form) -> floor CPU ms per upload
    try:
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
            backends = Backends(storage_env, kubeconfig, namespace)
            count = counts[size]
            print(f"{size} x{count}: bare ...", flush=True)
            rows.append((size, "bare put+create", bench_bare(backends, base, count)))
            for form in FORMS:
                print(f"{size} x{count}: floor {form}, service {form}, floor ...", flush=True)
                # Measured just before and just after the service, so that the machine's
                # drift (other tenants, frequency) weighs on both sides alike.
                before = floor_cpu_ms(backends, base, count, form)
                with service(env) as (url, pid):
                    result = bench_service(url, pid, base, count, form, private)
                after = floor_cpu_ms(backends, base, count, form)
                floors[(size, form)] = (before + after) / 2
                rows.append((size, f"service {form}", result))
            if size in DIRECT_SIZES:
                print(f"{size} x{count}: direct to the object store ...", flush=True)
                direct_env = {
                    **env,
                    "PINSTER_DIRECT_UPLOADS": "true",
                    "PINSTER_STORAGE_EVENTS_TOKEN": EVENTS_TOKEN,
                }
                with service(direct_env) as (url, pid):
                    bucket = storage_env["PINSTER_S3_UPLOAD_BUCKET"]
                    cluster.set_storage_events(bucket, f"{url}/v1/storage-events", EVENTS_TOKEN)
                    try:
                        direct = bench_direct(url, pid, base, count, private, backends)
                    finally:
                        cluster.set_storage_events(bucket, None)
                rows.append((size, "direct", direct))
            client.CoreV1Api(kube).delete_namespace(namespace)
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)
    report(rows, floors, {size: len(base) for size, base in sizes.items()})
    return 0


def memory_multiple(result: Result, image_bytes: int) -> float:
    """Peak RSS growth per in-flight upload, in image sizes."""
    assert result.peak_rss_mb is not None and result.idle_rss_mb is not None
    return (result.peak_rss_mb - result.idle_rss_mb) / (image_bytes / 2**20 * CLIENTS)


def report(
    rows: list[tuple[str, str, Result]],
    floors: dict[tuple[str, str], float],
    image_bytes: dict[str, int],
) -> None:
    print(f"\n{CLIENTS} concurrent clients; images {image_bytes} bytes")
    header = (
        f"{'size':<6} {'what':<16} {'n':>4} {'up/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'x bare/s':>8} {'RSS idle':>8} {'RSS peak':>8} {'mem/img':>7} "
        f"{'CPU ms':>7} {'floor ms':>8} {'cpu/floor':>9}"
    )
    print(header)
    print("-" * len(header))
    bare: dict[str, Result] = {}
    ratios: dict[tuple[str, str], float] = {}
    for size, what, result in rows:
        if what.startswith("bare"):
            bare[size] = result
        line = (
            f"{size:<6} {what:<16} {result.count:>4} {result.rate:>7.1f} "
            f"{result.pct(0.5):>8.1f} {result.pct(0.99):>8.1f} "
            f"{result.rate / bare[size].rate:>8.2f}"
        )
        if what == "direct":
            line += f" {'':>8} {'':>8} {'':>7} {result.cpu_ms or 0:>7.1f}"
        elif result.cpu_ms is not None and result.peak_rss_mb is not None:
            form = what.removeprefix("service ")
            floor = floors[(size, form)]
            ratios[(size, form)] = result.cpu_ms / floor
            line += (
                f" {result.idle_rss_mb:>7.0f}M {result.peak_rss_mb:>7.0f}M "
                f"{memory_multiple(result, image_bytes[size]):>6.2f}x "
                f"{result.cpu_ms:>7.1f} {floor:>8.1f} {ratios[(size, form)]:>8.2f}x"
            )
        print(line)
    print(
        "\nx bare/s: service uploads/s over bare put+create/s at the same concurrency."
        "\nRSS of the service process (VmRSS before the run, VmHWM after); mem/img: peak"
        f" growth per in-flight upload, (peak - idle) / ({CLIENTS} x image size)."
        "\nCPU ms: the service process's CPU per upload; floor ms: one thread of this process"
        " doing only the unavoidable work (base64 decode for JSON, md5, header sniff, one"
        " put to the same MinIO, one ImageUpload create) on bodies of the same size."
    )
    print_targets(rows, ratios, image_bytes)
    print_direct(rows)
    print(
        "ingress cpu/floor: "
        + " ".join(f"{form}-{size} {ratio:.2f}x" for (size, form), ratio in ratios.items())
    )


def print_direct(rows: list[tuple[str, str, Result]]) -> None:
    """Issue 15's comparison: direct against through the service, same size and clients."""
    by = {(size, what): result for size, what, result in rows}
    for size in DIRECT_SIZES:
        direct = by.get((size, "direct"))
        if direct is None or direct.cpu_ms is None:
            continue
        print(f"\ndirect/service {size} at {CLIENTS} clients:")
        for form in FORMS:
            through = by[(size, f"service {form}")]
            assert through.cpu_ms is not None
            print(
                f"  vs {form}: {direct.rate:.1f} vs {through.rate:.1f} uploads/s "
                f"({direct.rate / through.rate:.2f}x); service CPU {direct.cpu_ms:.1f} vs "
                f"{through.cpu_ms:.1f} ms per upload ({direct.cpu_ms / through.cpu_ms:.2f}x)"
            )


def print_targets(
    rows: list[tuple[str, str, Result]],
    ratios: dict[tuple[str, str], float],
    image_bytes: dict[str, int],
) -> None:
    print("\ntargets (issue 14):")
    for (size, form), ratio in ratios.items():
        verdict = "met" if ratio <= CPU_TARGET else "MISSED"
        print(f"  cpu/floor {form}-{size}: {ratio:.2f}x (<= {CPU_TARGET}x) {verdict}")
    for size, what, result in rows:
        if what == "service json" and size == "200KB":
            p99 = result.pct(0.99)
            verdict = "met" if p99 < P99_TARGET_MS else "MISSED"
            print(
                f"  p99 json-200KB at {CLIENTS} clients: {p99:.0f} ms (< {P99_TARGET_MS:.0f}) {verdict}"
            )
    for size, what, result in rows:
        if result.peak_rss_mb is None or what == "direct":
            continue
        form = what.removeprefix("service ")
        multiple = memory_multiple(result, image_bytes[size])
        verdict = "met" if multiple <= MEMORY_TARGET[form] else "MISSED"
        print(
            f"  memory per in-flight upload {form}-{size}: {multiple:.2f}x image "
            f"(<= {MEMORY_TARGET[form]}x) {verdict}"
        )


if __name__ == "__main__":
    sys.exit(main())
