"""What kopf starts: a stream per kind and namespace, a start-up that waits for the store
a bounded time, the health report; what a Job event does to uploads."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from pinster_operator import Controller
from pinster_operator._handlers import health_report, streams_of, wait_for_storage
from pinster_operator._stream import JOBS, UPLOADS, Stream

from pinster_images.errors import ConfigError, TemporaryError
from tests.support.operator_units import settings
from tests.support.storage import DirectoryStorage

JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "name": "pinster-mod-1",
        "namespace": "ns",
        "annotations": {"images.pinster.io/uploads": '["u1", "u2"]'},
        "labels": {"app.kubernetes.io/part-of": "pinster-images"},
    },
    "status": {"active": 1},
}


def _controller(tmp_path: Path, **env: str) -> Controller:
    s = settings(**env)
    kube = SimpleNamespace(api=None)  # streams only keep the client until they start
    return Controller(s, kube=kube, storage=DirectoryStorage(tmp_path))  # type: ignore[arg-type]


def test_one_upload_and_one_job_stream_per_watched_namespace(tmp_path: Path) -> None:
    streams = streams_of(_controller(tmp_path, PINSTER_WATCH_NAMESPACES="a,b"))
    assert [(s.kind, s.namespace) for s in streams] == [
        (UPLOADS, "a"),
        (JOBS, "a"),
        (UPLOADS, "b"),
        (JOBS, "b"),
    ]
    assert [(s.kind, s.namespace) for s in streams_of(_controller(tmp_path))] == [
        (UPLOADS, None),
        (JOBS, None),
    ]
    assert JOBS.path(None) == "/apis/batch/v1/jobs"
    assert JOBS.selector == "app.kubernetes.io/part-of=pinster-images"


def test_a_job_wakes_its_uploads_when_it_ends_or_goes(tmp_path: Path) -> None:
    controller = _controller(tmp_path)
    woken: list[tuple[str, list[str]]] = []
    controller.wake = lambda namespace, names: woken.append((namespace, names))  # type: ignore[method-assign]
    controller.job_event("MODIFIED", JOB)
    assert woken == []
    done = copy.deepcopy(JOB)
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    controller.job_event(None, done)  # listed after a restart, already finished
    controller.job_event("DELETED", JOB)
    assert woken == [("ns", ["u1", "u2"]), ("ns", ["u1", "u2"])]


class FlakyStore(DirectoryStorage):
    """Unreachable for the first ``failures`` checks."""

    def __init__(self, root: Path, failures: int, error: Exception) -> None:
        super().__init__(root)
        self.failures, self.error, self.checks = failures, error, 0

    def check(self) -> None:
        self.checks += 1
        if self.checks <= self.failures:
            raise self.error


def test_start_up_waits_for_the_store_a_bounded_time(tmp_path: Path) -> None:
    s = settings(PINSTER_STARTUP_TIMEOUT="5")
    healing = Controller(s, kube=None, storage=FlakyStore(tmp_path, 2, TemporaryError("down")))  # type: ignore[arg-type]
    asyncio.run(wait_for_storage(healing))
    assert healing.storage.checks == 3  # type: ignore[attr-defined]

    s = settings(PINSTER_STARTUP_TIMEOUT="1.5")
    down = Controller(s, kube=None, storage=FlakyStore(tmp_path, 99, TemporaryError("no route")))  # type: ignore[arg-type]
    with pytest.raises(kopf.PermanentError, match=r"still unreachable after 2s.*no route"):
        asyncio.run(wait_for_storage(down))

    refused = Controller(
        s,
        kube=None,  # type: ignore[arg-type]
        storage=FlakyStore(tmp_path, 99, ConfigError("AWS_SECRET_ACCESS_KEY: refused")),
    )
    with pytest.raises(kopf.PermanentError, match="AWS_SECRET_ACCESS_KEY"):
        asyncio.run(wait_for_storage(refused))
    assert refused.storage.checks == 1  # type: ignore[attr-defined]


def test_the_health_report_fails_when_the_scheduler_or_a_stream_died(tmp_path: Path) -> None:
    controller = _controller(tmp_path)
    [uploads, jobs] = streams_of(controller)

    async def main() -> None:
        controller.start()
        try:
            for stream in (uploads, jobs):  # as if they had run and heard the server
                stream._thread = threading.Thread(target=time.sleep, args=(5,), daemon=True)
                stream._thread.start()
                stream.last_contact = time.monotonic()
            report = health_report(controller, [uploads, jobs])
            assert report["queue"] == 0 and set(report["streams"]) == {
                "imageuploads in all namespaces",
                "jobs in all namespaces",
            }
            jobs.last_contact = time.monotonic() - 1000  # silent for longer than a watch
            with pytest.raises(kopf.PermanentError, match="jobs in all namespaces has not heard"):
                health_report(controller, [uploads, jobs])
            jobs.last_contact = time.monotonic()
            assert controller.scheduler is not None
            controller.scheduler.cancel()
            await asyncio.sleep(0)
            with pytest.raises(kopf.PermanentError, match="scheduler has stopped"):
                health_report(controller, [uploads, jobs])
        finally:
            await controller.stop()

    asyncio.run(main())
    stopped = Stream(None, UPLOADS, "ns", lambda batch, wait: None)  # type: ignore[arg-type]
    assert stopped.problem() == "the stream of imageuploads in ns has stopped"


def test_a_failed_start_up_is_reported_as_the_handler_said_it() -> None:
    from pinster_operator.cli import _reason

    class ActivityError(Exception):  # kopf's wrapper (not exported)
        pass

    try:
        try:
            raise OSError("[Errno 98] address already in use")
        except OSError as cause:
            raise kopf.PermanentError("the metrics server cannot listen on 0.0.0.0:8081") from cause
    except kopf.PermanentError as handler_error:
        wrapped = ActivityError("One or more handlers failed.")
        wrapped.__cause__ = handler_error
    assert _reason(wrapped) == "the metrics server cannot listen on 0.0.0.0:8081"
    assert _reason(OSError("bind failed")) == "bind failed"
