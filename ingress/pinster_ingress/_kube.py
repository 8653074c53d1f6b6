"""ImageUploads in the API server: create (idempotently) and read, off the event loop.

The official client is synchronous; calls run in a worker thread. Failures map onto
the project's split once, here: the API server unreachable, timing out or answering
5xx/429 is a TemporaryError (the client gets 503 + Retry-After); any other refusal is a
PermanentError.
"""

from __future__ import annotations

import socket
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool

from pinster_images import resource
from pinster_images.adoption import REJECTED_EVENT_REASON, parse_rejection_message
from pinster_images.errors import PermanentError, TemporaryError


class ImageUploads(Protocol):
    """What the service needs from the API server (a fake implements it in unit tests)."""

    def create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the object; on AlreadyExists return the stored one. (object, created)"""

    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def ping(self) -> None:
        """Raise TemporaryError when the API server cannot be reached."""

    def report_rejection(self, namespace: str, name: str, message: str) -> None:
        """A Warning Event on the ImageUpload ``name`` (which does not exist): a stored
        object that failed its checks. ``message`` is ``<Reason>: <why>``."""

    def rejection(self, namespace: str, name: str) -> dict[str, str] | None:
        """The latest such report: ``reason``, ``message``, ``time``; None if there is none."""


def _translate(exc: Exception, what: str) -> Exception:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status >= 500 or status in (0, 429):
            return TemporaryError(
                f"{what}: API server answered {status} {exc.reason}",
                reason="KubernetesUnavailable",
            )
        return PermanentError(
            f"{what}: API server refused with {status} {exc.reason}: {str(exc.body)[:300]}",
            reason="KubernetesRefused",
        )
    if isinstance(exc, HTTPError | OSError):
        return TemporaryError(
            f"{what}: API server unreachable: {exc}", reason="KubernetesUnavailable"
        )
    return exc


#: How the upload service signs its Events.
COMPONENT = "pinster-ingress"


class KubeImageUploads:
    def __init__(self, api_client: Any, timeout: float = 10.0) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._version = client.VersionApi(api_client)
        self._timeout = timeout

    def _get(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found: dict[str, Any] = self._api.get_namespaced_custom_object(
                resource.GROUP,
                resource.VERSION,
                namespace,
                resource.PLURAL,
                name,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        from kubernetes.client.exceptions import ApiException

        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        what = f"ImageUpload {namespace}/{name}"
        try:
            for _ in range(2):  # a 409 then 404 means it was deleted in between: once more
                try:
                    created: dict[str, Any] = self._api.create_namespaced_custom_object(
                        resource.GROUP,
                        resource.VERSION,
                        namespace,
                        resource.PLURAL,
                        manifest,
                        _request_timeout=self._timeout,
                    )
                    return created, True
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                existing = self._get(namespace, name)
                if existing is not None:
                    return existing, False
        except Exception as exc:
            raise _translate(exc, f"creating {what}") from exc
        raise TemporaryError(f"creating {what}: conflicting concurrent deletes", reason="Conflict")

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._get(namespace, name)
        except Exception as exc:
            raise _translate(exc, f"reading ImageUpload {namespace}/{name}") from exc

    def report_rejection(self, namespace: str, name: str, message: str) -> None:
        body = resource.event(
            resource.reference(name, namespace),
            "Warning",
            REJECTED_EVENT_REASON,
            message,
            component=COMPONENT,
            instance=socket.gethostname(),
        )
        try:
            self._core.create_namespaced_event(namespace, body, _request_timeout=self._timeout)
        except Exception as exc:
            raise _translate(
                exc, f"reporting the rejection of ImageUpload {namespace}/{name}"
            ) from exc

    def rejection(self, namespace: str, name: str) -> dict[str, str] | None:
        selector = f"involvedObject.name={name},reason={REJECTED_EVENT_REASON}"
        try:
            found = self._core.list_namespaced_event(
                namespace, field_selector=selector, _request_timeout=self._timeout
            )
        except Exception as exc:
            raise _translate(exc, f"reading Events of ImageUpload {namespace}/{name}") from exc
        events = [self._core.api_client.sanitize_for_serialization(e) for e in found.items]
        if not events:
            return None
        latest = max(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return parse_rejection(latest)

    def ping(self) -> None:
        try:
            self._version.get_code(_request_timeout=min(self._timeout, 3.0))
        except Exception as exc:
            raise _translate(exc, "API server") from exc


async def get(uploads: ImageUploads, namespace: str, name: str) -> dict[str, Any] | None:
    return await run_in_threadpool(uploads.get, namespace, name)


def parse_rejection(event: dict[str, Any]) -> dict[str, str]:
    """``reason``, ``message``, ``time`` of a rejection Event (message ``<Reason>: <why>``)."""
    reason, message = parse_rejection_message(str(event.get("message") or ""))
    time = event.get("lastTimestamp") or event.get("eventTime") or ""
    return {"reason": reason, "message": message, "time": str(time)}
