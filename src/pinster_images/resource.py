"""The ImageUpload custom resource: identity, names, spec and status vocabulary.

Single source of the API group, phases, condition types and the naming rule; the
schema itself is ``crds/imageuploads.images.pinster.io.yaml``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GROUP = "images.pinster.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ImageUpload"
PLURAL = "imageuploads"
SINGULAR = "imageupload"
SHORT_NAME = "iu"
CRD_NAME = f"{PLURAL}.{GROUP}"

#: Labels every object we create carries, so it can be found again (e.g. after a restart).
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MD5 = f"{GROUP}/md5"
LABEL_UPLOAD = f"{GROUP}/upload"
LABEL_STAGE = f"{GROUP}/stage"
PART_OF = "pinster-images"

#: Annotation that re-drives a Failed upload from the stage that failed.
ANNOTATION_RETRY = f"{GROUP}/retry"

DEFAULT_THUMBNAIL_SIZES: tuple[str, ...] = ("1024x1024", "512x512", "256x256", "128x128")

#: A content address: the md5 of the image bytes, as lower-case hex.
MD5_PATTERN = "[0-9a-f]{32}"
_MD5 = re.compile(f"^{MD5_PATTERN}$")


class Phase(enum.StrEnum):
    PENDING = "Pending"
    MODERATING = "Moderating"
    THUMBNAILING = "Thumbnailing"
    NOTIFYING = "Notifying"
    READY = "Ready"
    REJECTED = "Rejected"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.READY, Phase.REJECTED, Phase.FAILED)


class ConditionType(enum.StrEnum):
    MODERATED = "Moderated"
    THUMBNAILS_READY = "ThumbnailsReady"
    NOTIFIED = "Notified"
    READY = "Ready"


class Stage(enum.StrEnum):
    """Work a Job does; also the value of the ``stage`` label on Jobs."""

    MODERATION = "moderation"
    THUMBNAIL = "thumbnail"


def is_md5(value: str) -> bool:
    return _MD5.match(value) is not None


def upload_name(md5: str, imageable_type: str, imageable_id: str) -> str:
    """Deterministic, DNS-1123 name for one (image, imageable) pair.

    Identical requests map to the same name, which is what makes a retried upload
    idempotent (the second create answers 409 AlreadyExists).
    """
    if not is_md5(md5):
        raise ValueError(f"not an md5 hex digest: {md5!r}")
    imageable = hashlib.sha256(f"{imageable_type}\0{imageable_id}".encode()).hexdigest()[:10]
    return f"img-{md5}-{imageable}"


def md5_of_name(name: str) -> str | None:
    """The md5 in an :func:`upload_name`; None for another name."""
    md5 = name.removeprefix("img-")[:32]
    return md5 if name.startswith("img-") and is_md5(md5) else None


def rfc3339(moment: datetime) -> str:
    """The timestamp format of Kubernetes objects (UTC, whole seconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


@dataclass(frozen=True)
class Uploader:
    user_id: str
    imageable_type: str
    imageable_id: str


@dataclass(frozen=True)
class ImageUploadSpec:
    """The immutable spec, as the upload service writes it and the Jobs read it."""

    md5: str
    bucket: str
    key: str
    content_type: str
    byte_size: int
    width: int
    height: int
    uploader: Uploader
    thumbnail_sizes: tuple[str, ...] = DEFAULT_THUMBNAIL_SIZES
    name: str | None = None
    description: str | None = None
    featured: str | None = None

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "md5": self.md5,
            "source": {"bucket": self.bucket, "key": self.key},
            "contentType": self.content_type,
            "byteSize": self.byte_size,
            "width": self.width,
            "height": self.height,
            "uploader": {
                "userId": self.uploader.user_id,
                "imageableType": self.uploader.imageable_type,
                "imageableId": self.uploader.imageable_id,
            },
            "thumbnailSizes": list(self.thumbnail_sizes),
        }
        for attr, key in (
            ("name", "name"),
            ("description", "description"),
            ("featured", "featured"),
        ):
            value = getattr(self, attr)
            if value is not None:
                spec[key] = value
        return spec

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> ImageUploadSpec:
        uploader = spec["uploader"]
        return cls(
            md5=spec["md5"],
            bucket=spec["source"].get("bucket", ""),
            key=spec["source"]["key"],
            content_type=spec["contentType"],
            byte_size=int(spec["byteSize"]),
            width=int(spec["width"]),
            height=int(spec["height"]),
            uploader=Uploader(
                user_id=uploader["userId"],
                imageable_type=uploader["imageableType"],
                imageable_id=uploader["imageableId"],
            ),
            thumbnail_sizes=tuple(spec.get("thumbnailSizes") or DEFAULT_THUMBNAIL_SIZES),
            name=spec.get("name"),
            description=spec.get("description"),
            featured=spec.get("featured"),
        )


#: The environment variable that gives a stage's Job pod the uploads it serves.
JOB_UPLOADS_ENV = "PINSTER_UPLOADS"


@dataclass(frozen=True)
class JobUpload:
    """An upload as the Job serving it knows it: its uid (its result names it) and the
    parts of its spec a stage uses. The operator writes them into the Job
    (:data:`JOB_UPLOADS_ENV`), so that Job pods need no Kubernetes credentials at all,
    and the kubelet mounts nothing for them (each volume holds a pod ~0.3 s before its
    sandbox starts). Only these parts: the list must fit one environment variable, which
    Linux caps at 128 KiB (a batch's size is bounded with that in mind)."""

    uid: str
    md5: str
    key: str
    thumbnail_sizes: tuple[str, ...] = DEFAULT_THUMBNAIL_SIZES

    @classmethod
    def of(cls, uid: str, spec: ImageUploadSpec) -> JobUpload:
        return cls(uid, spec.md5, spec.key, spec.thumbnail_sizes)


def encode_job_uploads(uploads: Mapping[str, JobUpload]) -> str:
    """The value of :data:`JOB_UPLOADS_ENV`: JSON, upload name -> what its Job knows."""
    described = {
        name: {"uid": u.uid, "md5": u.md5, "key": u.key, "thumbnailSizes": list(u.thumbnail_sizes)}
        for name, u in uploads.items()
    }
    return json.dumps(described, separators=(",", ":"))


def decode_job_uploads(text: str) -> dict[str, JobUpload]:
    """Read :func:`encode_job_uploads`'s text back; ``ValueError`` saying what is wrong."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
        return {
            str(name): JobUpload(
                str(entry["uid"]),
                str(entry["md5"]),
                str(entry["key"]),
                tuple(str(size) for size in entry["thumbnailSizes"]),
            )
            for name, entry in raw.items()
        }
    except (ValueError, TypeError, KeyError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"not a list of uploads by name ({what})") from exc


def manifest(
    name: str, namespace: str, spec: ImageUploadSpec, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The full ImageUpload object to create."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                LABEL_PART_OF: PART_OF,
                LABEL_MD5: spec.md5,
                **(labels or {}),
            },
        },
        "spec": spec.to_dict(),
    }


@dataclass
class Condition:
    """metav1.Condition."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    observed_generation: int
    last_transition_time: str = field(default_factory=now_rfc3339)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": self.observed_generation,
            "lastTransitionTime": self.last_transition_time,
        }


def set_condition(conditions: list[dict[str, Any]], new: Condition) -> list[dict[str, Any]]:
    """Return ``conditions`` with ``new`` merged in by type; the transition time only moves
    when the status changes (as apimachinery's meta.SetStatusCondition does)."""
    result: list[dict[str, Any]] = []
    replaced = False
    for existing in conditions:
        if existing.get("type") != new.type:
            result.append(existing)
            continue
        merged = new.to_dict()
        if existing.get("status") == new.status and existing.get("lastTransitionTime"):
            merged["lastTransitionTime"] = existing["lastTransitionTime"]
        result.append(merged)
        replaced = True
    if not replaced:
        result.append(new.to_dict())
    return result


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def reference(name: str, namespace: str) -> dict[str, Any]:
    """An ImageUpload as an Event names it, for one that may not exist (a rejection)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
    }


def event(
    obj: dict[str, Any], type_: str, reason: str, message: str, *, component: str, instance: str
) -> dict[str, Any]:
    """A core/v1 Event about ``obj`` (any object with ``metadata.name`` and ``namespace``)."""
    meta = obj["metadata"]
    stamp = now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", API_VERSION),
            "kind": obj.get("kind", KIND),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
