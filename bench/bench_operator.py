"""Operator memory and CPU with many ImageUploads present.

Creates N ImageUploads in a fresh namespace, already terminal (``Ready``, as after a
day of traffic), starts ``pinster-images operator`` watching that namespace, and waits
until its metrics show every upload seen. Prints: time to take them all in, operator CPU
seconds (total and per upload), peak RSS (VmHWM) and RSS after settling, and the ratio
to kopf's documented ~300 MB per 1,000 objects.

Run on the devcluster (started here in a temporary directory) or on any cluster:
``.venv/bin/python bench/bench_operator.py [--uploads 10000] [--kubeconfig FILE]`` (with
``--kubeconfig``, the operator's storage settings, PINSTER_S3_* and AWS_*, come from the
environment).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pinster_images import keys, kube
from pinster_images.resource import (
    GROUP,
    PLURAL,
    VERSION,
    ImageUploadSpec,
    Uploader,
    manifest,
    now_rfc3339,
    upload_name,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.crd import install_crd  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.procstat import cpu_seconds, memory_mib  # noqa: E402

KOPF_DOC_MB_PER_1000 = 300.0


def ready_status() -> dict[str, Any]:
    stamp = now_rfc3339()
    return {
        "phase": "Ready",
        "observedGeneration": 1,
        "completedAt": stamp,
        "phaseHistory": [{"phase": p, "enteredAt": stamp} for p in ("Pending", "Ready")],
        "conditions": [
            {
                "type": t,
                "status": "True",
                "reason": "Bench",
                "message": "created by bench_operator",
                "observedGeneration": 1,
                "lastTransitionTime": stamp,
            }
            for t in ("Moderated", "ThumbnailsReady", "Notified", "Ready")
        ],
        "verdict": {"decision": "Approved", "backend": "none", "labels": []},
        "notification": {"sentAt": stamp},
    }


def create_uploads(api: Any, namespace: str, count: int) -> float:
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    status = ready_status()

    def one(i: int) -> None:
        md5 = f"{i:032x}"
        spec = ImageUploadSpec(
            md5=md5,
            bucket="upload",
            key=f"raw/{md5}",
            content_type="image/jpeg",
            byte_size=200_000,
            width=1024,
            height=768,
            uploader=Uploader("u", "Pin", str(i)),
        )
        name = upload_name(md5, "Pin", str(i))
        created = custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest(name, namespace, spec)
        )
        created["status"] = status
        custom.replace_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, created
        )

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - started


def seen(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:  # loopback only
        text = response.read().decode()
    match = re.search(r'^pinster_uploads\{phase="Ready"\} ([0-9.e+]+)$', text, re.M)
    return int(float(match.group(1))) if match else 0


def run(
    kubeconfig: Path,
    count: int,
    work: Path,
    storage_env: dict[str, str],
    reuse: str | None = None,
) -> None:
    api = kube.api_client(str(kubeconfig))
    install_crd(api)
    from kubernetes import client

    namespace = reuse or f"bench-{uuid.uuid4().hex[:6]}"
    if reuse is None:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        print(f"creating {count} ImageUploads in {namespace} ...", flush=True)
        took = create_uploads(api, namespace, count)
        print(f"  created in {took:.1f}s ({count / took:.0f}/s)")

    private = keys.generate_private_key()
    (work / "service.key").write_bytes(private)
    metrics_port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        **storage_env,
        "PINSTER_API_URL": "http://127.0.0.1:9",
        "PINSTER_SERVICE_URL": "http://images.bench",
        "PINSTER_SERVICE_PRIVATE_KEY_FILE": str(work / "service.key"),
        "PINSTER_WATCH_NAMESPACES": namespace,
        "PINSTER_METRICS_PORT": str(metrics_port),
        "PINSTER_HEALTH_PORT": "0",
        "PINSTER_LOG_LEVEL": "warning",
    }
    binary = Path(sys.executable).parent / "pinster-images"
    started = time.monotonic()
    operator = subprocess.Popen([str(binary), "operator"], env=env)
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        last = 0
        while last < count:
            if operator.poll() is not None:
                raise SystemExit(f"operator exited with {operator.returncode}")
            with contextlib.suppress(OSError):
                last = seen(url)
            time.sleep(0.2)
        intake = time.monotonic() - started
        cpu_intake = cpu_seconds(operator.pid)
        time.sleep(10)  # settle: nothing should happen for terminal uploads
        cpu_idle = cpu_seconds(operator.pid) - cpu_intake
        peak = memory_mib(operator.pid, "VmHWM")
        rss = memory_mib(operator.pid, "VmRSS")
    finally:
        operator.terminate()
        operator.wait(30)
        if reuse is None:
            client.CoreV1Api(api).delete_namespace(namespace)
    kopf_equiv = KOPF_DOC_MB_PER_1000 * count / 1000
    print(f"operator with {count} ImageUploads:")
    print(f"  all seen after          {intake:8.1f} s")
    print(
        f"  CPU during intake       {cpu_intake:8.2f} s  ({cpu_intake / count * 1000:.2f} ms/upload)"
    )
    print(f"  CPU in 10 s idle        {cpu_idle:8.2f} s")
    print(f"  peak RSS (VmHWM)        {peak:8.1f} MB  (target < 150 MB)")
    print(f"  RSS after settling      {rss:8.1f} MB")
    print(f"  vs kopf doc (~{kopf_equiv:.0f} MB) {peak / kopf_equiv:8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=10_000)
    parser.add_argument("--kubeconfig", type=Path, help="use this cluster (default: a devcluster)")
    parser.add_argument(
        "--reuse", metavar="NAMESPACE", help="measure again on uploads left in NAMESPACE"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        work = Path(tmp)
        if args.kubeconfig:
            # The operator's storage (PINSTER_S3_*, AWS_*) from this environment.
            run(args.kubeconfig, args.uploads, work, {}, args.reuse)
            return
        from pinster_devcluster import DevCluster

        cluster = DevCluster(work / "devcluster")
        cluster.up()
        try:
            run(cluster.kubeconfig, args.uploads, work, cluster.s3.env())
        finally:
            cluster.down()


if __name__ == "__main__":
    main()
