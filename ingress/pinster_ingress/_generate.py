"""``GET /generate?key=<md5>_<W>x<H>``: on-demand thumbnails, as the original service had.

The public bucket redirected a missing thumbnail here; we render it from the published
original with the Jobs' engine, store it, and answer 301 to its public URL. Concurrent
requests for one key render it once (per-key single flight inside this process; across
replicas a duplicate render only rewrites identical bytes).

Answers: 301 (made now or already there), 400 ``InvalidKey`` (not ``<md5>_<W>x<H>``, a
side over 5000, ``autoxauto``), 403 ``SizeNotAllowed`` (outside
PINSTER_THUMBNAIL_ALLOWED_SIZES, as the original's allow-list answered), 404
``OriginalNotFound`` (no published original: unknown, still processing, or rejected),
422 for an original the engine refuses, 503 on storage trouble.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pinster_jobs import ThumbnailEngine, ThumbnailSettings
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pinster_images.config import Environ, ThumbnailSizes, env_list, parse_size, size_pattern
from pinster_images.errors import ConfigError, NotFoundError, PermanentError
from pinster_images.resource import MD5_PATTERN
from pinster_images.sniff import ImageLimits, ImageRejected
from pinster_images.storage import Area, Storage, thumbnail_key
from pinster_ingress._errors import error
from pinster_ingress._openapi import DocumentedRoute, refusal, unavailable

_KEY = re.compile(f"(?P<md5>{MD5_PATTERN})_(?P<size>[0-9a-z]+x[0-9a-z]+)")


@dataclass(frozen=True)
class GenerateSettings:
    #: Allowed ``<W>x<H>`` strings; empty allows every valid size.
    allowed_sizes: tuple[str, ...]
    thumbnails: ThumbnailSettings

    @classmethod
    def from_env(cls, env: Environ) -> GenerateSettings:
        allowed = env_list(env, "PINSTER_THUMBNAIL_ALLOWED_SIZES")
        for size in allowed:
            try:
                parse_size(size)
            except ValueError as exc:
                raise ConfigError(f"PINSTER_THUMBNAIL_ALLOWED_SIZES: {exc}") from None
        return cls(allowed_sizes=allowed, thumbnails=ThumbnailSettings.from_env(env))


class Generator:
    """Renders one thumbnail key from its published original, once per key at a time."""

    def __init__(
        self, storage: Storage, engine: ThumbnailEngine, allowed: tuple[str, ...] = ()
    ) -> None:
        self.storage = storage
        self.engine = engine
        self.allowed = frozenset(allowed)
        self._guard = threading.Lock()
        self._flights: dict[str, tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def _single_flight(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._flights.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._flights[key]

    def parse(self, key: str) -> tuple[str, str]:
        match = _KEY.fullmatch(key)
        if match is None:
            raise error(400, "InvalidKey", f"key {key!r} is not <md5>_<W>x<H>")
        size = match.group("size")
        try:
            parse_size(size)
        except ValueError as exc:
            raise error(400, "InvalidKey", f"key {key!r}: {exc}") from None
        if self.allowed and size not in self.allowed:
            raise error(403, "SizeNotAllowed", f"size {size} is not in the allowed sizes")
        return match.group("md5"), size

    def generate(self, key: str) -> str:
        """The public URL of ``key``, rendering and storing it first if needed."""
        md5, size = self.parse(key)
        expected = thumbnail_key(md5, size)
        with self._single_flight(expected):
            if self.storage.head(Area.PUBLIC, expected) is None:
                try:
                    original = self.storage.get(Area.PUBLIC, md5)
                except NotFoundError:
                    raise error(
                        404, "OriginalNotFound", f"no published original for {md5}"
                    ) from None
                try:
                    renditions = self.engine.render(original.data, [size])
                except ImageRejected:
                    raise
                except PermanentError as exc:  # e.g. CorruptImage: the original's fault
                    raise error(422, exc.reason, exc.message) from exc
                (rendition,) = [r for r in renditions if not r.suffix]
                self.storage.put(
                    Area.PUBLIC, expected, rendition.data, content_type=rendition.content_type
                )
        return self.storage.public_url(expected)


def path_item(allowed: tuple[str, ...]) -> dict[str, Any]:
    """``GET /generate`` in the upload service's OpenAPI document."""
    # Allowed sizes were checked at start, so they are valid sizes.
    sizes = "|".join(allowed) if allowed else size_pattern()
    key = {
        "name": "key",
        "in": "query",
        "required": True,
        "description": (
            f"`<md5>_<W>x<H>`: each side 1-{ThumbnailSizes.MAX_SIDE} or `auto`, not both `auto`"
        ),
        "schema": {"type": "string", "pattern": f"^{MD5_PATTERN}_(?:{sizes})$"},
    }
    return {
        "get": {
            "operationId": "generate",
            "summary": "The public URL of a thumbnail, rendered from the original if needed",
            "parameters": [key],
            "responses": {
                "301": {
                    "description": "the thumbnail is stored: its public URL",
                    "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
                },
                "400": refusal("`key` is not `<md5>_<W>x<H>` or names no valid size"),
                "403": refusal("the size is not in PINSTER_THUMBNAIL_ALLOWED_SIZES"),
                "404": refusal("no published original (unknown, processing, or rejected)"),
                "413": refusal("the original is above PINSTER_MAX_BYTES"),
                "415": refusal("the original is not an image this installation decodes"),
                "422": refusal("the original is corrupt or above the pixel or frame limits"),
                "502": refusal("the object store refused a request (a deployment problem)"),
                "503": unavailable(),
            },
        }
    }


def generate_route(generator: Generator, retry_after: int) -> Route:
    from pinster_ingress._app import guarded

    async def generate(request: Request) -> Response:
        key = request.query_params.get("key", "")
        url = await run_in_threadpool(generator.generate, key)
        return RedirectResponse(url, status_code=301)

    return DocumentedRoute(
        "/generate",
        guarded(generate, retry_after),
        methods=["GET"],
        path_item=path_item(tuple(sorted(generator.allowed))),
    )


def routes(service: Any) -> list[BaseRoute]:
    """Contributed to the upload service's app (``_app.optional_routes``)."""
    settings = GenerateSettings.from_env(os.environ)
    limits: ImageLimits = service.settings.limits
    engine = ThumbnailEngine(settings.thumbnails, limits)
    generator = Generator(service.storage, engine, settings.allowed_sizes)
    return [generate_route(generator, service.settings.retry_after)]
