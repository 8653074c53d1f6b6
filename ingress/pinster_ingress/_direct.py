"""Direct-to-storage uploads: the client stores its image in the upload bucket itself.

``POST /v1/uploads`` checks the token and the fields as ``POST /`` does and answers a
presigned POST for ``raw/<md5>`` that pins the content type, the md5 (``Content-MD5``:
the object store refuses other bytes), 1 byte to PINSTER_MAX_BYTES, the metadata
``POST /`` would store, and an expiry. The object store then reports the new object on
``POST /v1/storage-events`` (a MinIO webhook with a bearer token, or AWS S3 events via
an SNS HTTPS subscription with the token as the basic-auth password), and the object
becomes an ImageUpload after the checks of :mod:`pinster_images.adoption`; one failing
them is deleted and reported: an Event on the ImageUpload's name, which the status
endpoint answers as a Rejected upload.

Only ``ObjectCreated:Post`` events are acted on: objects the upload service writes
itself (PutObject) become ImageUploads in the same request, and objects the replaced
service writes are processed by its own pipeline; what neither finishes is adopted by
the operator's sweep.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from pinster_images import adoption, logs, resource
from pinster_images.fields import Fields, InvalidFields, validate
from pinster_images.sniff import accepted_types, too_large
from pinster_images.storage import RAW_PREFIX, Area, raw_key
from pinster_ingress._errors import HttpError, error, invalid_fields, unsupported_declared_type

if TYPE_CHECKING:
    from pinster_ingress._app import Service
    from pinster_ingress._settings import DirectUploadSettings

log = logging.getLogger("pinster_ingress")

#: Largest request body either route reads (a permit request, an event batch).
BODY_LIMIT = 1 << 20
MD5_MESSAGE = "Must be the md5 of the image: 32 lower-case hexadecimal digits."
SIZE_MESSAGE = "Must be the image's size in bytes: a positive integer."
TYPE_MESSAGE = "Must be the image's media type, e.g. image/jpeg."
#: The example a 400 for a missing ``data`` shows (the original's ``example_body`` style).
EXAMPLE_BODY: dict[str, Any] = {
    "error": "Bad Request. Required fields are missing.",
    "example_body": {
        "data": {
            "md5": "md5 of the image, hex",
            "content_type": "image/jpeg",
            "size": "bytes",
            "name": "Optional name of image",
            "description": "Optional description",
            "featured": "Optional ISO8601 format",
        }
    },
}
#: Event names of an object stored by a POST form (MinIO spells them with ``s3:``).
POST_EVENTS = ("s3:ObjectCreated:Post", "ObjectCreated:Post")


async def _json_body(request: Request) -> Any:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_LIMIT:
            raise error(413, "BodyTooLarge", f"request body exceeds {BODY_LIMIT} bytes")
    try:
        return json.loads(body)
    except ValueError:
        return None


def _b64_md5(md5: str) -> str:
    return base64.b64encode(bytes.fromhex(md5)).decode()


class DirectUploads:
    def __init__(self, service: Service, settings: DirectUploadSettings) -> None:
        self.service = service
        self.settings = settings

    # --- POST /v1/uploads --------------------------------------------------------------

    async def permit(self, request: Request) -> Response:
        from pinster_ingress._app import ImageJSONResponse

        claims = await self.service.claims(request)
        body = await _json_body(request)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise HttpError(400, EXAMPLE_BODY, reason="MissingFields")
        md5, content_type, fields = self._described(data)
        uploader = resource.Uploader(claims.user_id, claims.imageable_type, claims.imageable_id)
        expires_at = datetime.now(UTC) + timedelta(seconds=self.settings.expires_in)
        post = await run_in_threadpool(
            self.service.storage.presigned_post,
            Area.UPLOAD,
            raw_key(md5),
            content_type=content_type,
            content_md5=_b64_md5(md5),
            max_bytes=self.service.settings.limits.max_bytes,
            metadata=adoption.raw_metadata(uploader, fields, md5),
            expires_in=self.settings.expires_in,
        )
        name = resource.upload_name(md5, claims.imageable_type, claims.imageable_id)
        request.scope.setdefault("state", {})["outcome"] = "Permitted"
        return ImageJSONResponse(
            {
                "data": {
                    "url": post.url,
                    "fields": post.fields,
                    "key": raw_key(md5),
                    "expires_at": resource.rfc3339(expires_at),
                    "name": name,
                    "status_url": f"/v1/images/{name}",
                }
            },
            status_code=201,
        )

    def _described(self, data: dict[str, Any]) -> tuple[str, str, Fields]:
        """md5, content type and fields as the client describes its image: 400 naming
        each wrong field (the original's ``errors.data``), 400/415 for a type that is not
        an image this service takes, 413 for a size above PINSTER_MAX_BYTES."""
        errors: dict[str, str] = {}
        try:
            fields = validate({key: data.get(key) for key in ("name", "description", "featured")})
        except InvalidFields as exc:
            errors.update(exc.errors)
        md5 = data.get("md5")
        if not isinstance(md5, str) or not resource.is_md5(md5):
            errors["md5"] = MD5_MESSAGE
        declared = data.get("content_type")
        if not isinstance(declared, str) or "/" not in declared:
            errors["content_type"] = TYPE_MESSAGE
        size = data.get("size")
        if isinstance(size, float) and size.is_integer():
            size = int(size)  # JSON does not tell 1.0 from 1
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            errors["size"] = SIZE_MESSAGE
        if errors:
            raise invalid_fields(errors)
        assert isinstance(md5, str) and isinstance(declared, str) and isinstance(size, int)
        # Exactly one of the types the service takes: the presigned POST pins it, and the
        # client must send the same Content-Type with the file.
        if not declared.startswith("image/"):
            raise unsupported_declared_type(declared)
        if declared not in accepted_types():
            raise error(
                415,
                "UnsupportedImageType",
                f"{declared} is not an image type this service takes "
                f"({', '.join(accepted_types())})",
            )
        if size > self.service.settings.limits.max_bytes:
            raise too_large(size, self.service.settings.limits)
        return md5, declared, fields

    # --- POST /v1/storage-events --------------------------------------------------------

    def _authorize(self, header: str | None) -> None:
        """The events token, as a bearer token (MinIO's webhook) or as the password of
        basic auth (an SNS HTTPS subscription's ``https://user:token@host/...``)."""
        expected = self.settings.events_token.reveal().encode()
        scheme, _, value = (header or "").partition(" ")
        given = value.strip().encode()
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(given, validate=True).partition(b":")[2]
            except binascii.Error:
                given = b""
        elif scheme.lower() != "bearer":
            given = b""
        if not given:
            raise error(401, "MissingToken", "storage events need the events token")
        if not hmac.compare_digest(given, expected):
            raise error(403, "InvalidToken", "the events token is not this service's")

    async def storage_events(self, request: Request) -> Response:
        from pinster_ingress._app import ImageJSONResponse

        self._authorize(request.headers.get("authorization"))
        body = await _json_body(request)
        records = self._records(body)
        results = []
        for record in records:
            results.append(await run_in_threadpool(self._handle, record))
        request.scope.setdefault("state", {})["outcome"] = "Handled"
        return ImageJSONResponse({"results": results})

    @staticmethod
    def _records(body: Any) -> list[dict[str, Any]]:
        if isinstance(body, dict) and body.get("Type") == "SubscriptionConfirmation":
            # Confirming means fetching a URL at AWS: left to whoever set the
            # subscription up, so this service never calls out.
            log.warning(
                "SNS asks to confirm a subscription: open SubscribeURL to confirm it",
                extra={"topic": body.get("TopicArn"), "url": body.get("SubscribeURL")},
            )
            return []
        if isinstance(body, dict) and body.get("Type") == "Notification":
            try:
                body = json.loads(body.get("Message") or "")
            except ValueError:
                body = None
        records = body.get("Records") if isinstance(body, dict) else None
        if isinstance(body, dict) and body.get("Event") == "s3:TestEvent":
            return []  # what S3 sends when a notification is configured
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise error(
                400,
                "InvalidEvent",
                'not an S3 event notification: expected {"Records": [...]} '
                "(or an SNS notification carrying one)",
            )
        return records

    def _handle(self, record: dict[str, Any]) -> dict[str, Any]:
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        key = unquote_plus(str((s3.get("object") or {}).get("key") or ""))
        event = record.get("eventName")
        result: dict[str, Any] = {"event": event, "bucket": bucket, "key": key}
        storage = self.service.storage
        if (
            event not in POST_EVENTS
            or bucket != storage.bucket(Area.UPLOAD)
            or not key.startswith(RAW_PREFIX)
        ):
            result["outcome"] = "Ignored"
            return result
        result.update(self.adopt(key))
        self.service.metrics.stored_objects.labels(result["outcome"]).inc()
        return result

    def adopt(self, key: str) -> dict[str, Any]:
        """Make the ImageUpload of a stored object, or delete and report it. TemporaryError
        passes (503: the object store sends the event again)."""
        service = self.service
        namespace = service.settings.namespace
        try:
            adoptable = adoption.examine(
                service.storage, key, service.settings.limits, service.settings.thumbnail_sizes
            )
        except adoption.NotAnUpload as exc:
            service.storage.delete(Area.UPLOAD, key)
            log.warning("deleted %s: %s", key, exc.message, extra={"key": key})
            return {"outcome": "Rejected", "reason": "NotAnUpload", "message": exc.message}
        except adoption.Rejection as exc:
            name = exc.name
            message = adoption.dispose(
                service.storage,
                exc,
                lambda message: service.uploads.report_rejection(namespace, name, message),
            )
            logs.for_upload(log, namespace, exc.name).warning(
                "stored object rejected: %s", message, extra={"key": key, "reason": exc.reason}
            )
            return {"outcome": "Rejected", "name": exc.name, "reason": exc.reason}
        if adoptable is None:
            return {"outcome": "Gone"}
        _, created = service.uploads.create(adoptable.manifest(namespace, "direct"))
        logger = logs.for_upload(log, namespace, adoptable.name)
        logger.info(
            "stored object accepted" if created else "stored object already known",
            extra={"key": key, "bytes": adoptable.spec.byte_size},
        )
        return {"outcome": "Accepted" if created else "AlreadyExists", "name": adoptable.name}


def routes(service: Service, settings: DirectUploadSettings) -> list[BaseRoute]:
    from pinster_ingress._app import guarded
    from pinster_ingress._openapi import DocumentedRoute, direct_path_items

    direct = DirectUploads(service, settings)
    retry = service.settings.retry_after
    permit_item, events_item = direct_path_items(service.settings)
    return [
        DocumentedRoute(
            "/v1/uploads", guarded(direct.permit, retry), methods=["POST"], path_item=permit_item
        ),
        DocumentedRoute(
            "/v1/storage-events",
            guarded(direct.storage_events, retry),
            methods=["POST"],
            path_item=events_item,
        ),
    ]
