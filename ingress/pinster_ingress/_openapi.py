"""The OpenAPI 3.1 document, written by hand to describe exactly what the handlers do.

Exactly: a request the document allows gets past every check it can state (what is left
is what the bytes are: 413/415/422), a request it forbids is refused, and every answer
matches one declared shape. ``tests/unit/test_contract_local.py`` holds the service to
that with schemathesis. Constraints come from the constants the validators use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Route

from pinster_images.fields import (
    FALSY,
    FEATURED,
    FEATURED_MESSAGE,
    FIELD_MESSAGE,
    MAX_FEATURED,
    MAX_TEXT,
    MIN_TEXT,
)
from pinster_images.resource import MD5_PATTERN, Phase
from pinster_images.sniff import accepted_types
from pinster_ingress._body import OUTLINE_LIMIT, data_uri_pattern
from pinster_ingress._errors import EXAMPLE_BODY
from pinster_ingress._intake import FIELD_HEADERS
from pinster_ingress._settings import IngressSettings
from pinster_ingress._status import NAME

#: A 1x1 PNG: the example upload, which the service accepts (so tools can chain it).
EXAMPLE_IMAGE = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR42mM4UaEBAAN0AWn1BwN7AAAAAElFTkSuQmCC"
)
ERROR = {"$ref": "#/components/schemas/Error"}
# Characters outside the BMP count twice in JavaScript's length, once in JSON Schema's.
_ASTRAL = r"[^\x00-\uffff]"
_ANY = r"[\s\S]"


class DocumentedRoute(Route):
    """A route that carries its OpenAPI path item: a part that contributes routes
    (``_generate``) describes them where it implements them."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: list[str],
        path_item: dict[str, Any],
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.path_item = path_item


def json_content(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def refusal(description: str, schema: dict[str, Any] = ERROR) -> dict[str, Any]:
    """A 4xx/5xx answer: ``{"error", "reason"}`` unless it is one of the original's."""
    return json_content(schema, description)


def unauthorized() -> dict[str, Any]:
    return {
        **refusal("no Authorization header, or no token in it (`MissingToken`)"),
        "headers": {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}
        },
    }


def unavailable() -> dict[str, Any]:
    return {
        **refusal(
            "the object store or the API server is unreachable (`StorageUnavailable`, "
            "`KubernetesUnavailable`...): retry after `Retry-After` seconds"
        ),
        "headers": {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
    }


FORBIDDEN = "token invalid: signature, algorithm, aud, iss, exp, nbf or claims (`InvalidToken`)"
REFUSED = "the API server refused a request the service made (RBAC, schema): a deployment problem"


#: What each text field keeps when it is stored.
_KEPT = {"name": "word characters and spaces", "description": "word characters, spaces, \\ . ! ?"}


def _text_field(field: str) -> dict[str, Any]:
    """``name``/``description``: ignored when falsy, else MIN_TEXT..MAX_TEXT UTF-16 units."""
    half = MAX_TEXT // 2  # this many code points never exceed MAX_TEXT units
    return {
        "description": (
            f"Optional. Ignored when null, false, 0 or empty; otherwise a string of "
            f"{MIN_TEXT}-{MAX_TEXT} UTF-16 code units (JavaScript's length: a character "
            f"outside the BMP counts twice), else 400 `{FIELD_MESSAGE}` Stored sanitised "
            f"({_KEPT[field]} kept). Strings of {half + 1}-{MAX_TEXT - 1} code points that "
            f"mix in characters outside the BMP may pass the length rule; JSON Schema cannot "
            f"say which."
        ),
        "anyOf": [
            {"type": "string", "minLength": MIN_TEXT, "maxLength": half},
            {
                "type": "string",
                "minLength": half + 1,
                "maxLength": MAX_TEXT,
                "pattern": r"^[\x00-\uffff]*$",
            },
            # 2 or 3 code points reach MIN_TEXT units with characters outside the BMP.
            {"type": "string", "pattern": _short_astral()},
            {"enum": list(FALSY)},
        ],
    }


def _short_astral() -> str:
    """2 astral characters, or 3 characters of which one is astral: the strings under
    MIN_TEXT (4) code points that reach it in UTF-16 units."""
    a, x = _ASTRAL, _ANY
    return f"^(?:{a}{a}|{a}{x}{x}|{x}{a}{x}|{x}{x}{a})$"


def _featured() -> dict[str, Any]:
    return {
        "description": (
            "Optional; meant as an ISO 8601 time (`2024-05-01T10:00:00Z`), which the service "
            f"does not check, as the original did not: ignored when falsy, else a string of at "
            f"most {MAX_FEATURED} printable ASCII characters or a number (kept as its text), "
            f"else 400 `{FEATURED_MESSAGE}`"
        ),
        "examples": ["2024-05-01T10:00:00Z"],
        "anyOf": [
            {"type": "string", "pattern": f"^(?:{FEATURED.pattern})?$"},
            {"type": "number"},
            {"enum": [None, False]},
        ],
    }


def _upload_body(settings: IngressSettings) -> dict[str, Any]:
    types = accepted_types()
    shortest = min(len(f"data:{t};base64,") for t in types)
    image = {
        "type": "string",
        "pattern": data_uri_pattern(types),
        # An image of PINSTER_MAX_BYTES, base64-encoded behind the shortest prefix.
        "maxLength": shortest + -(-settings.limits.max_bytes // 3) * 4,
        "description": (
            "`data:image/<type>;base64,<payload>`; a non-image type is 400 "
            "`UnsupportedFileType`, a payload that is not base64 400 `InvalidDataUri`. The "
            "decoded bytes must be the declared format (415), whole and within "
            "PINSTER_MAX_BYTES / PINSTER_MAX_PIXELS / PINSTER_MAX_FRAMES (413/422)."
        ),
    }
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": image,
                    "name": _text_field("name"),
                    "description": _text_field("description"),
                    "featured": _featured(),
                },
            }
        },
    }


def _upload_request(settings: IngressSettings) -> dict[str, Any]:
    headers = ", ".join(f"`{h.title()}`" for h in FIELD_HEADERS.values())
    raw = {
        "schema": {
            "type": "string",
            "format": "binary",
            "minLength": 1,  # an empty body is 400 MissingFields
            "maxLength": settings.limits.max_bytes,
            "description": (
                "raw form: the body is the image. `name`, `description`, `featured` (same "
                f"rules as in JSON) come from the query string, else from the headers {headers} "
                "(percent-encoded UTF-8); they are not parameters here because the JSON form "
                "ignores them. `application/octet-stream`: the type is sniffed, not checked."
            ),
        }
    }
    example = {
        "image": EXAMPLE_IMAGE,
        "name": "Summer pin",
        "description": "A pin from the beach.",
        "featured": "2024-05-01T10:00:00Z",
    }
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/UploadBody"},
                "example": {"data": example},
            },
            **{t: raw for t in (*accepted_types(), "application/octet-stream")},
        },
    }


def _accepted(description: str) -> dict[str, Any]:
    return {
        **json_content({"$ref": "#/components/schemas/Accepted"}, description),
        "headers": {
            "Location": {
                "required": True,
                "description": "the status URL",
                "schema": {"type": "string", "pattern": "^/v1/images/"},
            }
        },
        "links": {
            "status": {
                "operationId": "status",
                "parameters": {"name": "$response.body#/name"},
                "description": "read the upload's phase, verdict and URLs",
            }
        },
    }


def _upload(settings: IngressSettings) -> dict[str, Any]:
    # Disjoint shapes: the original's exact bodies, and errors that always have a reason.
    bad_request = {
        "oneOf": [
            {"$ref": "#/components/schemas/MissingFields"},
            {"$ref": "#/components/schemas/InvalidFields"},
            ERROR,
        ]
    }
    return {
        "summary": "Upload an image (JSON data URI, or raw bytes with Content-Type image/*)",
        "security": [{"bearer": []}],
        "requestBody": _upload_request(settings),
        "responses": {
            "202": _accepted("stored; the ImageUpload is created"),
            "200": _accepted("the same upload was made before: the existing ImageUpload"),
            "400": refusal(
                "missing body, unparseable JSON, no `data` or no truthy `data.image` (the "
                "original's `example_body`, byte for byte); invalid fields (`errors.data`); "
                "`InvalidDataUri`, `UnsupportedFileType`, `TooManyImages`",
                bad_request,
            ),
            "401": unauthorized(),
            "403": refusal(FORBIDDEN),
            "413": refusal(
                "the image above PINSTER_MAX_BYTES (`ImageTooLarge`), or JSON fields above "
                f"{OUTLINE_LIMIT} bytes (`FieldsTooLarge`)"
            ),
            "415": refusal(
                "not a supported image (`UnsupportedImageType`), or not the declared type "
                "(`ContentTypeMismatch`)"
            ),
            "422": refusal(
                "truncated or corrupt image, or above PINSTER_MAX_PIXELS / PINSTER_MAX_FRAMES "
                "(`TruncatedImage`, `CorruptImage`, `TooManyPixels`, `TooManyFrames`)"
            ),
            "502": refusal(REFUSED),
            "503": unavailable(),
        },
    }


def _status() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "status",
            "summary": "Phase, conditions, verdict and published URLs of an upload",
            "security": [{"bearer": []}],
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": f"^{NAME.pattern}$"},
                }
            ],
            "responses": {
                "200": json_content({"$ref": "#/components/schemas/Status"}, "the upload"),
                "401": unauthorized(),
                "403": refusal(FORBIDDEN),
                "404": refusal(
                    "no such ImageUpload, or it belongs to another imageable (`NotFound`)"
                ),
                "502": refusal(REFUSED),
                "503": unavailable(),
            },
        }
    }


def _plain(operation_id: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"operationId": operation_id, "responses": responses}}


def invalid_fields(more: dict[str, str] | None = None) -> dict[str, Any]:
    """The original's ``{"errors": {"data": {field: message}}}``: the text fields'
    messages, and those of ``more`` fields a route checks too."""
    messages = {
        "name": FIELD_MESSAGE,
        "description": FIELD_MESSAGE,
        "featured": FEATURED_MESSAGE,
        **(more or {}),
    }
    data = {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {field: {"const": message} for field, message in messages.items()},
    }
    errors = {
        "type": "object",
        "additionalProperties": False,
        "required": ["data"],
        "properties": {"data": data},
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["errors"],
        "properties": {"errors": errors},
    }


def _schemas(settings: IngressSettings) -> dict[str, Any]:
    nullable_object = {"type": ["object", "null"]}
    return {
        "UploadBody": _upload_body(settings),
        "Accepted": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace", "md5", "status_url"],
            "properties": {
                "name": {"type": "string", "pattern": f"^{NAME.pattern}$"},
                "namespace": {"type": "string"},
                "md5": {"type": "string", "pattern": f"^{MD5_PATTERN}$"},
                "status_url": {"type": "string", "pattern": "^/v1/images/"},
            },
        },
        "Status": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "name",
                "namespace",
                "md5",
                "phase",
                "terminal",
                "conditions",
                "verdict",
                "published",
                "urls",
                "created",
                "completed",
            ],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "md5": {"type": "string", "pattern": f"^{MD5_PATTERN}$"},
                "phase": {"enum": [phase.value for phase in Phase]},
                "terminal": {"type": "boolean"},
                "conditions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "status", "reason", "message", "lastTransitionTime"],
                        "properties": {
                            "type": {"type": "string"},
                            "status": {"enum": ["True", "False", "Unknown"]},
                            "reason": {"type": "string"},
                            "message": {"type": "string"},
                            "lastTransitionTime": {"type": "string"},
                            "observedGeneration": {"type": "integer"},
                        },
                    },
                },
                "verdict": {
                    **nullable_object,
                    "description": "decision (Approved, Rejected), backend, threshold, labels",
                },
                "published": {
                    **nullable_object,
                    "description": "the original's and each thumbnail's key and URL",
                },
                "urls": {
                    "type": "object",
                    "description": "`original` and each `<W>x<H>` size: its public URL",
                    "additionalProperties": {"type": "string"},
                },
                "created": {"type": ["string", "null"]},
                "completed": {"type": ["string", "null"]},
            },
        },
        "Error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["error", "reason"],
            "properties": {
                "error": {"type": "string"},
                "reason": {"type": "string", "pattern": "^[A-Z][A-Za-z]*$"},
            },
        },
        # The original's bodies, byte for byte: one exact value each.
        "MissingFields": {"const": EXAMPLE_BODY},
        "InvalidFields": invalid_fields(),
    }


def document(settings: IngressSettings, routes: Sequence[BaseRoute] = ()) -> dict[str, Any]:
    """The document; ``routes`` may add the path items of contributed routes."""
    limits = settings.limits
    upload = _upload(settings)
    health = {
        "type": "object",
        "additionalProperties": False,
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    }
    readiness = {
        "type": "object",
        "additionalProperties": False,
        "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ok", "unavailable"]},
            "checks": {
                "type": "object",
                "description": "`storage`, `kubernetes`: `ok` or what failed",
                "additionalProperties": {"type": "string"},
            },
        },
    }
    paths: dict[str, Any] = {
        "/": {"post": {**upload, "operationId": "uploadLegacy"}},
        "/v1/images": {"post": {**upload, "operationId": "upload"}},
        "/v1/images/": {"post": {**upload, "operationId": "uploadTrailingSlash"}},
        "/v1/images/{name}": _status(),
        "/healthz": _plain("healthz", {"200": json_content(health, "the process serves")}),
        "/readyz": _plain(
            "readyz",
            {
                "200": json_content(readiness, "storage and API server reachable"),
                "503": json_content(readiness, "a dependency is unreachable"),
            },
        ),
        "/metrics": _plain(
            "metrics",
            {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        ),
        "/openapi.json": _plain(
            "openapi",
            {
                "200": json_content(
                    {"type": "object", "required": ["openapi", "info", "paths"]}, "this document"
                )
            },
        ),
    }
    for route in routes:
        if isinstance(route, DocumentedRoute):
            paths[route.path] = route.path_item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pinster-images upload service",
            "version": "1",
            "description": (
                f"Limits: {limits.max_bytes} bytes, {limits.max_pixels} pixels, "
                f"{limits.max_frames} frames. Tokens: RS256 from PinsterApi, "
                f"aud={settings.auth.service_url}, iss={settings.auth.api_url}. Every answer "
                "carries `Access-Control-Allow-Origin: *`. Any route answers OPTIONS with 204, "
                "`Allow` and the CORS preflight headers (no token needed), HEAD where it "
                "answers GET, and other methods with 405 and `Allow`. A 500 is a bug."
            ),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                **(
                    {"eventsToken": {"type": "http", "scheme": "bearer"}}
                    if settings.direct is not None
                    else {}
                ),
            },
            "schemas": _schemas(settings),
        },
    }


def direct_path_items(settings: IngressSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """``POST /v1/uploads`` and ``POST /v1/storage-events`` (``_direct``)."""
    from pinster_ingress._direct import (
        EXAMPLE_BODY as DIRECT_EXAMPLE,
    )
    from pinster_ingress._direct import (
        MD5_MESSAGE,
        SIZE_MESSAGE,
        TYPE_MESSAGE,
    )

    limits = settings.limits
    invalid = invalid_fields(
        {"md5": MD5_MESSAGE, "content_type": TYPE_MESSAGE, "size": SIZE_MESSAGE}
    )
    body = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "required": ["md5", "content_type", "size"],
                "properties": {
                    "md5": {"type": "string", "pattern": f"^{MD5_PATTERN}$"},
                    "content_type": {
                        "enum": list(accepted_types()),
                        "description": "the image's type, exactly (the form pins it); "
                        "another `image/*` is 415 `UnsupportedImageType`, another type 400 "
                        "`UnsupportedFileType`",
                    },
                    "size": {"type": "integer", "minimum": 1, "maximum": limits.max_bytes},
                    "name": _text_field("name"),
                    "description": _text_field("description"),
                    "featured": _featured(),
                },
            }
        },
    }
    permit = {
        "type": "object",
        "additionalProperties": False,
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "additionalProperties": False,
                "required": ["url", "fields", "key", "expires_at", "name", "status_url"],
                "properties": {
                    "url": {"type": "string", "description": "POST the form here"},
                    "fields": {
                        "type": "object",
                        "description": "form fields to send as they are, before the file "
                        "(multipart/form-data, the file last, as `file`)",
                        "additionalProperties": {"type": "string"},
                    },
                    "key": {"type": "string", "pattern": f"^raw/{MD5_PATTERN}$"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "name": {"type": "string", "pattern": f"^{NAME.pattern}$"},
                    "status_url": {"type": "string", "pattern": "^/v1/images/"},
                },
            }
        },
    }
    permit_item = {
        "post": {
            "operationId": "directUpload",
            "summary": "Permission to store an image straight in the object store",
            "description": (
                "Answers a presigned POST for `raw/<md5>`: that content type, those bytes "
                "(`Content-MD5`), 1 to PINSTER_MAX_BYTES bytes, the upload's metadata, valid "
                "for PINSTER_DIRECT_UPLOAD_EXPIRES seconds. The object store refuses a form "
                "that breaks one (expired, other key, type, size or bytes). Once stored, "
                "the upload appears at `status_url` (404 until the object store has "
                "reported the object; Rejected with the reason if it fails the checks)."
            ),
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body}},
            },
            "responses": {
                "201": json_content(permit, "the presigned POST"),
                "400": refusal(
                    "no `data` (`example_body`), invalid fields (`errors.data`), a "
                    "non-image type (`UnsupportedFileType`)",
                    {"oneOf": [{"const": DIRECT_EXAMPLE}, invalid, ERROR]},
                ),
                "401": unauthorized(),
                "403": refusal(FORBIDDEN),
                "413": refusal("`size` above PINSTER_MAX_BYTES, or a body above 1 MiB"),
                "415": refusal("an image type this service does not take"),
                "502": refusal("the object store refused to sign (a deployment problem)"),
                "503": unavailable(),
            },
        }
    }
    events_item = {
        "post": {
            "operationId": "storageEvents",
            "summary": "The object store reports stored objects (not for clients)",
            "description": (
                'An S3 event notification (`{"Records": [...]}`, as MinIO\'s webhook and '
                "AWS send it, or wrapped in an SNS notification). Each `ObjectCreated:Post` "
                "of `raw/<md5>` in the upload bucket becomes an ImageUpload, or is deleted "
                "and reported when it fails the checks; other records are ignored."
            ),
            "security": [{"eventsToken": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "Records": {"type": "array", "items": {"type": "object"}}
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["results"],
                        "properties": {"results": {"type": "array", "items": {"type": "object"}}},
                    },
                    "each record's outcome: Accepted, AlreadyExists, Rejected, Gone, Ignored",
                ),
                "400": refusal("not an S3 event notification (`InvalidEvent`)"),
                "401": refusal("no events token (`MissingToken`)"),
                "403": refusal("not the events token (`InvalidToken`)"),
                "413": refusal("a body above 1 MiB"),
                "502": refusal(REFUSED),
                "503": unavailable(),
            },
        }
    }
    return permit_item, events_item
