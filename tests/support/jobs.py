"""Staging uploads as the upload service leaves them, for the Job suites.

:func:`stage_upload` stores ``raw/<md5>`` with the original service's metadata and
returns the ImageUpload spec; :class:`DictSpecs` serves specs without a cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pinster_jobs import Upload

from pinster_images.resource import (
    DEFAULT_THUMBNAIL_SIZES,
    ImageUploadSpec,
    Uploader,
    upload_name,
)
from pinster_images.storage import Area, Storage, raw_key


def stage_upload(
    storage: Storage,
    data: bytes,
    *,
    content_type: str = "image/jpeg",
    sizes: Sequence[str] = DEFAULT_THUMBNAIL_SIZES,
    imageable_id: str = "42",
    width: int = 1,
    height: int = 1,
) -> tuple[str, ImageUploadSpec]:
    """Put the raw object and return (upload name, spec), as the upload service would."""
    md5 = hashlib.md5(data).hexdigest()
    uploader = Uploader(user_id="7", imageable_type="Pin", imageable_id=imageable_id)
    metadata = {
        "user_id": uploader.user_id,
        "imageable_type": uploader.imageable_type,
        "imageable_id": uploader.imageable_id,
        "base_file_name": md5,
    }
    storage.put(Area.UPLOAD, raw_key(md5), data, content_type=content_type, metadata=metadata)
    spec = ImageUploadSpec(
        md5=md5,
        bucket=storage.bucket(Area.UPLOAD),
        key=raw_key(md5),
        content_type=content_type,
        byte_size=len(data),
        width=width,
        height=height,
        uploader=uploader,
        thumbnail_sizes=tuple(sizes),
    )
    return upload_name(md5, uploader.imageable_type, uploader.imageable_id), spec


class DictSpecs:
    """The ``Specs`` protocol over a dict: (namespace, name) -> upload (uid ``uid-<name>``
    unless given)."""

    def __init__(self) -> None:
        self.specs: dict[tuple[str, str], Upload] = {}

    def add(self, namespace: str, name: str, spec: ImageUploadSpec, uid: str = "") -> None:
        self.specs[(namespace, name)] = Upload(uid or f"uid-{name}", spec)

    def get(self, namespace: str, name: str) -> Upload | None:
        return self.specs.get((namespace, name))
