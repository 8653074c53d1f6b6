"""The orphan sweep with 10,000 objects: the md5 index against one LIST per object.

On the devcluster (its API server and object store): N terminal
ImageUploads (as ``bench_operator.py`` makes them) with their ``raw/`` objects, and a few
orphans (raw objects no ImageUpload refers to, without upload metadata). The operator's
own sweep (``Controller.sweep_orphans``) runs in this process against them, over its Kube
and Storage, after the controller's index was filled as kopf's first listing fills it
(every ImageUpload handed to ``Controller.observe``). It must delete exactly the orphans.

The reference is how the sweep answered before the index: one LIST of ImageUploads by
md5 label per raw object (``Kube.uploads_with_md5``), timed on a sample of the same
objects. Both are timed in this process (wall time, this thread's CPU) with the API
server's and the object store's CPU beside them; the ratio is per object.

Last line: ``sweep: N objects in X.X s (Y.Y ms CPU here per 1,000), LIST per object Z.Zx
the time``.

Run: ``.venv/bin/python bench/bench_sweep.py [--uploads 10000] [--orphans 20]
[--sample 200]`` (needs root; starts and stops its own devcluster).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_operator import create_uploads  # noqa: E402
from bench_operator_flow import api_server_traffic, cpu_breakdown  # noqa: E402
from pinster_operator import Controller, OperatorSettings  # noqa: E402
from pinster_operator._kube import Kube  # noqa: E402

from pinster_images import keys, kube  # noqa: E402
from pinster_images.resource import GROUP, PLURAL, VERSION  # noqa: E402
from pinster_images.storage import Area, Storage, raw_key  # noqa: E402
from tests.support.crd import install_crd  # noqa: E402
from tests.support.s3 import S3Server  # noqa: E402

#: The parts of the machine whose CPU each way of asking costs besides this process.
SERVERS = ("kube-apiserver", "etcd", "objectstore")


def store_raw(storage: Storage, md5s: list[str]) -> None:
    def one(md5: str) -> None:
        storage.put(Area.UPLOAD, raw_key(md5), b"x", content_type="image/jpeg")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, md5s))


def listed_uploads(api: Any, namespace: str) -> list[dict[str, Any]]:
    """Every ImageUpload of ``namespace``, in pages as kopf lists them at start."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page = custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, limit=500, _continue=token
        )
        items += page["items"]
        token = page["metadata"].get("continue")
        if not token:
            return items


class Clock:
    """Wall time, this thread's CPU, the servers' CPU and the API server's requests over a
    block."""

    def __init__(self, cluster: Any, api: Any) -> None:
        self.cluster = cluster
        self.api = api

    def requests(self, verb: str) -> int:
        return round(self.traffic.get(f"{verb} imageuploads", 0.0))

    def __enter__(self) -> Clock:
        self._traffic = api_server_traffic(self.api)
        self._servers = cpu_breakdown(self.cluster)
        self._cpu = time.thread_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.thread_time() - self._cpu
        after = cpu_breakdown(self.cluster)
        self.servers = {
            name: after.get(name, 0.0) - self._servers.get(name, 0.0) for name in SERVERS
        }
        traffic = api_server_traffic(self.api)
        self.traffic = {key: traffic[key] - self._traffic.get(key, 0.0) for key in traffic}


def run(cluster: Any, uploads: int, orphans: int, sample: int, work: Path) -> None:
    from kubernetes import client

    api = kube.api_client(str(cluster.kubeconfig))
    install_crd(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    s3 = S3Server(cluster.s3)
    os.environ.update(s3.credentials)  # boto3 in this process reads them from there
    (work / "service.key").write_bytes(keys.generate_private_key())
    settings = OperatorSettings.from_env(
        {
            **s3.fresh_env(),
            "PINSTER_API_URL": "http://127.0.0.1:9",
            "PINSTER_SERVICE_URL": "http://images.bench",
            "PINSTER_SERVICE_PRIVATE_KEY_FILE": str(work / "service.key"),
            "PINSTER_WATCH_NAMESPACES": namespace,
            "PINSTER_ADOPT_AFTER": "0",  # orphans without metadata: deleted after the grace
            "PINSTER_ORPHAN_GRACE": "1",
        }
    )
    storage = settings.storage.open()
    try:
        print(f"creating {uploads} ImageUploads and {uploads + orphans} raw objects ...")
        orphan_md5s = [uuid.uuid4().hex for _ in range(orphans)]
        store_raw(storage, orphan_md5s)  # first: older than the grace by the sweep
        took = create_uploads(api, namespace, uploads)
        started = time.monotonic()
        store_raw(storage, [f"{i:032x}" for i in range(uploads)])  # their md5s (bench_operator)
        print(f"  ImageUploads in {took:.1f} s, objects in {time.monotonic() - started:.1f} s")

        controller = Controller(settings, Kube(api, settings.namespaces), storage)
        listed = listed_uploads(api, namespace)
        for obj in listed:
            controller.observe(None, obj)  # as kopf hands its first listing over

        with Clock(cluster, api) as index:
            summary = controller.sweep_orphans()
        expected = sorted(raw_key(md5) for md5 in orphan_md5s)
        if sorted(summary.deleted) != expected or summary.failed or summary.listed < uploads:
            raise SystemExit(
                f"the sweep got it wrong: listed {summary.listed}, deleted "
                f"{len(summary.deleted)} of {orphans} orphans, failed {summary.failed[:3]}"
            )

        per_object = Kube(api, settings.namespaces)
        asked = [f"{i:032x}" for i in range(0, uploads, max(1, uploads // sample))][:sample]
        with Clock(cluster, api) as reference:
            found = sum(1 for md5 in asked if per_object.uploads_with_md5(md5))
        if found != len(asked):
            raise SystemExit(f"the reference found {found} of {len(asked)} uploads")
    finally:
        client.CoreV1Api(api).delete_namespace(namespace)

    objects = summary.listed
    index_ms = index.wall / objects * 1000
    reference_ms = reference.wall / len(asked) * 1000
    print(f"{objects} raw objects, {uploads} ImageUploads, {orphans} orphans:")
    print(
        f"  index: {index.wall:.2f} s ({index_ms:.3f} ms per object), "
        f"{index.cpu / objects * 1e6:.1f} ms CPU here per 1,000 objects, "
        f"{index.requests('LIST')} LISTs and {index.requests('GET')} GETs of ImageUploads, "
        f"{len(summary.deleted)} orphans deleted"
    )
    print(
        f"  LIST per object (sample of {len(asked)}): {reference.wall:.2f} s "
        f"({reference_ms:.2f} ms per object, {reference.requests('LIST')} LISTs), "
        f"{reference.cpu / len(asked) * 1e3:.2f} ms CPU here per object; "
        f"{objects} objects would take {reference_ms * objects / 1000:.0f} s"
    )
    for name in SERVERS:
        print(
            f"  {name:<15} index {index.servers[name] / objects * 1e6:8.1f} ms per 1,000 "
            f"objects; LIST per object {reference.servers[name] / len(asked) * 1e6:8.1f} ms "
            f"per 1,000 objects"
        )
    print(
        f"sweep: {objects} objects in {index.wall:.1f} s "
        f"({index.cpu / objects * 1e6:.1f} ms CPU here per 1,000), "
        f"LIST per object {reference_ms / index_ms:.1f}x the time"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=10_000)
    parser.add_argument("--orphans", type=int, default=20)
    parser.add_argument("--sample", type=int, default=200, help="objects the reference asks for")
    args = parser.parse_args()
    logging.getLogger("pinster_operator").setLevel(logging.ERROR)  # one line per orphan
    from pinster_devcluster import DevCluster

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        cluster = DevCluster(work / "devcluster")
        cluster.up()
        try:
            run(cluster, args.uploads, args.orphans, args.sample, work)
        finally:
            cluster.down()


if __name__ == "__main__":
    main()
