"""The operator's watch streams against the devcluster's API server: a paged list, then
watch events in order, resumed (not relisted) when the server ends a watch, a fresh
list when the version to resume from is gone, and only the Jobs labelled as ours."""

from __future__ import annotations

import queue
from typing import Any

import pytest
from kubernetes import client
from pinster_operator._stream import JOBS, UPLOADS, Expired, Stream

from pinster_images.resource import (
    GROUP,
    LABEL_PART_OF,
    PART_OF,
    PLURAL,
    VERSION,
    ImageUploadSpec,
    Uploader,
    manifest,
)
from tests.support.waiting import wait_for

Event = tuple[str | None, str]


class CountingStream(Stream):
    """Counts the watches it opens, to see one resumed after the server ended it."""

    watches = 0

    def watch(self, version: str) -> str:
        self.watches += 1
        return super().watch(version)


def _create(kube_api: Any, namespace: str, name: str) -> dict[str, Any]:
    spec = ImageUploadSpec(
        md5="0" * 32,
        bucket="b",
        key="raw/" + "0" * 32,
        content_type="image/jpeg",
        byte_size=3,
        width=1,
        height=1,
        uploader=Uploader("u", "Pin", name),
    )
    api = client.CustomObjectsApi(kube_api)
    created: dict[str, Any] = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest(name, namespace, spec)
    )
    return created


def _collect(events: queue.Queue[Event], count: int) -> list[Event]:
    return [events.get(timeout=30) for _ in range(count)]


@pytest.mark.usefixtures("crd_installed")
def test_lists_in_pages_then_streams_changes_and_resumes(kube_api: Any, namespace: str) -> None:
    for name in ("listed-a", "listed-b", "listed-c"):
        _create(kube_api, namespace, name)
    events: queue.Queue[Event] = queue.Queue()

    def deliver(batch: list[tuple[str | None, dict[str, Any]]], wait: bool) -> None:
        for kind, obj in batch:
            events.put((kind, obj["metadata"]["name"]))

    # Pages of 2 (two requests for three uploads); the server ends each watch after 1 s.
    stream = CountingStream(kube_api, UPLOADS, namespace, deliver, page_size=2, server_timeout=1)
    stream.start()
    try:
        assert sorted(_collect(events, 3)) == [
            (None, "listed-a"),
            (None, "listed-b"),
            (None, "listed-c"),
        ]
        created = _create(kube_api, namespace, "watched")
        assert _collect(events, 1) == [("ADDED", "watched")]
        created["status"] = {"phase": "Pending"}
        client.CustomObjectsApi(kube_api).replace_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "watched", created
        )
        assert _collect(events, 1) == [("MODIFIED", "watched")]
        wait_for(lambda: stream.watches >= 3, timeout=30, what="two watches ended and resumed")
        client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "listed-a"
        )
        assert _collect(events, 1) == [("DELETED", "listed-a")]
        # Resumed from the last version seen: nothing was listed or delivered again.
        assert events.empty()
    finally:
        stream.stop()
    assert not stream._thread or not stream._thread.is_alive()


@pytest.mark.usefixtures("crd_installed")
def test_a_version_the_server_no_longer_has_means_a_fresh_list(
    kube_api: Any, namespace: str
) -> None:
    stream = Stream(kube_api, UPLOADS, namespace, lambda batch, wait: None)
    with pytest.raises(Expired):
        stream.watch("1")


def test_the_job_stream_sees_only_the_jobs_labelled_as_ours(kube_api: Any, namespace: str) -> None:
    batch_api = client.BatchV1Api(kube_api)
    for name, labels in (("ours", {LABEL_PART_OF: PART_OF}), ("other", {})):
        batch_api.create_namespaced_job(
            namespace,
            {
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "suspend": True,  # never runs: only its events matter here
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "none", "command": ["true"]}],
                        }
                    },
                },
            },
        )
    events: queue.Queue[Event] = queue.Queue()

    def deliver(batch: list[tuple[str | None, dict[str, Any]]], wait: bool) -> None:
        for kind, obj in batch:
            events.put((kind, obj["metadata"]["name"]))

    stream = Stream(kube_api, JOBS, namespace, deliver)
    stream.start()
    try:
        assert _collect(events, 1) == [(None, "ours")]
        batch_api.delete_namespaced_job("ours", namespace, propagation_policy="Background")
        batch_api.delete_namespaced_job("other", namespace, propagation_policy="Background")
        # The deletion of ours arrives (perhaps after a MODIFIED), and nothing of the other.
        seen = [events.get(timeout=30)]
        while seen[-1][0] != "DELETED":
            seen.append(events.get(timeout=30))
        assert {name for _, name in seen} == {"ours"}
    finally:
        stream.stop()
    assert events.empty()
