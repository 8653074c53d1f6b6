"""What a stored ``raw/<md5>`` object becomes: an ImageUpload, a rejection, or nothing.

Three paths store raw objects: the upload service itself (``POST /``), clients with a
presigned POST (``POST /v1/uploads``, then the object store's event), and the service
this one replaces. The last two arrive as objects only, so what the upload service
checks in a request is checked here on the stored object: the metadata names the
uploader and the fields (as ``POST /`` stores them), the bytes hash to the md5 in the
key (read as a stream), and the image passes the same sniff, type and limit checks.
The upload service's event handler and the operator's adoption sweep both use this.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pinster_images import resource
from pinster_images.errors import PermanentError
from pinster_images.fields import MAX_FEATURED, Fields
from pinster_images.sniff import ImageLimits, ImageRejected, check_declared, sniff
from pinster_images.storage import RAW_PREFIX, Area, Storage, raw_key

#: The reason of the Event that reports a rejected stored object.
REJECTED_EVENT_REASON = "UploadRejected"
#: Metadata every upload's raw object carries (what the original stored).
UPLOADER_KEYS = ("user_id", "imageable_type", "imageable_id")
#: The CRD's bounds of what the metadata fills in.
_MAX_UPLOADER_VALUE = 256
_MAX_FIELD = {"name": 140, "description": 140, "featured": MAX_FEATURED}


def raw_metadata(uploader: resource.Uploader, fields: Fields, md5: str) -> dict[str, str]:
    """The raw object's metadata, as the original stored it (optional fields when given)."""
    return {
        "user_id": uploader.user_id,
        "imageable_type": uploader.imageable_type,
        "imageable_id": uploader.imageable_id,
        **fields.metadata(),
        "base_file_name": md5,
    }


class NotAnUpload(PermanentError):
    """The object carries no uploader metadata: nobody can be told about it."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} carries no upload metadata ({', '.join(UPLOADER_KEYS)})")


class Rejection(PermanentError):
    """The object fails a check; ``name`` is the ImageUpload it would have become."""

    def __init__(self, key: str, name: str, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
        self.key = key
        self.name = name


@dataclass(frozen=True)
class Adoptable:
    name: str
    spec: resource.ImageUploadSpec

    def manifest(self, namespace: str, component: str) -> dict[str, Any]:
        return resource.manifest(
            self.name, namespace, self.spec, {resource.LABEL_COMPONENT: component}
        )


def md5_of_key(key: str) -> str | None:
    md5 = key.removeprefix(RAW_PREFIX)
    return md5 if key.startswith(RAW_PREFIX) and resource.is_md5(md5) else None


def uploader_of(key: str, metadata: dict[str, str]) -> resource.Uploader:
    values = [metadata.get(name, "") for name in UPLOADER_KEYS]
    if not all(0 < len(value) <= _MAX_UPLOADER_VALUE for value in values):
        raise NotAnUpload(key)
    return resource.Uploader(*values)


def examine(
    storage: Storage, key: str, limits: ImageLimits, thumbnail_sizes: tuple[str, ...]
) -> Adoptable | None:
    """The ImageUpload a raw object should become; None when it is gone. Raises
    NotAnUpload (no uploader metadata) or Rejection (a check failed); storage errors
    pass through (TemporaryError: try again later)."""
    md5 = md5_of_key(key)
    if md5 is None:
        raise NotAnUpload(key)
    info = storage.head(Area.UPLOAD, key)
    if info is None:
        return None
    uploader = uploader_of(key, info.metadata)
    name = resource.upload_name(md5, uploader.imageable_type, uploader.imageable_id)

    def rejected(reason: str, message: str) -> Rejection:
        return Rejection(key, name, reason, message)

    # Stored values were checked and sanitised when they were stored (a sanitised value
    # may be shorter than the rules allow a given one), so only the CRD's bounds apply.
    values = {field: info.metadata.get(field) or None for field in _MAX_FIELD}
    too_long = [f for f, value in values.items() if value and len(value) > _MAX_FIELD[f]]
    if too_long:
        raise rejected("InvalidFields", f"metadata too long: {', '.join(too_long)}")
    fields = Fields(**values)
    if info.size > limits.max_bytes:
        raise rejected(
            "ImageTooLarge",
            f"{info.size} bytes exceed the limit of {limits.max_bytes} (PINSTER_MAX_BYTES)",
        )
    data = bytearray()
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in storage.stream(Area.UPLOAD, key):
        digest.update(chunk)
        data += chunk
        if len(data) > limits.max_bytes:  # replaced since the HEAD: do not read on
            raise rejected("ImageTooLarge", f"more than {limits.max_bytes} bytes")
    if digest.hexdigest() != md5:
        raise rejected(
            "Md5Mismatch", f"the stored bytes have md5 {digest.hexdigest()}, the key says {md5}"
        )
    try:
        image = sniff(memoryview(data), limits)
        check_declared(image, info.content_type)
    except ImageRejected as exc:
        raise rejected(exc.reason, exc.message) from None
    spec = resource.ImageUploadSpec(
        md5=md5,
        bucket=storage.bucket(Area.UPLOAD),
        key=raw_key(md5),
        content_type=image.content_type,
        byte_size=len(data),
        width=image.width,
        height=image.height,
        uploader=uploader,
        thumbnail_sizes=thumbnail_sizes,
        name=fields.name,
        description=fields.description,
        featured=fields.featured,
    )
    return Adoptable(name=name, spec=spec)


def rejection_message(rejection: Rejection) -> str:
    """What the report says: ``<Reason>: <why>`` (:func:`parse_rejection_message`)."""
    return f"{rejection.reason}: {rejection.message}; {rejection.key} deleted"


def parse_rejection_message(message: str) -> tuple[str, str]:
    """(reason, why) of a :func:`rejection_message`."""
    reason, _, why = message.partition(": ")
    return reason, why


def dispose(storage: Storage, rejection: Rejection, report: Callable[[str], None]) -> str:
    """Report the rejection (``report`` gets its message), then delete the object: should
    the delete fail, the next attempt reports again, where the other order could lose
    the only word the uploader gets. Returns the message."""
    message = rejection_message(rejection)
    report(message)
    storage.delete(Area.UPLOAD, rejection.key)
    return message
