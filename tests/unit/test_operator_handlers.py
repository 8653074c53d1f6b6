"""What kopf starts: a stream per kind and namespace; what a Job event does to uploads."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pinster_operator import Controller
from pinster_operator._handlers import streams_of
from pinster_operator._stream import JOBS, UPLOADS

from pinster_images.storage import LocalStorage
from tests.support.operator_units import settings

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
    s = settings(PINSTER_STORAGE_DIR=str(tmp_path), **env)
    kube = SimpleNamespace(api=None)  # streams only keep the client until they start
    return Controller(s, kube=kube, storage=LocalStorage(tmp_path))  # type: ignore[arg-type]


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
