"""One upload, from request body to stored bytes and ImageUpload.

Order of checks, as the original: the token (401/403, before the body is read), the
body's shape (400 with ``example_body``), the fields (400 ``errors.data``), the data URI
(400), then what the original never checked: bytes, format and pixel limits
(413/415/422). Then the bytes are stored once per md5 and the ImageUpload is created;
a failure of either is temporary (503 + Retry-After) and a retry reuses what was stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from pinster_images import adoption, logs, resource
from pinster_images.fields import Fields, TooLong, truthy, validate
from pinster_images.sniff import ImageInfo, ImageLimits, check_declared, sniff
from pinster_images.storage import Area, Storage, raw_key
from pinster_ingress import _kube
from pinster_ingress._auth import Claims
from pinster_ingress._body import ImageSink, JsonBodyScanner, decode_data_uri
from pinster_ingress._errors import (
    base64_mismatch,
    error,
    missing_fields,
    unsupported_declared_type,
)
from pinster_ingress._metrics import Metrics
from pinster_ingress._settings import IngressSettings

log = logging.getLogger("pinster_ingress")

#: Raw-form metadata may come as ``X-Pinster-<Field>`` headers (percent-encoded UTF-8).
FIELD_HEADERS = {
    "name": "x-pinster-name",
    "description": "x-pinster-description",
    "featured": "x-pinster-featured",
}


@dataclass(frozen=True)
class Received:
    image: ImageSink
    declared: str | None  # the content type the client claimed, if any
    fields: Fields


@dataclass(frozen=True)
class Accepted:
    name: str
    namespace: str
    md5: str
    created: bool

    @property
    def status_url(self) -> str:
        return f"/v1/images/{self.name}"

    def body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "md5": self.md5,
            "status_url": self.status_url,
        }


def is_raw(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return base.startswith("image/") or base == "application/octet-stream"


def body_limit(limits: ImageLimits, raw: bool) -> int:
    """Most body bytes a request may send: the image, or its base64 plus small fields."""
    from pinster_ingress._body import OUTLINE_LIMIT

    if raw:
        return limits.max_bytes
    return (limits.max_bytes + 2) // 3 * 4 + OUTLINE_LIMIT


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def _chunks(request: Request, limit: int, metrics: Metrics) -> Any:
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise error(
            413,
            "ImageTooLarge",
            f"request body of {declared} bytes exceeds the limit of {limit} bytes "
            f"(PINSTER_MAX_BYTES, base64 counted as 4/3)",
        )
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        metrics.bytes_received.inc(len(chunk))
        if seen > limit:
            raise error(
                413,
                "ImageTooLarge",
                f"request body exceeds the limit of {limit} bytes "
                f"(PINSTER_MAX_BYTES, base64 counted as 4/3)",
            )
        yield chunk


async def read_raw(request: Request, limits: ImageLimits, metrics: Metrics) -> Received:
    sink = ImageSink(limits, _declared_length(request) or 0)
    async for chunk in _chunks(request, body_limit(limits, raw=True), metrics):
        sink.write(chunk)
    if not len(sink):
        raise missing_fields()
    data: dict[str, Any] = {}
    for key, header in FIELD_HEADERS.items():
        if key in request.query_params:
            data[key] = request.query_params[key]
        elif header in request.headers:
            data[key] = unquote(request.headers[header])
    content_type = request.headers.get("content-type", "")
    declared = None if content_type.startswith("application/octet-stream") else content_type
    return Received(image=sink, declared=declared, fields=validate(data))


async def read_json(request: Request, limits: ImageLimits, metrics: Metrics) -> Received:
    # Base64 is 4 characters for 3 bytes: the image is at most 3/4 of the body.
    scanner = JsonBodyScanner(limits, (_declared_length(request) or 0) * 3 // 4)
    async for chunk in _chunks(request, body_limit(limits, raw=False), metrics):
        scanner.feed(chunk)
    parsed = scanner.close()
    document = parsed.document
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict) or not truthy(data.get("image")):
        raise missing_fields()
    streamed = parsed.streamed
    # A streamed data URI anywhere but data.image is just a very long field.
    checked = {
        key: (TooLong(streamed.text_length) if streamed and value == parsed.placeholder else value)
        for key, value in data.items()
        if key != "image"
    }
    fields = validate(checked)
    image = data["image"]
    if streamed is not None and image == parsed.placeholder:
        mime_type, subtype, sink = streamed.mime_type, streamed.mime_subtype, streamed.sink
    else:
        decoded = decode_data_uri(image, limits) if isinstance(image, str) else None
        if decoded is None:
            raise base64_mismatch()
        mime_type, subtype, sink = decoded
    declared = f"{mime_type}/{subtype}"
    if mime_type != "image":
        raise unsupported_declared_type(declared)
    if not len(sink):
        raise base64_mismatch()
    return Received(image=sink, declared=declared, fields=fields)


def _sniff(received: Received, limits: ImageLimits) -> ImageInfo:
    with received.image.view() as view:
        info = sniff(view, limits)
    if received.declared is not None:
        check_declared(info, received.declared)
    return info


def _store(storage: Storage, md5: str, received: Received, info: ImageInfo, claims: Claims) -> bool:
    """Write raw/<md5> unless it is already there (then its first upload's metadata stays).
    True when written."""
    uploader = resource.Uploader(claims.user_id, claims.imageable_type, claims.imageable_id)
    metadata = adoption.raw_metadata(uploader, received.fields, md5)
    return storage.put(
        Area.UPLOAD,
        raw_key(md5),
        received.image.file(),
        content_type=info.content_type,
        metadata=metadata,
        if_absent=True,
    )


class Intake:
    def __init__(
        self,
        settings: IngressSettings,
        storage: Storage,
        uploads: _kube.ImageUploads,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.uploads = uploads
        self.metrics = metrics

    async def read(self, request: Request) -> Received:
        limits = self.settings.limits
        if is_raw(request.headers.get("content-type", "")):
            return await read_raw(request, limits, self.metrics)
        return await read_json(request, limits, self.metrics)

    async def accept(self, claims: Claims, received: Received) -> Accepted:
        # One worker thread for the sniff (a long GIF's frames take a while), the storage
        # write and the create (blocking clients): each hop costs the loop a wake-up.
        return await run_in_threadpool(self._accept, claims, received)

    def _accept(self, claims: Claims, received: Received) -> Accepted:
        md5 = received.image.md5
        info = _sniff(received, self.settings.limits)
        name = resource.upload_name(md5, claims.imageable_type, claims.imageable_id)
        namespace = self.settings.namespace
        logger = logs.for_upload(log, namespace, name)
        written = _store(self.storage, md5, received, info, claims)
        spec = resource.ImageUploadSpec(
            md5=md5,
            bucket=self.storage.bucket(Area.UPLOAD),
            key=raw_key(md5),
            content_type=info.content_type,
            byte_size=len(received.image),
            width=info.width,
            height=info.height,
            uploader=resource.Uploader(claims.user_id, claims.imageable_type, claims.imageable_id),
            thumbnail_sizes=self.settings.thumbnail_sizes,
            name=received.fields.name,
            description=received.fields.description,
            featured=received.fields.featured,
        )
        manifest = resource.manifest(name, namespace, spec, {resource.LABEL_COMPONENT: "upload"})
        try:
            _, created = self.uploads.create(manifest)
        except Exception:
            # raw/<md5> stays: content-addressed, the retry reuses it (docs/ingress.md).
            logger.warning(
                "creating the ImageUpload failed; raw object kept for the retry",
                extra={"md5": md5, "stored": written},
            )
            raise
        self.metrics.image_bytes.inc(len(received.image))
        logger.info(
            "upload accepted" if created else "upload already known",
            extra={
                "md5": md5,
                "bytes": len(received.image),
                "content_type": info.content_type,
                "width": info.width,
                "height": info.height,
                "stored": written,
            },
        )
        return Accepted(name=name, namespace=namespace, md5=md5, created=created)
