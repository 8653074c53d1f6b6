"""The Job stages' CPU per upload, beside the work no Job can skip.

N distinct ~200 KB JPEGs (the operator flow bench's: same pixels, a JPEG comment each)
are put in the devcluster's object store (MinIO, a production S3 server, over HTTP on
the node address); then the two stages run over them as one batch each, as a Job's pod
runs them: ``pinster-images job moderate`` (``none`` backend) and ``job thumbnail`` (the
default four sizes), subprocesses of this script. Per upload it prints the Jobs' CPU
(process start-up included) and the object store's (its process, from /proc).

Floor: the same kind of batch staged again, and in this process, single-threaded, only
what any implementation of the two stages must do: moderation reads the image and
stores a result; thumbnails read it, render them with the same engine, put each one and
the original (location removed), delete the raw object and store a result. Measured
just before and just after the Jobs (the mean is the floor) as thread CPU time, with
the object store's CPU beside it. Last line:
``jobs cpu/floor: 1.23x, objectstore cpu/floor: 1.10x``.

Run: ``.venv/bin/python bench/bench_jobs.py [--uploads 50] [--rounds 3]`` (it starts the
devcluster with its own state directory and stops it at the end, so no other devcluster
may run).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: This tree's code, for this process and the Jobs' (not whatever tree the venv names).
CODE = [str(ROOT / "src"), str(ROOT / "jobs")]
sys.path[:0] = [str(ROOT), *CODE]

from pinster_jobs import ThumbnailEngine, ThumbnailSettings, strip_location  # noqa: E402

from pinster_images import results  # noqa: E402
from pinster_images.resource import (  # noqa: E402
    JOB_UPLOADS_ENV,
    ImageUploadSpec,
    JobUpload,
    Stage,
    Uploader,
    encode_job_uploads,
)
from pinster_images.sniff import ImageLimits  # noqa: E402
from pinster_images.storage import (  # noqa: E402
    Area,
    Storage,
    StorageSettings,
    raw_key,
    thumbnail_key,
)
from tests.support.images import noisy_jpeg, with_comment  # noqa: E402
from tests.support.procstat import cpu_seconds  # noqa: E402

NAMESPACE = "bench"
JOB_NAME = "pinster-bench-job"


@dataclass
class Cost:
    """CPU seconds of one batch: the stages' side, and the object store's."""

    work: float
    objectstore: float


class Batches:
    """Fresh buckets and N distinct images staged in them, for each batch measured."""

    def __init__(self, endpoint: Any, count: int) -> None:
        self.endpoint = endpoint
        self.count = count
        self.image = noisy_jpeg(200_000)
        self.serial = 0

    def stage(self) -> tuple[dict[str, str], dict[str, JobUpload]]:
        suffix = uuid.uuid4().hex[:8]
        upload_bucket, public_bucket = f"jobs-up-{suffix}", f"jobs-pub-{suffix}"
        s3 = self.endpoint.client()
        for bucket in (upload_bucket, public_bucket):
            s3.create_bucket(Bucket=bucket)
        env = self.endpoint.env(upload_bucket, public_bucket)
        storage = StorageSettings.from_env(env).open()
        uploads: dict[str, JobUpload] = {}
        for _ in range(self.count):
            self.serial += 1
            data = with_comment(self.image, f"bench {self.serial}")
            md5 = hashlib.md5(data).hexdigest()
            storage.put(Area.UPLOAD, raw_key(md5), data, content_type="image/jpeg")
            spec = ImageUploadSpec(
                md5=md5,
                bucket=upload_bucket,
                key=raw_key(md5),
                content_type="image/jpeg",
                byte_size=len(data),
                width=1,
                height=1,
                uploader=Uploader("u", "Pin", str(self.serial)),
            )
            uploads[f"upload-{self.serial}"] = JobUpload.of(str(uuid.uuid4()), spec)
        return env, uploads


def run_jobs(env: dict[str, str], uploads: dict[str, JobUpload], store_pid: int) -> Cost:
    """Both stages as a Job's pod runs them: ``pinster-images job ...`` processes."""
    job_env = {
        **os.environ,
        **env,
        "PINSTER_MODERATION_BACKEND": "none",
        "PINSTER_JOB_NAME": JOB_NAME,
        "PINSTER_LOG_LEVEL": "error",
        "TERMINATION_MESSAGE_PATH": os.devnull,
        "PYTHONPATH": os.pathsep.join(CODE),
        JOB_UPLOADS_ENV: encode_job_uploads(uploads),
    }
    store_before = cpu_seconds(store_pid)
    before = os.times()
    for verb in ("moderate", "thumbnail"):
        command = [sys.executable, "-m", "pinster_images", "job", verb, "-n", NAMESPACE]
        subprocess.run([*command, *uploads], env=job_env, check=True)
    after = os.times()
    return Cost(
        work=(after.children_user - before.children_user)
        + (after.children_system - before.children_system),
        objectstore=cpu_seconds(store_pid) - store_before,
    )


def run_floor(env: dict[str, str], uploads: dict[str, JobUpload], store_pid: int) -> Cost:
    """The stages' unavoidable work, in this thread (imports and clients made before)."""
    storage: Storage = StorageSettings.from_env(env).open()
    engine = ThumbnailEngine(ThumbnailSettings(), ImageLimits())
    store_before = cpu_seconds(store_pid)
    started = time.thread_time()
    for name, upload in uploads.items():
        storage.get(Area.UPLOAD, upload.key)  # what a moderation backend reads
        _record(storage, name, upload, Stage.MODERATION)
    for name, upload in uploads.items():
        stored = storage.get(Area.UPLOAD, upload.key)
        for rendition in engine.render(stored.data, upload.thumbnail_sizes):
            key = thumbnail_key(upload.md5, rendition.size) + rendition.suffix
            storage.put(Area.PUBLIC, key, rendition.data, content_type=rendition.content_type)
        kind = stored.info.content_type
        original = strip_location(stored.data, kind)
        metadata = dict(stored.info.metadata)
        storage.put(Area.PUBLIC, upload.md5, original, content_type=kind, metadata=metadata)
        storage.delete(Area.UPLOAD, upload.key)
        _record(storage, name, upload, Stage.THUMBNAIL)
    return Cost(
        work=time.thread_time() - started,
        objectstore=cpu_seconds(store_pid) - store_before,
    )


def _record(storage: Storage, name: str, upload: JobUpload, stage: Stage) -> None:
    results.write(
        storage,
        results.StageResult(
            namespace=NAMESPACE,
            upload=name,
            stage=stage,
            job=JOB_NAME,
            uid=upload.uid,
            outcome="succeeded",
            data={},
        ),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=50, help="uploads per batch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    count: int = args.uploads
    per = 1000 / count  # seconds per batch -> ms per upload
    from pinster_devcluster import DevCluster
    from pinster_devcluster._procs import read_record
    from pinster_devcluster.paths import pid_file

    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    cluster = DevCluster(work / "cluster")
    print("starting the devcluster (MinIO object store) ...", flush=True)
    cluster.up()
    try:
        record = read_record(pid_file(cluster.state_dir, "objectstore"))
        assert record is not None, "the devcluster's object store is not running"
        endpoint = cluster.s3
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": endpoint.access_key,
                "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
                "AWS_DEFAULT_REGION": endpoint.region,
            }
        )
        batches = Batches(endpoint, count)
        run_floor(*batches.stage(), record.pid)  # warm: imports, clients, the engine
        jobs: list[Cost] = []
        floors: list[Cost] = []
        for round_ in range(1, args.rounds + 1):
            before = run_floor(*batches.stage(), record.pid)
            cost = run_jobs(*batches.stage(), record.pid)
            after = run_floor(*batches.stage(), record.pid)
            floor = Cost(
                (before.work + after.work) / 2, (before.objectstore + after.objectstore) / 2
            )
            jobs.append(cost)
            floors.append(floor)
            print(
                f"round {round_}: jobs {cost.work * per:.1f} ms, objectstore "
                f"{cost.objectstore * per:.1f} ms per upload; floor {floor.work * per:.1f} ms, "
                f"objectstore {floor.objectstore * per:.1f} ms",
                flush=True,
            )
    finally:
        cluster.down()

    def median(costs: list[Cost], part: str) -> float:
        return float(statistics.median(getattr(c, part) for c in costs)) * per

    print(
        f"\n{count} uploads per batch, median of {args.rounds} rounds, per upload:\n"
        f"  Jobs (moderate + thumbnail processes)  {median(jobs, 'work'):6.1f} ms CPU\n"
        f"  floor (this thread)                    {median(floors, 'work'):6.1f} ms CPU\n"
        f"  object store, for the Jobs             {median(jobs, 'objectstore'):6.1f} ms CPU\n"
        f"  object store, for the floor            {median(floors, 'objectstore'):6.1f} ms CPU"
    )
    work_ratio = statistics.median(j.work / f.work for j, f in zip(jobs, floors, strict=True))
    store_ratio = statistics.median(
        j.objectstore / f.objectstore for j, f in zip(jobs, floors, strict=True)
    )
    print(f"jobs cpu/floor: {work_ratio:.2f}x, objectstore cpu/floor: {store_ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
