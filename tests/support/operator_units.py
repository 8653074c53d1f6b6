"""Builders for the operator's unit tests: settings from env, facts, stage results, and
:class:`FakeKube`, the calls the controller makes over dicts."""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from kubernetes.client.exceptions import ApiException
from pinster_operator import Facts, OperatorSettings

from pinster_images import keys
from pinster_images.resource import ImageUploadSpec, Stage, Uploader, manifest
from pinster_images.results import StageResult
from tests.support.storage import STORAGE_ENV

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NS = "ns"
API_URL = "http://pinster-api.test"
SERVICE_URL = "http://images.test"


@cache
def private_key() -> bytes:
    return keys.generate_private_key()


def env(**overrides: str) -> dict[str, str]:
    base = {
        **STORAGE_ENV,
        "PINSTER_API_URL": API_URL,
        "PINSTER_SERVICE_URL": SERVICE_URL,
        "PINSTER_SERVICE_PRIVATE_KEY": private_key().decode(),
        "PINSTER_JOB_IMAGE": "registry.test/pinster-images:1.0",
        "PINSTER_UPLOAD_NAMESPACE": NS,
    }
    base.update(overrides)
    return base


def settings(**overrides: str) -> OperatorSettings:
    return OperatorSettings.from_env(env(**overrides))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def facts(status: dict[str, Any] | None = None, seconds: float = 0, **kw: Any) -> Facts:
    return Facts(name="img-1", generation=1, status=status or {}, now=at(seconds), **kw)


def later(f: Facts, status: dict[str, Any], seconds: float, **kw: Any) -> Facts:
    return replace(f, status=status, now=at(seconds), result=None, job=None, assigned={}, **kw)


def spec() -> ImageUploadSpec:
    return ImageUploadSpec(
        md5="0123456789abcdef0123456789abcdef",
        bucket="pinster-upload",
        key="raw/0123456789abcdef0123456789abcdef",
        content_type="image/jpeg",
        byte_size=1234,
        width=640,
        height=480,
        uploader=Uploader(user_id="u-1", imageable_type="Pin", imageable_id="42"),
    )


APPROVED = {
    "decision": "Approved",
    "backend": "rekognition",
    "threshold": 99,
    "labels": [],
}
REJECTED = {
    "decision": "Rejected",
    "backend": "rekognition",
    "threshold": 99,
    "labels": [{"name": "Explicit Nudity", "parentName": "", "confidence": 99.6}],
}
PUBLISHED = {
    "original": {"key": spec().md5, "url": f"http://cdn.test/{spec().md5}"},
    "thumbnailCount": 2,
    "thumbnails": [
        {
            "size": "512x512",
            "key": f"{spec().md5}_512x512",
            "url": "http://cdn.test/a",
            "width": 512,
            "height": 384,
            "contentType": "image/jpeg",
        },
        {
            "size": "128x128",
            "key": f"{spec().md5}_128x128",
            "url": "http://cdn.test/b",
            "width": 128,
            "height": 96,
            "contentType": "image/jpeg",
        },
    ],
}


def result(
    stage: Stage, data: dict[str, Any], outcome: str = "succeeded", **kw: Any
) -> StageResult:
    return StageResult(
        namespace="ns",
        upload="img-1",
        stage=stage,
        job="job-1",
        outcome=outcome,  # type: ignore[arg-type]
        data=data,
        **kw,
    )


class FakeKube:
    """The calls Controller makes, over dicts, with optimistic concurrency on status."""

    def __init__(self) -> None:
        self.uploads: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, str, str]] = []
        self.versions = itertools.count(1)
        self.conflict_next_write = False
        self.gets = 0
        #: LISTs of uploads by md5 (uploads_with_md5)
        self.md5_lists = 0
        self.writes: dict[str, int] = {}
        #: names of the uploads create_upload was asked for, in order (409s too)
        self.creates: list[str] = []

    def add_upload(self, name: str, md5: str) -> None:
        spec = ImageUploadSpec(
            md5=md5,
            bucket="b",
            key=f"raw/{md5}",
            content_type="image/jpeg",
            byte_size=3,
            width=1,
            height=1,
            uploader=Uploader("u", "Pin", name),
        )
        obj = manifest(name, NS, spec)
        obj["metadata"].update(
            uid=f"uid-{name}", generation=1, resourceVersion=str(next(self.versions))
        )
        self.uploads[name] = obj

    def create_upload(self, obj: dict[str, Any]) -> bool:
        name = obj["metadata"]["name"]
        self.creates.append(name)
        if name in self.uploads:
            return False
        created = copy.deepcopy(obj)
        created["metadata"].update(
            uid=f"uid-{name}", generation=1, resourceVersion=str(next(self.versions))
        )
        self.uploads[name] = created
        return True

    def get_upload(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        obj = self.uploads.get(name)
        return copy.deepcopy(obj) if obj else None

    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        current = self.uploads[obj["metadata"]["name"]]
        if (
            self.conflict_next_write
            or obj["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            self.conflict_next_write = False
            current["metadata"]["resourceVersion"] = str(next(self.versions))
            raise ApiException(status=409, reason="Conflict")
        current["status"] = copy.deepcopy(status)
        current["metadata"]["resourceVersion"] = str(next(self.versions))
        name = obj["metadata"]["name"]
        self.writes[name] = self.writes.get(name, 0) + 1
        return copy.deepcopy(current)

    def remove_annotation(self, namespace: str, name: str, key: str) -> None:
        self.uploads[name]["metadata"].get("annotations", {}).pop(key, None)
        self.uploads[name]["metadata"]["resourceVersion"] = str(next(self.versions))

    def delete_upload(self, namespace: str, name: str) -> None:
        self.uploads.pop(name, None)

    def uploads_with_md5(self, md5: str) -> list[dict[str, Any]]:
        self.md5_lists += 1
        return [u for u in self.uploads.values() if u["spec"]["md5"] == md5]

    def list_jobs(self, namespace: str, stage: Stage) -> list[dict[str, Any]]:
        return [
            j
            for j in self.jobs.values()
            if j["metadata"]["labels"]["images.pinster.io/stage"] == stage
        ]

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.jobs.get(name)

    def create_job(self, job: dict[str, Any]) -> bool:
        if job["metadata"]["name"] in self.jobs:
            return False
        self.jobs[job["metadata"]["name"]] = copy.deepcopy(job)
        return True

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        term = {"message": "rekognition: ThrottlingException", "finishedAt": "2026-01-01T00:00:00Z"}
        return [{"status": {"containerStatuses": [{"state": {"terminated": term}}]}}]

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], type_, reason, message))

    # the "Job controller" of the test
    def finish(self, name: str, *, failed: bool = False) -> None:
        condition = (
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
            if failed
            else {"type": "Complete", "status": "True"}
        )
        self.jobs[name]["status"] = {"conditions": [condition], "failed": 1 if failed else 0}
