"""The object store's website front (Caddy before MinIO) on the node address: anonymous
reads of what the service publishes, and the bucket rule that sends a missing key to
``GET /generate``. The end-to-end path through the service is in tests/e2e/test_chart.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from pinster_images.storage import CACHE_CONTROL, Area, StorageSettings
from tests.support.s3 import S3Server


@pytest.fixture
def public_bucket(s3_env: dict[str, str], devcluster: Any) -> Iterator[str]:
    bucket = s3_env["PINSTER_S3_PUBLIC_BUCKET"]
    yield bucket
    devcluster.set_website_redirect(bucket, None)


def test_published_objects_are_read_anonymously_with_their_headers(
    s3_env: dict[str, str], public_bucket: str
) -> None:
    storage = StorageSettings.from_env(s3_env).open()
    storage.put(Area.PUBLIC, "a" * 32, b"\xff\xd8jpeg", content_type="image/jpeg")
    url = storage.public_url("a" * 32)
    assert url == f"{s3_env['PINSTER_PUBLIC_URL']}/{'a' * 32}"

    got = requests.get(url, timeout=10)
    assert (got.status_code, got.content) == (200, b"\xff\xd8jpeg")
    assert got.headers["Content-Type"] == "image/jpeg"
    assert got.headers["Cache-Control"] == CACHE_CONTROL
    head = requests.head(url, timeout=10)
    assert (head.status_code, head.content, head.headers["Content-Length"]) == (200, b"", "6")


def test_it_is_read_only(s3_env: dict[str, str], public_bucket: str) -> None:
    url = f"{s3_env['PINSTER_PUBLIC_URL']}/{'b' * 32}"
    for method in ("PUT", "DELETE", "POST"):
        answer = requests.request(method, url, data=b"x", timeout=10)
        assert answer.status_code == 405, method
        assert answer.headers["Allow"] == "GET, HEAD"
    listing = requests.get(s3_env["PINSTER_PUBLIC_URL"], timeout=10)
    assert listing.status_code == 403  # anonymous readers may not list the bucket


def test_without_a_rule_a_missing_key_is_the_store_s_own_answer(
    s3_env: dict[str, str], public_bucket: str
) -> None:
    missing = requests.get(f"{s3_env['PINSTER_PUBLIC_URL']}/{'c' * 32}_64x64", timeout=10)
    assert missing.status_code == 404
    assert b"NoSuchKey" in missing.content
    assert "Location" not in missing.headers


def test_a_rule_redirects_missing_keys_of_its_bucket_only(
    s3_env: dict[str, str], public_bucket: str, devcluster: Any, s3_server: S3Server
) -> None:
    storage = StorageSettings.from_env(s3_env).open()
    storage.put(Area.PUBLIC, "d" * 32, b"original", content_type="image/png")
    devcluster.set_website_redirect(public_bucket, "http://images.test/generate")
    base = s3_env["PINSTER_PUBLIC_URL"]

    missing = requests.get(f"{base}/{'d' * 32}_64x64", allow_redirects=False, timeout=10)
    assert missing.status_code == 307
    assert missing.headers["Location"] == f"http://images.test/generate?key={'d' * 32}_64x64"
    assert missing.headers["Cache-Control"] == "no-store"  # it exists a moment later
    head = requests.head(f"{base}/{'d' * 32}_64x64", allow_redirects=False, timeout=10)
    assert head.status_code == 307
    present = requests.get(f"{base}/{'d' * 32}", allow_redirects=False, timeout=10)
    assert (present.status_code, present.content) == (200, b"original")
    # Other buckets (here the cluster's own) keep the store's answer.
    other = requests.get(
        f"{s3_server.endpoint.public_url()}/{'d' * 32}_64x64", allow_redirects=False, timeout=10
    )
    assert other.status_code == 404

    # The rule is kept with the cluster's state, and removed on request.
    rules = json.loads((devcluster.state_dir / "node" / "website" / "rules.json").read_text())
    assert rules[public_bucket] == "http://images.test/generate"
    devcluster.set_website_redirect(public_bucket, None)
    gone = requests.get(f"{base}/{'d' * 32}_64x64", allow_redirects=False, timeout=10)
    assert gone.status_code == 404
