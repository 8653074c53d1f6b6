"""The one place where failures become "retry later" or "give up".

Everything the operator does goes through :func:`classify`: pinster-images' own
Temporary/Permanent split, Kubernetes API answers (409 conflict: retry at once; 429
and 5xx: retry later; other 4xx: a bug or missing RBAC, retried slowly so a fixed RBAC
recovers), and anything unexpected.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from pinster_images.errors import PermanentError, TemporaryError

SLOW_RETRY = 60.0


@dataclass(frozen=True)
class Retry:
    delay: float
    reason: str
    message: str
    permanent: bool = False


def classify(exc: BaseException) -> Retry:
    if isinstance(exc, TemporaryError):
        return Retry(exc.delay, exc.reason, exc.message)
    if isinstance(exc, PermanentError):
        return Retry(SLOW_RETRY, exc.reason, exc.message, permanent=True)
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = f"Kubernetes API answered {status} {exc.reason}"
        if status == 409:
            return Retry(0.0, "Conflict", message)
        if status == 429 or status >= 500 or status == 0:
            return Retry(5.0, "ApiUnavailable", message)
        return Retry(SLOW_RETRY, "ApiRefused", message, permanent=True)
    if isinstance(exc, HTTPError | OSError):
        return Retry(5.0, "ApiUnreachable", f"{exc.__class__.__name__}: {exc}")
    return Retry(SLOW_RETRY, "InternalError", f"{exc.__class__.__name__}: {exc}", permanent=True)
