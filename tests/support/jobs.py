"""Staging uploads as the upload service leaves them, for the Job suites.

:func:`stage_upload` stores ``raw/<md5>`` with the original service's metadata and
returns the ImageUpload spec; :func:`job_uploads` describes uploads as a Job is told them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from pinster_images.resource import (
    DEFAULT_THUMBNAIL_SIZES,
    ImageUploadSpec,
    JobUpload,
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


def job_uploads(specs: Mapping[str, ImageUploadSpec]) -> dict[str, JobUpload]:
    """What the operator tells a Job of these uploads (name -> spec; uid ``uid-<name>``)."""
    return {name: JobUpload.of(f"uid-{name}", spec) for name, spec in specs.items()}
