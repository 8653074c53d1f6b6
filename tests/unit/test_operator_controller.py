"""The controller against in-process fakes: a fake API server (with resourceVersion
conflicts), an in-process directory storage, the PinsterApi stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
from pinster_operator import Controller
from pinster_operator._cleanup import Cleanup
from pinster_operator._jobs import uploads_of

from pinster_images import keys, results
from pinster_images.resource import ANNOTATION_RETRY, LABEL_STAGE, Stage
from pinster_images.results import StageResult
from pinster_images.storage import Area
from tests.support.operator_units import (
    APPROVED,
    NS,
    PUBLISHED,
    REJECTED,
    SERVICE_URL,
    FakeKube,
    private_key,
    settings,
)
from tests.support.pinster_api import PinsterApi
from tests.support.storage import DirectoryStorage
from tests.support.waiting import until


@pytest.fixture
def api() -> Any:
    stand_in = PinsterApi(
        public_key=keys.public_key_of(private_key()), service_url=SERVICE_URL
    ).start()
    yield stand_in
    stand_in.stop()


def run(
    kube: FakeKube, storage: DirectoryStorage, api: PinsterApi, script: Any, **env: str
) -> None:
    s = settings(
        PINSTER_API_URL=api.url,
        PINSTER_BATCH_WINDOW="0.01",
        PINSTER_POLL_INTERVAL="0.1",
        PINSTER_NOTIFY_BACKOFF_INITIAL="0.02",
        PINSTER_WORKERS="3",
        **env,
    )

    async def main() -> None:
        controller = Controller(s, kube, storage)  # type: ignore[arg-type]
        controller.start()
        try:
            await script(controller)
        finally:
            await controller.stop()

    asyncio.run(main())


def phase(kube: FakeKube, name: str) -> str | None:
    return (kube.uploads[name].get("status") or {}).get("phase")


def work(
    kube: FakeKube, storage: DirectoryStorage, stage: Stage, data: dict[str, Any], uid: str = ""
) -> list[str]:
    """Play the Jobs of ``stage`` as their pods do: write a result per upload (naming
    ``uid`` if given), then the Job's bundle of them if there are several; mark them
    Complete."""
    done = []
    for name, job in kube.jobs.items():
        if job["metadata"]["labels"]["images.pinster.io/stage"] != stage or job.get("status"):
            continue
        written = [
            StageResult(NS, upload, stage, name, "succeeded", data=data, uid=uid)
            for upload in uploads_of(job)
        ]
        for record in written:
            results.write(storage, record)
        if len(written) >= results.BUNDLE_MIN:
            results.write_bundle(storage, NS, name, written)
        kube.finish(name)
        done.append(name)
    return done


def test_batch_of_uploads_to_ready_with_one_post_each(tmp_path: Path, api: PinsterApi) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path, "http://cdn.test")
    read: list[str] = []
    get = storage.get
    storage.get = lambda area, key: read.append(key) or get(area, key)  # type: ignore[method-assign]
    names = [f"img-{i}" for i in range(5)]
    for i, name in enumerate(names):
        kube.add_upload(name, f"{i:032x}")

    async def script(c: Controller) -> None:
        for name in names:
            c.observe("ADDED", copy.deepcopy(kube.uploads[name]))
        await until(lambda: all(phase(kube, n) == "Moderating" for n in names))
        for job in work(kube, storage, Stage.MODERATION, APPROVED):
            c.wake(NS, uploads_of(kube.jobs[job]))
        await until(
            lambda: all(
                phase(kube, n) == "Thumbnailing"
                and (kube.uploads[n]["status"].get("jobs") or {}).get("thumbnail")
                for n in names
            )
        )
        kube.conflict_next_write = True  # a concurrent writer: the decision is retaken
        work(kube, storage, Stage.THUMBNAIL, PUBLISHED)  # no wake: the poll finds it
        await until(lambda: all(phase(kube, n) == "Ready" for n in names))
        counted = c.metrics.registry.get_sample_value
        assert counted("pinster_reconciles_total", {"result": "error"}) == 1  # the 409
        assert (counted("pinster_reconciles_total", {"result": "requeued"}) or 0) >= len(names)

    run(kube, storage, api, script, PINSTER_BATCH_MAX="3")
    # Each Job's results were read once, not again after the 409 or at the polls: from
    # its bundle (then deleted) when it served several uploads, else from the record.
    expected = []
    for name, job in kube.jobs.items():
        served, stage = uploads_of(job), Stage(job["metadata"]["labels"][LABEL_STAGE])
        if len(served) >= results.BUNDLE_MIN:
            expected.append(results.bundle_key(NS, name))
        else:
            expected += [results.result_key(NS, upload, stage) for upload in served]
    assert sorted(key for key in read if key.startswith("results/")) == sorted(expected)
    assert any("/_jobs/" in key for key in expected)
    assert not list(storage.list(Area.UPLOAD, f"results/{NS}/_jobs/"))  # all deleted
    # At most 3 per Job, every upload in exactly one Job per stage, and some sharing.
    sizes = [len(uploads_of(j)) for j in kube.jobs.values()]
    assert max(sizes) <= 3 and len(sizes) < 2 * len(names)
    for stage in Stage:
        served = [
            u
            for j in kube.jobs.values()
            if j["metadata"]["labels"]["images.pinster.io/stage"] == stage
            for u in uploads_of(j)
        ]
        assert sorted(served) == names
    accepted = api.accepted("/v1/images/")
    assert sorted(r.headers["idempotency-key"] for r in accepted) == names
    assert len(api.all()) == 5
    status = kube.uploads["img-0"]["status"]
    assert [h["phase"] for h in status["phaseHistory"]] == [
        "Pending",
        "Moderating",
        "Thumbnailing",
        "Notifying",
        "Ready",
    ]
    assert accepted[0].body["data"]["storage_location_uri"].startswith("http://cdn.test/")
    reasons = [e[2] for e in kube.events if e[0] == "img-0"]
    assert reasons == ["Moderating", "Thumbnailing", "Notifying", "Ready"]
    # Pending, Moderating with its Job, Thumbnailing with its Job (the verdict waits for
    # it), then Ready: Notifying is passed through in the write that records the
    # thumbnails, as the POST went out at once.
    assert set(kube.writes.values()) == {4}
    # Each reconcile starts from the watch event or the answer to our own write; only
    # the decision retaken after the 409 reads the upload again.
    assert kube.gets == 1


def test_failed_jobs_are_retried_then_failed_with_the_pod_message(
    tmp_path: Path, api: PinsterApi
) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    kube.add_upload("img-x", "f" * 32)

    async def script(c: Controller) -> None:
        c.observe("ADDED", kube.get_upload(NS, "img-x") or {})

        def running() -> list[str]:
            return [n for n, j in kube.jobs.items() if not j.get("status")]

        for _ in range(2):
            await until(lambda: bool(running()) and phase(kube, "img-x") == "Moderating")
            kube.finish(running()[0], failed=True)
        await until(lambda: phase(kube, "img-x") == "Failed")

    run(kube, storage, api, script, PINSTER_JOB_ATTEMPTS="2")
    ready = next(c for c in kube.uploads["img-x"]["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "BackoffLimitExceeded"
    assert "ThrottlingException" in ready["message"]
    assert len(kube.jobs) == 2


def test_rejected_sends_flagged_notice_and_deletes_raw_after_retention(
    tmp_path: Path, api: PinsterApi
) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    md5 = "a" * 32
    kube.add_upload("img-r", md5)
    storage.put(Area.UPLOAD, f"raw/{md5}", b"raw", content_type="image/jpeg")

    async def script(c: Controller) -> None:
        c.observe("ADDED", kube.get_upload(NS, "img-r") or {})
        await until(lambda: phase(kube, "img-r") == "Moderating")
        work(kube, storage, Stage.MODERATION, REJECTED)
        await until(lambda: bool((kube.uploads["img-r"].get("status") or {}).get("rawDeletedAt")))

    run(kube, storage, api, script, PINSTER_REJECTED_RETENTION="0.2")
    assert phase(kube, "img-r") == "Rejected"
    assert not storage.exists(Area.UPLOAD, f"raw/{md5}")
    [flagged] = api.accepted("/v1/images/flagged")
    assert flagged.body["data"]["verdict"]["labels"][0]["name"] == "Explicit Nudity"
    assert not api.accepted("/v1/images/")
    assert not any(Stage.THUMBNAIL in j["metadata"]["labels"].values() for j in kube.jobs.values())


def test_an_upload_deleted_by_hand_takes_its_raw_bytes_along(
    tmp_path: Path, api: PinsterApi
) -> None:
    """Left behind, the orphan sweep would adopt them and the upload would come back."""
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    deleted: list[str] = []
    delete = storage.delete
    storage.delete = lambda area, key: deleted.append(key) or delete(area, key)  # type: ignore[method-assign]
    for name, md5 in (("img-moderating", "c" * 32), ("img-ready", "d" * 32)):
        kube.add_upload(name, md5)
        storage.put(Area.UPLOAD, f"raw/{md5}", b"raw", content_type="image/jpeg")
    kube.uploads["img-ready"]["status"] = {"phase": "Ready"}  # its Job used the bytes up

    async def script(c: Controller) -> None:
        c.observe("ADDED", kube.get_upload(NS, "img-moderating") or {})
        await until(lambda: phase(kube, "img-moderating") == "Moderating")
        c.observe("DELETED", kube.uploads.pop("img-ready"))  # decided in the call
        c.observe("DELETED", kube.uploads.pop("img-moderating"))
        await until(lambda: not storage.exists(Area.UPLOAD, f"raw/{'c' * 32}"))

    run(kube, storage, api, script)
    assert deleted == [f"raw/{'c' * 32}"]  # none for the Ready one: nothing to delete


def test_raw_bytes_another_upload_still_needs_stay_when_one_is_deleted(tmp_path: Path) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    md5 = "f" * 32
    storage.put(Area.UPLOAD, f"raw/{md5}", b"raw", content_type="image/jpeg")
    for name in ("img-gone", "img-other"):
        kube.add_upload(name, md5)
    cleanup = Cleanup(settings(), kube, storage)  # type: ignore[arg-type]
    gone = kube.uploads.pop("img-gone")

    cleanup.raw_of_deleted(gone, others_known=True)  # the other is Pending
    assert storage.exists(Area.UPLOAD, f"raw/{md5}")

    kube.uploads["img-other"]["status"] = {"phase": "Rejected"}  # done with them
    cleanup.raw_of_deleted(gone, others_known=True)
    assert not storage.exists(Area.UPLOAD, f"raw/{md5}")


def test_notification_retries_through_503_then_ttl_deletes_the_upload(
    tmp_path: Path, api: PinsterApi
) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    kube.add_upload("img-n", "b" * 32)
    api.fail_first = 3

    async def script(c: Controller) -> None:
        c.observe("ADDED", kube.get_upload(NS, "img-n") or {})
        await until(lambda: phase(kube, "img-n") == "Moderating")
        work(kube, storage, Stage.MODERATION, APPROVED)
        await until(
            lambda: (
                phase(kube, "img-n") == "Thumbnailing"
                and "thumbnail" in kube.uploads["img-n"]["status"].get("jobs", {})
            )
        )
        work(kube, storage, Stage.THUMBNAIL, PUBLISHED)
        await until(lambda: "img-n" not in kube.uploads)

    run(kube, storage, api, script, PINSTER_TERMINAL_TTL="0.3")
    assert [r.status for r in api.all()] == [503, 503, 503, 201]
    assert any(e[2] == "NotificationRetrying" for e in kube.events)
    assert any(e[2] == "Ready" for e in kube.events)


def test_retry_annotation_redrives_a_failed_upload(tmp_path: Path, api: PinsterApi) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    kube.add_upload("img-f", "c" * 32)

    async def script(c: Controller) -> None:
        c.observe("ADDED", kube.get_upload(NS, "img-f") or {})
        await until(lambda: phase(kube, "img-f") == "Moderating")
        results.write(
            storage,
            StageResult(
                NS,
                "img-f",
                Stage.MODERATION,
                "j",
                "failed",
                reason="CorruptImage",
                message="truncated",
            ),
        )
        # The Job's pod has written its result and the Job has finished: its event wakes
        # the upload (results are read once a Job has finished).
        [job] = kube.jobs
        kube.finish(job)
        c.wake(NS, ["img-f"])
        await until(lambda: phase(kube, "img-f") == "Failed")
        meta = kube.uploads["img-f"]["metadata"]
        meta["annotations"] = {ANNOTATION_RETRY: "1"}
        meta["resourceVersion"] = str(next(kube.versions))  # as the API server does
        c.observe("MODIFIED", kube.get_upload(NS, "img-f") or {})
        await until(
            lambda: (
                phase(kube, "img-f") == "Moderating"
                and ANNOTATION_RETRY not in kube.uploads["img-f"]["metadata"]["annotations"]
            )
        )

    run(kube, storage, api, script)
    # The stale failed result was cleared, and the new Job is a different one.
    assert results.read(storage, NS, "img-f", Stage.MODERATION) is None
    assert len(kube.jobs) == 2


def test_results_of_an_earlier_upload_of_the_same_name_are_ignored(
    tmp_path: Path, api: PinsterApi
) -> None:
    """Deleted, then uploaded again: the new ImageUpload has the old one's name, and the
    old one's results are still stored. They name another uid: not read as this one's
    (nor deleted up front); this one's Job writes its own over them."""
    kube, storage = FakeKube(), DirectoryStorage(tmp_path, "http://cdn.test")
    kube.add_upload("img-again", "d" * 32)
    for stage, data in ((Stage.MODERATION, {}), (Stage.THUMBNAIL, PUBLISHED)):
        old = StageResult(NS, "img-again", stage, "old-job", "failed", reason="CorruptImage")
        old.uid, old.data = "uid-of-the-deleted-one", data
        results.write(storage, old)

    async def script(c: Controller) -> None:
        c.observe("ADDED", kube.get_upload(NS, "img-again") or {})
        await until(lambda: phase(kube, "img-again") == "Moderating")
        [job] = kube.jobs
        kube.finish(job)  # finished without writing a result for this upload
        c.wake(NS, ["img-again"])
        await until(lambda: "NoResult" in [e[2] for e in kube.events])
        assert phase(kube, "img-again") == "Moderating"  # a new Job, not CorruptImage
        await until(lambda: len(kube.jobs) == 2)
        for job in work(kube, storage, Stage.MODERATION, APPROVED, uid="uid-img-again"):
            c.wake(NS, uploads_of(kube.jobs[job]))
        await until(lambda: "thumbnail" in kube.uploads["img-again"]["status"].get("jobs", {}))
        for job in work(kube, storage, Stage.THUMBNAIL, PUBLISHED, uid="uid-img-again"):
            c.wake(NS, uploads_of(kube.jobs[job]))
        await until(lambda: phase(kube, "img-again") == "Ready")

    run(kube, storage, api, script)
    assert [r.status for r in api.all()] == [201]


def test_uploads_wait_for_a_running_job_of_their_stage_at_the_cap(
    tmp_path: Path, api: PinsterApi
) -> None:
    """PINSTER_BATCH_MAX_RUNNING=1: while the first moderation Job runs, later uploads
    get no Job; the Job's end, seen in its events, starts them in one Job."""
    kube, storage = FakeKube(), DirectoryStorage(tmp_path, "http://cdn.test")
    names = [f"img-{i}" for i in range(4)]
    for i, name in enumerate(names):
        kube.add_upload(name, f"{i:032x}")

    def moderation_jobs() -> list[str]:
        return [
            name
            for name, job in kube.jobs.items()
            if job["metadata"]["labels"]["images.pinster.io/stage"] == Stage.MODERATION
        ]

    async def script(c: Controller) -> None:
        c.observe("ADDED", copy.deepcopy(kube.uploads["img-0"]))
        await until(lambda: len(moderation_jobs()) == 1, what="the first Job")
        first = moderation_jobs()[0]
        c.job_event("ADDED", copy.deepcopy(kube.jobs[first]))
        for name in names[1:]:
            c.observe("ADDED", copy.deepcopy(kube.uploads[name]))
        await until(lambda: all(phase(kube, n) == "Pending" for n in names[1:]))
        requeued = c.metrics.registry.get_sample_value
        polled = requeued("pinster_reconciles_total", {"result": "requeued"}) or 0
        # Each held upload polled twice more (many batch windows): still one Job.
        await until(
            lambda: (
                (requeued("pinster_reconciles_total", {"result": "requeued"}) or 0)
                >= polled + 2 * len(names[1:])
            ),
            what="the held uploads' polls",
        )
        assert moderation_jobs() == [first]
        kube.finish(first)
        c.job_event("MODIFIED", copy.deepcopy(kube.jobs[first]))
        await until(lambda: len(moderation_jobs()) == 2, what="the held uploads' Job")
        second = next(j for j in moderation_jobs() if j != first)
        assert sorted(uploads_of(kube.jobs[second])) == names[1:]

    run(kube, storage, api, script, PINSTER_BATCH_MAX="8", PINSTER_BATCH_MAX_RUNNING="1")
