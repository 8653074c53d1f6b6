"""Builders for the operator's unit tests: settings from env, facts, stage results."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from pinster_operator import Facts, OperatorSettings

from pinster_images import keys
from pinster_images.resource import ImageUploadSpec, Stage, Uploader
from pinster_images.results import StageResult
from tests.support.storage import STORAGE_ENV

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
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
    return replace(
        f, status=status, now=at(seconds), result=None, job=None, assigned_job=None, **kw
    )


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
