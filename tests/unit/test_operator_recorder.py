"""Status writes and Events on their own (the controller's tests drive them end to end):
the object store holding an upload up is said on it once per reason, and the version
written is the one the echo of a watch event is recognised by."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from pinster_operator._errors import Retry
from pinster_operator._metrics import Metrics
from pinster_operator._recorder import StatusRecorder

from tests.support.operator_units import NS, FakeKube

KEY = (NS, "img-1")
DOWN = Retry(30.0, "StorageUnavailable", "S3 unreachable")


def moderating() -> FakeKube:
    kube = FakeKube()
    kube.add_upload("img-1", "0" * 32)
    kube.uploads["img-1"]["status"] = {"phase": "Moderating"}
    return kube


def ready(kube: FakeKube) -> dict[str, Any]:
    conditions = kube.uploads["img-1"]["status"]["conditions"]
    return next(c for c in conditions if c["type"] == "Ready")


def test_waiting_on_the_object_store_is_said_once_per_reason() -> None:
    kube = moderating()
    recorder = StatusRecorder(kube, Metrics())  # type: ignore[arg-type]

    recorder.report_waiting(KEY, DOWN)
    recorder.report_waiting(KEY, DOWN)  # the same reason again: no write, no Event

    assert ready(kube)["status"] == "False"
    assert ready(kube)["reason"] == "StorageUnavailable"
    assert ready(kube)["message"].startswith("Waiting for the object store: S3 unreachable.")
    assert kube.writes == {"img-1": 1}
    assert [e[1:3] for e in kube.events] == [("Warning", "StorageUnavailable")]
    # Its own write is remembered: the watch event echoing it is not news.
    echo = kube.uploads["img-1"]
    assert recorder.older_than_written(KEY, echo, inclusive=True)
    assert not recorder.older_than_written(KEY, echo)

    recorder.report_waiting(KEY, Retry(30.0, "StorageRefused", "403"))
    assert ready(kube)["reason"] == "StorageRefused"
    assert kube.writes == {"img-1": 2}
    recorder.forget(KEY)
    assert not recorder.older_than_written(KEY, echo, inclusive=True)


def test_nothing_is_said_on_an_upload_without_a_phase_or_when_the_api_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = moderating()
    kube.uploads["img-1"]["status"] = {}
    recorder = StatusRecorder(kube, Metrics())  # type: ignore[arg-type]
    recorder.report_waiting(KEY, DOWN)
    recorder.report_waiting((NS, "gone"), DOWN)
    assert kube.writes == {} and kube.events == []

    def unavailable(*_: Any) -> None:
        raise ApiException(status=503, reason="Service Unavailable")

    monkeypatch.setattr(kube, "get_upload", unavailable)
    recorder.report_waiting(KEY, DOWN)  # logged, never raised
    assert kube.writes == {} and kube.events == []
