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
import os
import re
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
from tests.support.images import noisy_jpeg, with_comment  # noqa: E402
from tests.support.pinster_api import PinsterApi  # noqa: E402
from tests.support.pods import (  # noqa: E402
    container_cpu_seconds,
    container_thread_cpu_seconds,
    metric_samples,
)
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
        data = with_comment(self.image, f"bench {index}")  # distinct bytes, same pixels
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

    def wait_ready(self, names: set[str], timeout: float) -> float:
        """Seconds until every one of ``names`` is terminal, followed with a watch (a
        list every 100 ms of 1,000 uploads would cost the API server more than the
        operator does)."""
        from kubernetes import watch

        started = time.monotonic()
        phases: dict[str, str] = {}
        version = ""
        while time.monotonic() - started < timeout:
            if not version:
                listed = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL
                )
                version = listed["metadata"]["resourceVersion"]
                for item in listed["items"]:
                    phases[item["metadata"]["name"]] = (item.get("status") or {}).get("phase", "")
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
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                resource_version=version,
                timeout_seconds=5,
            )
            try:
                for event in stream:
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    phases[obj["metadata"]["name"]] = (obj.get("status") or {}).get("phase", "")
                    if all(phases.get(n) in ("Ready", "Rejected", "Failed") for n in names):
                        break
            except Exception:  # the watch expired (410): list again
                version = ""
        raise SystemExit(f"timed out after {timeout}s")


def trace_one(api: Any, bench: Bench, namespace: str) -> list[tuple[float, str]]:
    """One upload, timed from here: (seconds since its create, what happened): its
    phases, and its Jobs' pods scheduled, started, finished, and the Jobs finished, as
    watch events arrive."""
    import threading

    from kubernetes import client, watch

    marks: list[tuple[float, str]] = []
    seen: set[str] = set()
    stop = threading.Event()
    started = time.monotonic()

    def mark(what: str) -> None:
        if what not in seen:
            seen.add(what)
            marks.append((time.monotonic() - started, what))

    def follow(list_call: Any, describe: Any) -> None:
        while not stop.is_set():
            for event in watch.Watch().stream(list_call, namespace, timeout_seconds=2):
                for what in describe(event["object"]):
                    mark(what)
                if stop.is_set():
                    return

    def pod_marks(pod: Any) -> list[str]:
        job = (pod.metadata.labels or {}).get("job-name", pod.metadata.name)
        found = [f"{job}: pod scheduled"] if pod.spec.node_name else []
        for status in pod.status.container_statuses or []:
            if status.state.running or status.state.terminated:
                found.append(f"{job}: container started")
            if status.state.terminated:
                found.append(f"{job}: container finished")
        return found

    def job_marks(job: Any) -> list[str]:
        done = any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
        return [f"{job.metadata.name}: created"] + (
            [f"{job.metadata.name}: Complete"] if done else []
        )

    def upload_marks(obj: dict[str, Any]) -> list[str]:
        phase = (obj.get("status") or {}).get("phase", "created")
        return [f"upload {obj['metadata']['name']}: {phase}"]

    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    custom = client.CustomObjectsApi(api)

    def uploads(ns: str, **kw: Any) -> Any:
        return custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, **kw)

    threads = [
        threading.Thread(target=follow, args=(core.list_namespaced_pod, pod_marks), daemon=True),
        threading.Thread(target=follow, args=(batch.list_namespaced_job, job_marks), daemon=True),
        threading.Thread(target=follow, args=(uploads, upload_marks), daemon=True),
    ]
    for thread in threads:
        thread.start()
    time.sleep(1)  # let the three watches open before the clock starts
    # What they listed existed before (the latency runs): seen, so never marked again,
    # and not part of this upload's timeline.
    marks.clear()
    started = time.monotonic()
    name = bench.create(2_000_000)
    bench.wait_ready({name}, timeout=60)
    time.sleep(0.5)  # the last events are in flight
    stop.set()
    return sorted(marks)


def cpu_breakdown(cluster: Any) -> dict[str, float]:
    """CPU seconds so far: the machine (busy), all Pods (their cgroups), each devcluster
    component (its processes), the containerd shims, and this process."""
    from pinster_devcluster._host import cgroup_dirs, processes_with
    from pinster_devcluster._procs import family, read_record
    from pinster_devcluster.paths import pid_file

    from tests.support.procstat import cpu_seconds

    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    busy = (sum(fields) - fields[3] - fields[4]) / ticks  # all but idle and iowait
    found = {"machine (busy)": busy}
    for tree in cgroup_dirs("kubepods"):
        if (tree / "cpuacct.usage").exists():
            found["all Pods"] = int((tree / "cpuacct.usage").read_text()) / 1e9
    for name in cluster.components():
        record = read_record(pid_file(cluster.state_dir, name))
        if record is not None:
            found[name] = sum(_safe(cpu_seconds, m.pid) for m in family(record))
    shims = processes_with("containerd-shim-runc-v2")
    found["containerd shims"] = sum(_safe(cpu_seconds, pid) for pid in shims)
    found["this bench (client)"] = sum(os.times()[:2])
    return found


def reconciles(api: Any, namespace: str, pod: str) -> dict[str, float]:
    """The operator's ``pinster_reconciles_total`` by result, from its metrics port."""
    samples = metric_samples(api, namespace, pod, "pinster_reconciles_total")
    return {sample.labels["result"]: float(sample.value) for sample in samples}


def api_server_traffic(api: Any) -> dict[str, float]:
    """The API server's counters so far, by resource: watch events sent (to every
    watcher: the operator, the controllers, the kubelet, this bench), their bytes, and
    the requests it served by verb (from its own /metrics)."""
    answer = api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False)
    text = answer.data.decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        metric = re.match(
            r"^(apiserver_watch_events_total|apiserver_watch_events_sizes_sum|"
            r"apiserver_request_total)\{(.*)\} ([0-9.e+]+)$",
            line,
        )
        if metric is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', metric[2]))
        what = labels.get("resource") or labels.get("kind", "?")
        if metric[1] == "apiserver_request_total":
            key = f"{labels.get('verb')} {what}{'/' + labels['subresource'] if labels.get('subresource') else ''}"
        else:
            key = f"{'watch events' if metric[1].endswith('total') else 'watch KB'} {what}"
        value = float(metric[3]) / (1000 if key.startswith("watch KB") else 1)
        found[key] = found.get(key, 0.0) + value
    return found


def _safe(read: Any, pid: int) -> float:
    try:
        return float(read(pid))
    except (OSError, IndexError, ValueError):
        return 0.0


def batch_sizes(jobs: list[Any]) -> dict[str, list[int]]:
    """stage -> how many uploads each of its Jobs carried."""
    import json

    sizes: dict[str, list[int]] = {}
    for job in jobs:
        stage = job.metadata.labels["images.pinster.io/stage"]
        carried = json.loads(job.metadata.annotations["images.pinster.io/uploads"])
        sizes.setdefault(stage, []).append(len(carried))
    return sizes


def run(
    cluster: Any, uploads: int, latency_runs: int, work: Path, max_running: int | None = None
) -> None:
    from kubernetes import client

    api = kube.api_client(str(cluster.kubeconfig))
    install_crd(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    image = cluster.build_image(ROOT)
    s3 = S3Server(cluster.s3)
    storage_env = s3.fresh_env()
    os.environ.update(s3.credentials)  # boto3 in this process reads them from there
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
                "operator": {
                    "batch": {"maxSize": 50}
                    if max_running is None
                    else {"maxSize": 50, "maxRunning": max_running}
                },
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
        timeline = trace_one(api, bench, namespace)
        cpu_before = container_cpu_seconds(api, namespace, operator_pod)
        threads_before = container_thread_cpu_seconds(api, namespace, operator_pod)
        reconciles_before = reconciles(api, namespace, operator_pod)
        machine_before = cpu_breakdown(cluster)
        traffic_before = api_server_traffic(api)
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            names = set(pool.map(bench.create, range(uploads)))
        created = time.monotonic() - started
        bench.wait_ready(names, timeout=1800)
        total = time.monotonic() - started
        machine = {k: v - machine_before.get(k, 0.0) for k, v in cpu_breakdown(cluster).items()}
        traffic = {k: v - traffic_before.get(k, 0.0) for k, v in api_server_traffic(api).items()}
        user, system = (
            after - before
            for after, before in zip(
                container_cpu_seconds(api, namespace, operator_pod), cpu_before, strict=True
            )
        )
        cpu = user + system
        threads = {
            ids: seconds - threads_before.get(ids, 0.0)
            for ids, seconds in container_thread_cpu_seconds(api, namespace, operator_pod).items()
        }
        reconciled = {
            result: count - reconciles_before.get(result, 0.0)
            for result, count in reconciles(api, namespace, operator_pod).items()
        }
        jobs = client.BatchV1Api(api).list_namespaced_job(namespace).items
        accepted = len(pinster_api.accepted("/v1/images/"))
        sizes = batch_sizes(jobs)
    finally:
        installed.uninstall()
        pinster_api.stop()
        client.CoreV1Api(api).delete_namespace(namespace)
    print(
        f"single upload create -> Ready: median {statistics.median(latencies):.2f} s "
        f"(runs: {', '.join(f'{x:.2f}' for x in latencies)}; target < 3 s)"
    )
    print("one upload, as watched from here:")
    for at, what in timeline:
        print(f"  {at:6.2f} s  {what}")
    print(
        f"{uploads} uploads created in {created:.1f} s, all Ready after {total:.1f} s "
        f"(target < 180 s for 1,000): {uploads / total:.1f} uploads/s"
    )
    print(
        f"Jobs: {len(jobs)} ({uploads / max(1, len(jobs) - latency_runs * 2):.1f} uploads per Job)"
    )
    for stage, counts in sorted(sizes.items()):
        print(
            f"  {stage}: {len(counts)} Jobs, uploads per Job min {min(counts)}, "
            f"median {statistics.median(counts):.0f}, max {max(counts)}"
        )
    print(
        f"operator CPU: {cpu:.2f} s (user {user:.2f}, system {system:.2f}), "
        f"{cpu / uploads * 1000:.2f} ms per upload (target < 10 ms)"
    )
    # The main thread runs the event loop: kopf's watches and per-event pipeline, our
    # handlers, the scheduler and the batcher; the others mostly reconcile (API
    # requests, result reads, notifications) in the executor.
    main = sum(seconds for (pid, tid), seconds in threads.items() if pid == tid)
    others = sum(seconds for (pid, tid), seconds in threads.items() if pid != tid)
    print(
        f"operator CPU by thread: the event loop {main / uploads * 1000:.2f} ms per upload, "
        f"the {sum(1 for pid, tid in threads if pid != tid)} other threads "
        f"{others / uploads * 1000:.2f} ms"
    )
    print(
        f"operator reconciles: {sum(reconciled.values()) / uploads:.1f} per upload ("
        + ", ".join(f"{result} {count / uploads:.1f}" for result, count in reconciled.items())
        + ")"
    )
    print(f"PinsterApi POSTs accepted: {accepted} (expected {uploads + latency_runs})")
    print(f"where the CPU went while they ran ({total:.0f} s x {os.cpu_count()} cores):")
    for what, seconds in machine.items():
        print(f"  {what:<26} {seconds:7.1f} s  {seconds / total * 100:5.0f}% of one core")
    print("the API server's work per upload (watch events to all watchers, requests):")
    for what, count in sorted(traffic.items(), key=lambda kv: -kv[1]):
        if count / uploads >= 0.05:
            print(f"  {what:<40} {count / uploads:7.2f}")
    print(
        f"operator: {cpu / uploads * 1000:.1f} ms CPU per upload, {uploads} Ready in {total:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--latency-runs", type=int, default=5)
    parser.add_argument(
        "--max-running",
        type=int,
        help="operator.batch.maxRunning (default: the chart's), for an A/B of the cap",
    )
    args = parser.parse_args()
    from pinster_devcluster import DevCluster

    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        work = Path(tmp)
        cluster = DevCluster(work / "devcluster")
        cluster.up()
        try:
            run(cluster, args.uploads, args.latency_runs, work, args.max_running)
        finally:
            cluster.down()


if __name__ == "__main__":
    main()
