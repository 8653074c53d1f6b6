"""``GET /generate?key=...`` over real HTTP (uvicorn on 127.0.0.1) with local storage."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from PIL import Image
from pinster_ingress._generate import Generator, generate_route, routes
from pinster_jobs import ThumbnailEngine, ThumbnailSettings
from starlette.applications import Starlette

from pinster_images.sniff import ImageLimits
from pinster_images.storage import CACHE_CONTROL, Area
from tests.support import images
from tests.support.serving import serve
from tests.support.storage import DirectoryStorage

PUBLIC = "https://img.example.test"


@pytest.fixture
def storage(tmp_path: Path) -> DirectoryStorage:
    return DirectoryStorage(tmp_path / "store", PUBLIC)


def publish_original(storage: DirectoryStorage, data: bytes, md5: str = "a" * 32) -> str:
    storage.put(Area.PUBLIC, md5, data, content_type="image/jpeg")
    return md5


@pytest.fixture
def url(storage: DirectoryStorage, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("PINSTER_THUMBNAIL_ALLOWED_SIZES", "400xauto,200x200,100x100")
    service = SimpleNamespace(
        storage=storage, settings=SimpleNamespace(limits=ImageLimits(), retry_after=5)
    )
    with serve(Starlette(routes=routes(service))) as base:
        yield base


def get(url: str, key: str) -> requests.Response:
    return requests.get(f"{url}/generate", params={"key": key}, allow_redirects=False, timeout=30)


def test_generates_and_redirects(url: str, storage: DirectoryStorage) -> None:
    md5 = publish_original(storage, images.oriented_jpeg(6, 800, 600))
    answer = get(url, f"{md5}_400xauto")
    assert answer.status_code == 301
    assert answer.headers["location"] == f"{PUBLIC}/{md5}_400xauto"
    stored = storage.get(Area.PUBLIC, f"{md5}_400xauto")
    assert stored.info.content_type == "image/jpeg"
    assert stored.info.cache_control == CACHE_CONTROL
    assert Image.open(io.BytesIO(stored.data)).size == (400, 300)
    again = get(url, f"{md5}_400xauto")  # already there: straight redirect
    assert again.status_code == 301 and again.headers["location"] == answer.headers["location"]


@pytest.mark.parametrize(
    ("key", "status", "reason"),
    [
        ("not-a-key", 400, "InvalidKey"),
        ("a" * 32 + "_400x", 400, "InvalidKey"),
        ("a" * 32 + "_autoxauto", 400, "InvalidKey"),
        ("a" * 32 + "_6000x100", 400, "InvalidKey"),
        ("../" + "a" * 32 + "_200x200", 400, "InvalidKey"),
        ("a" * 32 + "_300x300", 403, "SizeNotAllowed"),
        ("b" * 32 + "_200x200", 404, "OriginalNotFound"),
    ],
)
def test_bad_keys_and_unknown_originals(url: str, key: str, status: int, reason: str) -> None:
    answer = get(url, key)
    assert answer.status_code == status
    assert answer.json()["reason"] == reason
    assert answer.json()["error"]


def test_corrupt_original_is_422(url: str, storage: DirectoryStorage) -> None:
    md5 = publish_original(storage, images.lying_png(), "c" * 32)
    answer = get(url, f"{md5}_100x100")
    assert answer.status_code == 422 and answer.json()["reason"] == "CorruptImage"


class CountingEngine(ThumbnailEngine):
    def __init__(self) -> None:
        super().__init__(ThumbnailSettings(), ImageLimits())
        self.calls = 0
        self.entered = threading.Event()

    def render(self, data: bytes, sizes: Any) -> Any:
        self.calls += 1
        self.entered.set()
        return super().render(data, sizes)


def test_concurrent_requests_for_one_key_render_once(storage: DirectoryStorage) -> None:
    md5 = publish_original(storage, images.photo_jpeg(3000, 2000))
    engine = CountingEngine()
    generator = Generator(storage, engine)
    with ThreadPoolExecutor(max_workers=8) as pool:
        urls = list(pool.map(lambda _: generator.generate(f"{md5}_200x200"), range(16)))
    assert set(urls) == {f"{PUBLIC}/{md5}_200x200"}
    assert engine.calls == 1
    # Different keys do not wait for each other's lock (the flights table is cleaned).
    generator.generate(f"{md5}_100x100")
    assert engine.calls == 2 and generator._flights == {}


def test_concurrent_http_requests_render_once(storage: DirectoryStorage) -> None:
    md5 = publish_original(storage, images.photo_jpeg(3000, 2000))
    engine = CountingEngine()
    generator = Generator(storage, engine)
    app = Starlette(routes=[generate_route(generator, retry_after=5)])
    with serve(app) as base, ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: get(base, f"{md5}_200x200"), range(8)))
    assert {a.status_code for a in answers} == {301}
    assert engine.calls == 1
