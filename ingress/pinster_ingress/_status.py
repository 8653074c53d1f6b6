"""The body of ``GET /v1/images/{name}``: an ImageUpload as its uploader needs to see it."""

from __future__ import annotations

import re
from typing import Any

from pinster_images import resource
from pinster_images.resource import ConditionType, Phase
from pinster_images.storage import Storage

#: What an ImageUpload's name can be (DNS-1123 subdomain); others are not looked up.
NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?")
_TERMINAL = {phase.value for phase in Phase if phase.terminal}


def status_body(obj: dict[str, Any], storage: Storage) -> dict[str, Any]:
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    published = status.get("published") or {}
    urls: dict[str, str] = {}
    original = published.get("original") or {}
    if original.get("key"):
        urls["original"] = original.get("url") or storage.public_url(original["key"])
    for thumbnail in published.get("thumbnails") or []:
        if thumbnail.get("size") and thumbnail.get("key"):
            urls[thumbnail["size"]] = thumbnail.get("url") or storage.public_url(thumbnail["key"])
    phase = status.get("phase") or Phase.PENDING.value
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "md5": spec.get("md5"),
        "phase": phase,
        "terminal": phase in _TERMINAL,
        "conditions": status.get("conditions") or [],
        "verdict": status.get("verdict"),
        "published": published or None,
        "urls": urls,
        "created": metadata.get("creationTimestamp"),
        "completed": status.get("completedAt"),
    }


def own_name(name: str, claims: Any) -> bool:
    """Whether ``name`` is of an upload by the imageable ``claims`` speak for (the name
    holds a hash of it), for uploads that exist only as a rejection Event."""
    md5 = resource.md5_of_name(name)
    return md5 is not None and name == resource.upload_name(
        md5, claims.imageable_type, claims.imageable_id
    )


def rejected_body(name: str, namespace: str, rejection: dict[str, str]) -> dict[str, Any]:
    """A directly stored object that failed its checks, shaped as a Rejected upload."""
    condition = {
        "type": ConditionType.READY.value,
        "status": "False",
        "reason": rejection["reason"],
        "message": rejection["message"],
        "lastTransitionTime": rejection["time"],
    }
    return {
        "name": name,
        "namespace": namespace,
        "md5": resource.md5_of_name(name),
        "phase": Phase.REJECTED.value,
        "terminal": True,
        "conditions": [condition],
        "verdict": None,
        "published": None,
        "urls": {},
        "created": rejection["time"],
        "completed": rejection["time"],
    }
