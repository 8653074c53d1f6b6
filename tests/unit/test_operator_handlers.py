"""How kopf is configured, a start-up that waits for the store a bounded time, the
health report; what a Job event does to uploads."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from kopf._cogs.structs.references import Resource  # what kopf matches selectors on
from pinster_operator import Controller
from pinster_operator._handlers import build_registry, configure, health_report, wait_for_storage

from pinster_images.errors import ConfigError, TemporaryError
from pinster_images.resource import GROUP, KIND, PLURAL, VERSION
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
    kube = SimpleNamespace(api=None)  # nothing here calls the API server
    return Controller(s, kube=kube, storage=DirectoryStorage(tmp_path))  # type: ignore[arg-type]


def test_kopf_is_set_for_event_handlers_only() -> None:
    settings = kopf.OperatorSettings()
    configure(settings)
    assert settings.scanning.disabled  # no CRD or namespace watch, nor RBAC for one
    assert not settings.posting.enabled
    assert settings.peering.standalone
    # Event handlers only: no diff-base built (a deep copy of every body) or stored.
    essence = settings.persistence.diffbase_storage.build(body=kopf.Body({"spec": {"a": 1}}))
    assert essence == {}
    # 10,000 listed uploads are never all in memory: pages, a bounded set of workers.
    assert settings.watching.chunk_size == 100
    assert settings.queueing.worker_limit is None and settings.queueing.idle_timeout < 1
    # The Job watch asks the API server for our Jobs only.
    pods = Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True)
    assert list(settings.watching.label_selectors.collect(pods)) == [
        "app.kubernetes.io/part-of=pinster-images,app.kubernetes.io/component=job"
    ]
    jobs = Resource(group="batch", version="v1", plural="jobs", kind="Job", namespaced=True)
    assert list(settings.watching.label_selectors.collect(jobs)) == [
        "app.kubernetes.io/part-of=pinster-images"
    ]
    uploads = Resource(group=GROUP, version=VERSION, plural=PLURAL, kind=KIND, namespaced=True)
    assert list(settings.watching.label_selectors.collect(uploads)) == []


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


def test_the_health_report_fails_when_the_scheduler_died(tmp_path: Path) -> None:
    controller = _controller(tmp_path)

    async def main() -> None:
        controller.start()
        try:
            controller.job_event("ADDED", JOB)
            report = health_report(controller)
            assert report["queue"] == 0 and report["timers"] == 0
            assert list(report["last_event"]) == ["jobs"]
            assert 0 <= report["last_event"]["jobs"] < 5
            assert controller.scheduler is not None
            controller.scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await controller.scheduler  # until it has ended
            with pytest.raises(kopf.PermanentError, match="scheduler has stopped"):
                health_report(controller)
        finally:
            await controller.stop()

    asyncio.run(main())


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


def test_kopf_watches_three_kinds_and_indexes_nothing(tmp_path: Path) -> None:
    """No @kopf.index: with one, kopf holds start-up until every object is indexed, at a
    cost that grows with the square of their number (minutes of CPU for 10,000)."""
    registry = build_registry(_controller(tmp_path))
    # kopf has no public listing of a registry's handlers.
    assert list(registry._indexing.get_all_handlers()) == []
    watched = {
        (h.selector.group, h.selector.any_name) for h in registry._watching.get_all_handlers()
    }  # type: ignore[union-attr]
    assert watched == {(GROUP, PLURAL), ("batch", "jobs"), ("", "pods")}


def test_a_job_pod_that_exited_0_ends_the_stage_before_the_job_says_so(tmp_path: Path) -> None:
    controller = _controller(tmp_path)
    woken: list[tuple[str, list[str]]] = []
    controller.wake = lambda namespace, names: woken.append((namespace, names))  # type: ignore[method-assign]
    controller.job_event("ADDED", JOB)  # running: no Complete condition yet
    pod: dict[str, Any] = {
        "metadata": {
            "name": "pinster-mod-1-abcde",
            "namespace": "ns",
            "labels": {"batch.kubernetes.io/job-name": "pinster-mod-1"},
        },
        "status": {"containerStatuses": [{"name": "job", "state": {"running": {}}}]},
    }
    controller.job_pod_event("MODIFIED", pod)
    assert woken == []
    assert controller._job_state("ns", "pinster-mod-1").status == "running"
    failed = copy.deepcopy(pod)
    failed["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 1}}
    controller.job_pod_event("MODIFIED", failed)  # the Job may retry: still running
    assert woken == [] and controller._job_state("ns", "pinster-mod-1").status == "running"

    done = copy.deepcopy(pod)
    done["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 0}}
    controller.job_pod_event("MODIFIED", done)
    controller.job_pod_event("MODIFIED", done)  # the same news again wakes nobody
    assert woken == [("ns", ["u1", "u2"])]
    assert controller._job_state("ns", "pinster-mod-1").status == "succeeded"
    controller.job_event("DELETED", JOB)
    assert ("ns", "pinster-mod-1") not in controller._pods_done
