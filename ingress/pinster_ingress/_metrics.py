"""Prometheus metrics of the upload service, in a registry of its own per app."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Paths reported as themselves; anything else is "other" (bounded label values).
KNOWN = {
    "/": "upload",
    "/v1/images": "upload",
    "/v1/images/": "upload",
    "/healthz": "healthz",
    "/readyz": "readyz",
    "/metrics": "metrics",
    "/openapi.json": "openapi",
    "/generate": "generate",
    "/v1/uploads": "direct_upload",
    "/v1/storage-events": "storage_events",
}


def route_of(path: str) -> str:
    if path in KNOWN:
        return KNOWN[path]
    if path.startswith("/v1/images/"):
        return "status"
    return "other"


@dataclass
class Metrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        self.requests = Counter(
            "pinster_ingress_requests",
            "HTTP requests by route, status and outcome (a CamelCase reason for refusals)",
            ("route", "method", "status", "outcome"),
            registry=self.registry,
        )
        self.bytes_received = Counter(
            "pinster_ingress_received_bytes",
            "Request body bytes received on upload routes",
            registry=self.registry,
        )
        self.image_bytes = Counter(
            "pinster_ingress_image_bytes",
            "Decoded image bytes accepted",
            registry=self.registry,
        )
        self.stored_objects = Counter(
            "pinster_ingress_stored_objects",
            "Directly stored objects reported by the object store, by outcome",
            ("outcome",),
            registry=self.registry,
        )
        self.latency = Histogram(
            "pinster_ingress_request_duration_seconds",
            "Time from request start to the response's last byte",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every response; handlers put a refusal's reason in
    ``scope["state"]["outcome"]``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_of(scope.get("path", ""))
            method = scope.get("method", "GET")
            outcome = str(scope.get("state", {}).get("outcome", "ok" if status < 400 else "error"))
            self.metrics.requests.labels(route, method, str(status), outcome).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)
