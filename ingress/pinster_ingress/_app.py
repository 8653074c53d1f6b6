"""The ASGI app: routes, and the one place where failures become HTTP answers."""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pinster_images.errors import PermanentError, PinsterError, TemporaryError
from pinster_images.fields import InvalidFields
from pinster_images.sniff import ImageRejected
from pinster_images.storage import Storage
from pinster_ingress import _kube
from pinster_ingress._auth import Claims, TokenVerifier
from pinster_ingress._errors import HttpError, error, invalid_fields, unavailable
from pinster_ingress._intake import FIELD_HEADERS, Intake
from pinster_ingress._metrics import Metrics, MetricsMiddleware
from pinster_ingress._openapi import document as openapi_document
from pinster_ingress._settings import IngressSettings
from pinster_ingress._status import NAME, own_name, rejected_body, status_body

log = logging.getLogger("pinster_ingress")

#: The original answered every request with these (browsers call it directly).
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"}
#: Request headers a browser may send cross-origin (answered to a CORS preflight).
PREFLIGHT_HEADERS = ", ".join(
    ["Authorization", "Content-Type", *map(str.title, FIELD_HEADERS.values())]
)

Handler = Callable[[Request], Awaitable[Response]]


class ImageJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def _failure(request: Request, exc: Exception, retry_after: int) -> Response:
    """Every refusal and failure, mapped once."""
    if isinstance(exc, InvalidFields):
        exc = invalid_fields(exc.errors)
    if isinstance(exc, HttpError):
        status, body, reason, headers = exc.status, exc.body, exc.reason, exc.headers
    elif isinstance(exc, ImageRejected):
        status, reason, headers = exc.status, exc.reason, {}
        body = {"error": exc.message, "reason": exc.reason}
    elif isinstance(exc, TemporaryError):
        failure = unavailable(exc.reason, exc.message, retry_after)
        status, body, reason, headers = 503, failure.body, failure.reason, failure.headers
    elif isinstance(exc, ClientDisconnect):
        # Nobody is left to read it; counted, not logged as a failure of ours.
        status, reason, headers = 400, "ClientDisconnected", {}
        body = {"error": "the client went away before the body was complete", "reason": reason}
    elif isinstance(exc, PermanentError | PinsterError):
        # Refused by a backend (RBAC, a schema we violated): not the client's fault.
        status, reason, headers = 502, exc.reason, {}
        body = {"error": exc.message, "reason": exc.reason}
    else:
        log.exception("unexpected failure on %s %s", request.method, request.url.path)
        status, reason, headers = 500, "InternalError", {}
        body = {"error": "Internal Server Error", "reason": reason}
    if status >= 500:
        log.warning("%s %s -> %d %s", request.method, request.url.path, status, reason)
    request.scope.setdefault("state", {})["outcome"] = reason
    return ImageJSONResponse(body, status_code=status, headers={**CORS, **headers})


def guarded(handler: Handler, retry_after: int) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            response = await handler(request)
        except Exception as exc:
            return _failure(request, exc, retry_after)
        response.headers.update(CORS)
        return response

    endpoint.__name__ = handler.__name__
    return endpoint


class Service:
    """The handlers, bound to their collaborators."""

    def __init__(
        self,
        settings: IngressSettings,
        storage: Storage,
        uploads: _kube.ImageUploads,
        verifier: TokenVerifier,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.uploads = uploads
        self.verifier = verifier
        self.metrics = metrics
        self.intake = Intake(settings, storage, uploads, metrics)
        self.contributed = optional_routes(self)
        if settings.direct is not None:
            from pinster_ingress import _direct

            self.contributed += _direct.routes(self, settings.direct)
        # Settings are read once, so the document is built once.
        self.document = openapi_document(settings, self.contributed)

    async def claims(self, request: Request) -> Claims:
        header = request.headers.get("authorization")
        if self.verifier.blocking:
            return await run_in_threadpool(self.verifier.verify, header)
        return self.verifier.verify(header)

    async def upload(self, request: Request) -> Response:
        claims = await self.claims(request)
        received = await self.intake.read(request)
        try:
            accepted = await self.intake.accept(claims, received)
        finally:
            received.image.close()
        request.scope.setdefault("state", {})["outcome"] = (
            "Accepted" if accepted.created else "AlreadyExists"
        )
        return ImageJSONResponse(
            accepted.body(),
            status_code=202 if accepted.created else 200,
            headers={"Location": accepted.status_url},
        )

    async def status(self, request: Request) -> Response:
        claims = await self.claims(request)
        name = request.path_params["name"]
        namespace = self.settings.namespace
        found = await _kube.get(self.uploads, namespace, name) if NAME.fullmatch(name) else None
        if found is None and own_name(name, claims):
            # A directly stored object that failed its checks: reported by an Event.
            rejection = await run_in_threadpool(self.uploads.rejection, namespace, name)
            if rejection is not None:
                return ImageJSONResponse(rejected_body(name, namespace, rejection))
        uploader = ((found or {}).get("spec") or {}).get("uploader") or {}
        # Only the imageable the token speaks for may read it; others learn nothing.
        if found is None or (uploader.get("imageableType"), uploader.get("imageableId")) != (
            claims.imageable_type,
            claims.imageable_id,
        ):
            raise error(404, "NotFound", f"ImageUpload {name} not found")
        return ImageJSONResponse(status_body(found, self.storage))

    async def healthz(self, request: Request) -> Response:
        return ImageJSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        checks: dict[str, str] = {}
        for check, call in (("storage", self.storage.check), ("kubernetes", self.uploads.ping)):
            try:
                await run_in_threadpool(call)
                checks[check] = "ok"
            except Exception as exc:
                checks[check] = str(exc) or type(exc).__name__
        ready = all(value == "ok" for value in checks.values())
        return ImageJSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def metrics_endpoint(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return ImageJSONResponse(self.document)

    def routes(self) -> list[BaseRoute]:
        """The route list, with those other parts contribute (``/generate``)."""
        retry = self.settings.retry_after
        routes: list[BaseRoute] = [
            Route("/", guarded(self.upload, retry), methods=["POST"]),
            Route("/v1/images", guarded(self.upload, retry), methods=["POST"]),
            Route("/v1/images/", guarded(self.upload, retry), methods=["POST"]),
            Route("/v1/images/{name}", guarded(self.status, retry), methods=["GET"]),
            Route("/healthz", guarded(self.healthz, retry), methods=["GET"]),
            Route("/readyz", guarded(self.readyz, retry), methods=["GET"]),
            Route("/metrics", guarded(self.metrics_endpoint, retry), methods=["GET"]),
            Route("/openapi.json", guarded(self.openapi, retry), methods=["GET"]),
        ]
        return routes + self.contributed


def optional_routes(service: Service) -> list[BaseRoute]:
    """Routes other parts contribute: ``pinster_ingress._generate.routes(service)``."""
    try:
        generate = importlib.import_module("pinster_ingress._generate")
    except ModuleNotFoundError as exc:
        if exc.name != "pinster_ingress._generate":
            raise
        return []
    contributed: Sequence[BaseRoute] = generate.routes(service)
    return list(contributed)


def _routing_refusal(request: Request, reason: str, status: int, **headers: str) -> Response:
    return ImageJSONResponse(
        {"error": f"{request.method} {request.url.path}: {reason}", "reason": reason},
        status_code=status,
        headers={**CORS, **headers},
    )


async def not_found(request: Request, exc: Exception) -> Response:
    return _routing_refusal(request, "NotFound", 404)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 with ``Allow`` (Starlette's route names its methods; HEAD comes with GET); an
    OPTIONS request is answered here too: 204, ``Allow`` and the CORS preflight headers,
    without a token, since a browser sends the preflight without credentials."""
    headers = exc.headers if isinstance(exc, HTTPException) and exc.headers else {}
    methods = {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()}
    allow = ", ".join(sorted(methods | {"OPTIONS"}))
    if request.method == "OPTIONS":
        preflight = {
            "Allow": allow,
            "Access-Control-Allow-Methods": allow,
            "Access-Control-Allow-Headers": PREFLIGHT_HEADERS,
        }
        return Response(status_code=204, headers={**CORS, **preflight})
    return _routing_refusal(request, "MethodNotAllowed", 405, Allow=allow)


def create_app(
    settings: IngressSettings,
    *,
    storage: Storage | None = None,
    uploads: _kube.ImageUploads | None = None,
    verifier: TokenVerifier | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    """The app; collaborators default to the ones the settings describe."""
    if storage is None:
        storage = settings.storage.open()
    if uploads is None:
        from pinster_images.kube import api_client

        uploads = _kube.KubeImageUploads(api_client(settings.kubeconfig), settings.kube_timeout)
    metrics = metrics or Metrics()
    service = Service(settings, storage, uploads, verifier or TokenVerifier(settings.auth), metrics)

    app = Starlette(
        routes=service.routes(),
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.service = service
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def app_from_env() -> Starlette:
    """The app as each server process builds it (``uvicorn --factory``): worker processes
    start from nothing, so they read the settings and set up logging themselves."""
    from pinster_images import logs
    from pinster_images.config import environ

    settings = IngressSettings.from_env(environ())
    logs.setup(settings.log_level, settings.log_format)
    return create_app(settings)
