"""The thumbnail stage for one upload: publish thumbnails, then the original, then
remove the raw object; idempotent, so a retried Job is harmless (it renders again only
the thumbnails of a run interrupted before the original went out).

Order matters: the raw object is the only copy until the original is published, and
an interrupted run must be able to start again. When the raw object is already gone
(a previous run got that far), the published original is the source.

Requests to the object store are most of a Job pod's work per upload, so none is spent
on a question whose answer is known: the source is fetched without a HEAD before it, and
while no original of the md5 is published (every first run; thumbnails always go out
before it) no thumbnail is looked for one by one.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from pinster_images.errors import NotFoundError, PermanentError
from pinster_images.resource import JobUpload
from pinster_images.storage import Area, ObjectInfo, Storage, thumbnail_key
from pinster_jobs._metadata import strip_location
from pinster_jobs._thumbnail import WEBP_SUFFIX, WEBP_TYPE, Source, ThumbnailEngine

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True)
class SourceBytes:
    data: bytes
    info: ObjectInfo
    #: True when read from the upload area (raw), False from the published original.
    raw: bool


def read_source(storage: Storage, upload: JobUpload) -> SourceBytes:
    """The upload's bytes: ``raw/<md5>``, else the already published ``<md5>``."""
    with contextlib.suppress(NotFoundError):
        stored = storage.get(Area.UPLOAD, upload.key)
        return SourceBytes(stored.data, stored.info, raw=True)
    with contextlib.suppress(NotFoundError):
        stored = storage.get(Area.PUBLIC, upload.md5)
        return SourceBytes(stored.data, stored.info, raw=False)
    raise PermanentError(
        f"neither {upload.key} (upload area) nor {upload.md5} (public area) exists",
        reason="SourceMissing",
    )


def _outputs(md5: str, size: str, webp: bool) -> list[tuple[str, str]]:
    """(key, content type) of every object published for one size."""
    key = thumbnail_key(md5, size)
    outputs = [(key, "image/jpeg")]
    if webp:
        outputs.append((key + WEBP_SUFFIX, WEBP_TYPE))
    return outputs


def publish(
    storage: Storage, engine: ThumbnailEngine, upload: JobUpload, log: Log
) -> dict[str, Any]:
    """Publish everything for ``upload``; returns the CRD's ``status.published``."""
    source_bytes = read_source(storage, upload)
    source: Source = engine.inspect(source_bytes.data)  # refuses bombs before decoding
    sizes = list(dict.fromkeys(upload.thumbnail_sizes))
    webp = engine.settings.webp
    if source_bytes.raw and storage.head(Area.PUBLIC, upload.md5) is None:
        # Nothing of this md5 is done (an interrupted run's thumbnails are made again).
        missing = sizes
    else:
        # A retried run, or the same bytes uploaded again: skip the sizes published.
        missing = [
            size
            for size in sizes
            if any(
                storage.head(Area.PUBLIC, key) is None
                for key, _ in _outputs(upload.md5, size, webp)
            )
        ]
    if missing:
        for rendition in engine.render(source_bytes.data, missing):
            key = thumbnail_key(upload.md5, rendition.size) + rendition.suffix
            storage.put(Area.PUBLIC, key, rendition.data, content_type=rendition.content_type)
        log.info("published %d thumbnail size(s)", len(missing), extra={"sizes": missing})
    if len(missing) < len(sizes):
        log.info("%d size(s) were already published", len(sizes) - len(missing))

    content_type = source.info.content_type
    if source_bytes.raw:
        # Same pixels, no location; metadata as the original service copied it.
        storage.put(
            Area.PUBLIC,
            upload.md5,
            strip_location(source_bytes.data, content_type),
            content_type=content_type,
            metadata=dict(source_bytes.info.metadata),
        )
        storage.delete(Area.UPLOAD, upload.key)
        log.info("published the original and removed %s", upload.key)

    geometry = {g.size: g for g in engine.plan(source, sizes)}
    thumbnails = [
        {
            "size": size,
            "key": key,
            "url": storage.public_url(key),
            "width": geometry[size].width,
            "height": geometry[size].height,
            "contentType": kind,
        }
        for size in sizes
        for key, kind in _outputs(upload.md5, size, webp)
    ]
    return {
        "original": {
            "key": upload.md5,
            "url": storage.public_url(upload.md5),
            "contentType": content_type,
        },
        "thumbnailCount": len(sizes),
        "thumbnails": thumbnails,
    }
