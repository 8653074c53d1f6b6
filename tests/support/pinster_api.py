"""An HTTP stand-in of PinsterApi: receives the image service's notifications.

It verifies each request's RS256 JWT with the service's public key (``iss`` = the
service URL, ``aud`` = this API's URL, ``exp``/``nbf`` enforced, 10 s leeway as the
original), checks each body against the notification's JSON Schema (the operator's
``notification.schema.json``; 400 otherwise), records every request (accepted or not,
with what was wrong), and can answer 503 to the first N requests to exercise retries.
A real HTTP server on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import jwt
import pytest
from pinster_operator._notify import IMAGES_PATH, notification_schema

from tests.support.net import LOOPBACK


def _variant(name: str) -> jsonschema.Draft202012Validator:
    schema = notification_schema()
    return jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{name}"})


#: What each path must receive: the approved body on /v1/images/, the flagged notice on
#: any other path (PINSTER_FLAGGED_PATH).
VARIANTS = {"approved": _variant("approved"), "flagged": _variant("flagged")}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    claims: dict[str, Any] | None = None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class PinsterApi:
    public_key: bytes
    service_url: str
    #: Answer 503 to this many requests first (counted over all paths).
    fail_first: int = 0
    fail_status: int = 503
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _peers: set[tuple[str, int]] = field(default_factory=set)

    # -- queries --

    def accepted(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.accepted and (path is None or r.path == path)]

    def all(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    @property
    def connections(self) -> int:
        """TCP connections the requests came over."""
        with self._lock:
            return len(self._peers)

    # -- server --

    def start(self, host: str = LOOPBACK) -> PinsterApi:
        """Listen on ``host``: the node address when Pods (the operator) must reach it."""
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real API server

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                api._handle(self, raw)

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _verify(self, headers: dict[str, str]) -> tuple[dict[str, Any] | None, str | None]:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None, "missing bearer token"
        try:
            claims = jwt.decode(
                auth.removeprefix("Bearer "),
                self.public_key,
                algorithms=["RS256"],
                audience=self.url,
                issuer=self.service_url,
                leeway=10,
                options={"require": ["exp", "nbf", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return None, f"{exc.__class__.__name__}: {exc}"
        return claims, None

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        claims, error = self._verify(headers)
        kind = "approved" if handler.path == IMAGES_PATH else "flagged"
        invalid = None if error else body_error(body, kind)
        with self._lock:
            self._peers.add(handler.client_address)
            failing = sum(1 for r in self.requests if r.status == self.fail_status)
            if error is not None:
                status = 401
            elif invalid is not None:
                status, error = 400, invalid
            elif failing < self.fail_first:
                status = self.fail_status
            else:
                status = 201
            self.requests.append(
                Received("POST", handler.path, headers, body, status, claims, error)
            )
        answer = json.dumps({"error": error} if error else {"ok": status == 201}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)


def body_error(body: Any, kind: str = "approved") -> str | None:
    """What is wrong with a notification body of that kind, or None when it matches."""
    found = jsonschema.exceptions.best_match(VARIANTS[kind].iter_errors(body))
    if found is None:
        return None
    where = "/".join(str(part) for part in found.absolute_path) or "the body"
    return f"not the {kind} notification (notification.schema.json): {where}: {found.message}"


@pytest.fixture
def service_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of the image service, fresh per test."""
    from pinster_images import keys

    private = keys.generate_private_key()
    return private, keys.public_key_of(private)


@pytest.fixture
def pinster_api(service_keys: tuple[bytes, bytes]) -> Iterator[PinsterApi]:
    """On 127.0.0.1, for the operator as a test process."""
    api = PinsterApi(public_key=service_keys[1], service_url="http://images.test").start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def node_pinster_api(devcluster: Any, service_keys: tuple[bytes, bytes]) -> Iterator[PinsterApi]:
    """On the node address, for the operator in a Pod."""
    api = PinsterApi(public_key=service_keys[1], service_url="http://images.test")
    api.start(host=devcluster.node_ip)
    try:
        yield api
    finally:
        api.stop()
