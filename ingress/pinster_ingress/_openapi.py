"""The OpenAPI 3.1 document, written by hand to describe exactly what the handlers do."""

from __future__ import annotations

from typing import Any

from pinster_ingress._errors import EXAMPLE_BODY, FEATURED_MESSAGE, FIELD_MESSAGE
from pinster_ingress._settings import IngressSettings

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Bad Request: missing fields (example_body), invalid fields (errors.data), "
        "data URI not base64 or not image/*",
        401: "Authorization header or token missing",
        403: "token invalid (signature, algorithm, aud, iss, exp, nbf, claims)",
        404: "no such ImageUpload for this token's imageable",
        413: "image bytes above PINSTER_MAX_BYTES (or fields above 1 MiB)",
        415: "not a supported image, or the declared type disagrees with the bytes",
        422: "truncated or corrupt image, or above PINSTER_MAX_PIXELS / PINSTER_MAX_FRAMES",
        502: "the API server refused the ImageUpload (configuration problem)",
        503: "storage or API server unavailable; retry after Retry-After seconds",
    }
    out: dict[str, Any] = {}
    for status in statuses:
        schema: dict[str, Any] = _ERROR
        if status == 400:
            schema = {
                "oneOf": [
                    _ERROR,
                    {"$ref": "#/components/schemas/MissingFields"},
                    {"$ref": "#/components/schemas/InvalidFields"},
                ]
            }
        out[str(status)] = _json(schema, texts[status])
        if status == 503:
            out["503"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


def document(settings: IngressSettings) -> dict[str, Any]:
    limits = settings.limits
    field = {"type": ["string", "null"], "description": FIELD_MESSAGE}
    upload_request = {
        "required": False,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/UploadBody"}},
            "image/*": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "raw form: the body is the image",
                },
            },
        },
    }
    raw_params = [
        {
            "name": key,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": f"raw form only: {key} (or header X-Pinster-{key.title()})",
        }
        for key in ("name", "description", "featured")
    ]
    upload = {
        "summary": "Upload an image (JSON data URI, or raw bytes with Content-Type image/*)",
        "security": [{"bearer": []}],
        "parameters": raw_params,
        "requestBody": upload_request,
        "responses": {
            "202": {
                **_json({"$ref": "#/components/schemas/Accepted"}, "stored; ImageUpload created"),
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            "200": _json(
                {"$ref": "#/components/schemas/Accepted"},
                "the same upload was made before: the existing ImageUpload",
            ),
            **_errors(400, 401, 403, 413, 415, 422, 502, 503),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pinster-images upload service",
            "version": "1",
            "description": (
                f"Limits: {limits.max_bytes} bytes, {limits.max_pixels} pixels, "
                f"{limits.max_frames} frames. Tokens: RS256 from PinsterApi, "
                f"aud={settings.auth.service_url}, iss={settings.auth.api_url}."
            ),
        },
        "paths": {
            "/": {"post": {**upload, "operationId": "uploadLegacy"}},
            "/v1/images": {"post": {**upload, "operationId": "upload"}},
            "/v1/images/{name}": {
                "get": {
                    "operationId": "status",
                    "summary": "Phase, conditions, verdict and published URLs of an upload",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Status"}, "the upload"),
                        **_errors(401, 403, 404, 502, 503),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "responses": {"200": _json({"type": "object"}, "the process is serving")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "responses": {
                        "200": _json({"type": "object"}, "storage and API server reachable"),
                        "503": _json({"type": "object"}, "a dependency is unreachable"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {
                "UploadBody": {
                    "type": "object",
                    "properties": {
                        "data": {
                            "type": "object",
                            "required": ["image"],
                            "properties": {
                                "image": {
                                    "type": "string",
                                    "description": "data:image/<type>;base64,<payload>",
                                },
                                "name": field,
                                "description": field,
                                "featured": {
                                    "type": ["string", "null"],
                                    "maxLength": 64,
                                    "description": FEATURED_MESSAGE,
                                },
                            },
                        }
                    },
                    "required": ["data"],
                },
                "Accepted": {
                    "type": "object",
                    "required": ["name", "namespace", "md5", "status_url"],
                    "properties": {
                        "name": {"type": "string"},
                        "namespace": {"type": "string"},
                        "md5": {"type": "string"},
                        "status_url": {"type": "string"},
                    },
                },
                "Status": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "namespace": {"type": "string"},
                        "md5": {"type": "string"},
                        "phase": {"type": "string"},
                        "terminal": {"type": "boolean"},
                        "conditions": {"type": "array", "items": {"type": "object"}},
                        "verdict": {"type": ["object", "null"]},
                        "published": {"type": ["object", "null"]},
                        "urls": {"type": "object", "additionalProperties": {"type": "string"}},
                        "created": {"type": ["string", "null"]},
                        "completed": {"type": ["string", "null"]},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
                },
                "MissingFields": {
                    "type": "object",
                    "example": EXAMPLE_BODY,
                    "required": ["error", "example_body"],
                },
                "InvalidFields": {
                    "type": "object",
                    "required": ["errors"],
                    "properties": {"errors": {"type": "object"}},
                },
            },
        },
    }
