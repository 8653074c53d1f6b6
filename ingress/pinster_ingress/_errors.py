"""HTTP answers for refused requests, with the original service's bodies where it had one.

Every refusal is an :class:`HttpError` carrying its JSON body; the app turns it into a
response in one place. Bodies that existing clients parse are kept byte for byte
(``EXAMPLE_BODY``, the ``errors.data`` field messages); new refusals use
``{"error": <message>, "reason": <CamelCase>}``.
"""

from __future__ import annotations

from typing import Any

EXAMPLE_BODY: dict[str, Any] = {
    "error": "Bad Request. Required fields are missing.",
    "example_body": {
        "data": {
            "image": "base64 encoded image",
            "name": "Optional name of image",
            "description": "Optional description",
            "featured": "Optional ISO8601 format",
        }
    },
}

MISSING_AUTH = "Request missing valid Authorization header."
BASE64_MISMATCH = "Your image did not match the base64 regex"


class HttpError(Exception):
    def __init__(
        self, status: int, body: Any, *, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.body = body
        self.reason = reason
        self.headers = headers or {}


def error(status: int, reason: str, message: str, **headers: str) -> HttpError:
    return HttpError(status, {"error": message, "reason": reason}, reason=reason, headers=headers)


def missing_fields() -> HttpError:
    return HttpError(400, EXAMPLE_BODY, reason="MissingFields")


def invalid_fields(errors: dict[str, str]) -> HttpError:
    return HttpError(400, {"errors": {"data": errors}}, reason="InvalidFields")


def unsupported_declared_type(content_type: str) -> HttpError:
    # The original answered 400 when the data URI named a non-image type.
    return error(400, "UnsupportedFileType", f"Files of type: {content_type} are not supported.")


def base64_mismatch() -> HttpError:
    return error(400, "InvalidDataUri", BASE64_MISMATCH)


def unauthorized() -> HttpError:
    return error(401, "MissingToken", MISSING_AUTH, **{"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> HttpError:
    return error(403, "InvalidToken", f"Token was invalid. Error: {detail}")


def unavailable(reason: str, message: str, retry_after: int) -> HttpError:
    return error(503, reason, message, **{"Retry-After": str(retry_after)})
