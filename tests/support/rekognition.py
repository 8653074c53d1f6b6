"""An HTTP stand-in for AWS Rekognition's ``DetectModerationLabels`` (awsJson1_1).

boto3 talks to it through ``endpoint_url``, exactly as to the real service: POST with
``X-Amz-Target: RekognitionService.DetectModerationLabels`` and a JSON body whose
``Image.Bytes`` is base64. Like the service it refuses bytes that are not JPEG/PNG
(``InvalidImageFormatException``) or exceed 5 MiB (``ImageTooLargeException``).

Answers are configured per test::

    rekognition.approve()
    rekognition.reject([{"Name": "Explicit Nudity", "Confidence": 99.6}])
    rekognition.throttle(2)          # ThrottlingException twice, then the answer above

Fixture ``rekognition`` (per test; register ``tests.support.rekognition`` as a pytest
plugin) yields a started :class:`RekognitionStandIn`; ``.env`` holds the PINSTER_* and
AWS_* variables for a Job process.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.net import LOOPBACK

TARGET = "RekognitionService.DetectModerationLabels"
MAX_BYTES = 5 * 1024 * 1024
MODEL_VERSION = "7.0"
CONTENT_TYPE = "application/x-amz-json-1.1"


@dataclass
class Received:
    target: str
    min_confidence: float | None
    image: bytes
    authorized: bool


@dataclass
class RekognitionStandIn:
    labels: list[dict[str, Any]] = field(default_factory=list)
    throttles_left: int = 0
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- configuration --------------------------------------------------------------
    def approve(self) -> None:
        self.labels = []

    def reject(self, labels: list[dict[str, Any]] | None = None) -> None:
        self.labels = labels or [
            {"Name": "Explicit Nudity", "ParentName": "", "Confidence": 99.7, "TaxonomyLevel": 1},
            {
                "Name": "Graphic Female Nudity",
                "ParentName": "Explicit Nudity",
                "Confidence": 99.4,
                "TaxonomyLevel": 2,
            },
        ]

    def throttle(self, times: int) -> None:
        self.throttles_left = times

    # --- server ---------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PINSTER_MODERATION_BACKEND": "rekognition",
            "PINSTER_REKOGNITION_ENDPOINT_URL": self.endpoint_url,
            "PINSTER_REKOGNITION_REGION": "us-east-1",
        }

    def answer(self, target: str, body: dict[str, Any], authorized: bool) -> tuple[int, Any]:
        image = base64.b64decode(body.get("Image", {}).get("Bytes", ""))
        minimum = body.get("MinConfidence")
        with self._lock:
            self.requests.append(Received(target, minimum, image, authorized))
            if target != TARGET:
                return 400, {"__type": "UnknownOperationException", "message": target}
            if self.throttles_left > 0:
                self.throttles_left -= 1
                return 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
            labels = list(self.labels)
        if len(image) > MAX_BYTES:
            return 400, {"__type": "ImageTooLargeException", "message": "Image too large"}
        if not (image.startswith(b"\xff\xd8\xff") or image.startswith(b"\x89PNG\r\n\x1a\n")):
            return 400, {"__type": "InvalidImageFormatException", "message": "Bad format"}
        threshold = 50.0 if minimum is None else float(minimum)
        chosen = [label for label in labels if float(label["Confidence"]) >= threshold]
        return 200, {"ModerationLabels": chosen, "ModerationModelVersion": MODEL_VERSION}

    def start(self, host: str = LOOPBACK) -> RekognitionStandIn:
        """Listen on ``host``: the node address when Job Pods must reach it. Any AWS
        credentials sign the requests (the process's own, e.g. the object store's)."""
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                authorized = "AWS4-HMAC-SHA256" in self.headers.get("Authorization", "")
                status, answer = stand_in.answer(
                    self.headers.get("X-Amz-Target", ""), body, authorized
                )
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def rekognition() -> Iterator[RekognitionStandIn]:
    server = RekognitionStandIn().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def node_rekognition(devcluster: Any) -> Iterator[RekognitionStandIn]:
    """On the node address, for moderation Jobs in Pods."""
    server = RekognitionStandIn().start(host=devcluster.node_ip)
    try:
        yield server
    finally:
        server.stop()
