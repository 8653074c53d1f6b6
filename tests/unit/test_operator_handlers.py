"""kopf configuration: the lighter diff-base gives kopf exactly the essence it builds."""

from __future__ import annotations

import copy
from typing import Any

import kopf
from pinster_operator._handlers import DiffBaseStorage

from pinster_images.resource import GROUP

UPLOAD: dict[str, Any] = {
    "apiVersion": "images.pinster.io/v1alpha1",
    "kind": "ImageUpload",
    "metadata": {
        "name": "u",
        "namespace": "ns",
        "uid": "uid-u",
        "resourceVersion": "42",
        "generation": 1,
        "labels": {"images.pinster.io/md5": "0" * 32},
        "annotations": {
            "images.pinster.io/retry": "1",
            f"{GROUP}/last-handled-configuration": '{"spec": {}}',
            "kopf.zalando.org/last-handled-configuration": "{}",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "note": "kept",
        },
        "managedFields": [{"manager": "x", "fieldsV1": {"f:status": {"f:phase": {}}}}],
    },
    "spec": {"md5": "0" * 32, "uploader": {"userId": "u"}, "thumbnailSizes": ["512x512"]},
    "status": {"phase": "Moderating", "conditions": [{"type": "Ready", "status": "False"}]},
}

JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "name": "pinster-mod-1",
        "namespace": "ns",
        "ownerReferences": [{"kind": "ImageUpload", "name": "u", "uid": "uid-u"}],
        "labels": {"app.kubernetes.io/part-of": "pinster-images"},
    },
    "spec": {"template": {"spec": {"containers": [{"name": "job"}]}}},
    "status": {"active": 1},
}


def _storages() -> tuple[kopf.DiffBaseStorage, kopf.DiffBaseStorage]:
    key = "last-handled-configuration"
    return (
        kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key=key),
        DiffBaseStorage(prefix=GROUP, key=key),
    )


def test_essence_is_kopfs_own() -> None:
    kopfs, ours = _storages()
    for raw in (UPLOAD, JOB, {"metadata": {"name": "bare"}}, {}):
        body = kopf.Body(copy.deepcopy(raw))  # type: ignore[arg-type]
        assert ours.build(body=body, extra_fields=set()) == kopfs.build(body=body)
        assert ours.build(body=body) == kopfs.build(body=body)


def test_extra_fields_still_see_the_status() -> None:
    kopfs, ours = _storages()
    body = kopf.Body(copy.deepcopy(UPLOAD))  # type: ignore[arg-type]
    fields = {("status", "phase")}
    assert ours.build(body=body, extra_fields=fields) == kopfs.build(body=body, extra_fields=fields)
    assert ours.build(body=body, extra_fields=fields)["status"] == {"phase": "Moderating"}  # type: ignore[typeddict-item]


def test_the_body_is_not_changed() -> None:
    _, ours = _storages()
    raw = copy.deepcopy(UPLOAD)
    essence = ours.build(body=kopf.Body(raw))  # type: ignore[arg-type]
    essence["metadata"]["annotations"]["note"] = "changed"  # type: ignore[typeddict-item]
    assert raw == UPLOAD
