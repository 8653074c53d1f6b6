"""Direct-to-storage uploads in-process: ``POST /v1/uploads`` (the permission and every
refusal) and ``POST /v1/storage-events`` (what a stored object becomes). The presigned
POST itself and the object store's events meet MinIO in
tests/integration/test_direct_uploads.py."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pinster_ingress import create_app
from pinster_ingress._settings import DirectUploadSettings, IngressSettings

from pinster_images import resource
from pinster_images.config import Secret
from pinster_images.errors import ConfigError
from pinster_images.sniff import ImageLimits
from pinster_images.storage import Area
from tests.support import images
from tests.support import ingress as si
from tests.support.storage import STORAGE_ENV, DirectoryStorage

PAIR = si.key_pair()
TOKEN = "events-token-0123456789"
NS = "uploads"


class Harness:
    def __init__(self, tmp_path: Path, limits: ImageLimits | None = None) -> None:
        self.uploads = si.FakeUploads()
        direct = DirectUploadSettings(events_token=Secret(TOKEN), expires_in=120)
        self.settings = si.settings(
            tmp_path / "store", PAIR.public, limits=limits, namespace=NS, direct=direct
        )
        self.storage = DirectoryStorage(tmp_path / "store")
        self.app = create_app(self.settings, storage=self.storage, uploads=self.uploads)
        self.client = si.client(self.app)

    def permit(self, data: Any, **claims: Any) -> Any:
        return self.client.post(
            "/v1/uploads", json={"data": data}, headers=si.bearer(PAIR, **claims)
        )

    def store(self, data: bytes, md5: str | None = None, **metadata: str) -> str:
        """An object as a presigned POST leaves it: key, type, metadata of the uploader."""
        md5 = md5 or hashlib.md5(data).hexdigest()
        meta = {**si.CLAIMS, "base_file_name": md5, **metadata}
        self.storage.put(Area.UPLOAD, f"raw/{md5}", data, content_type="image/jpeg", metadata=meta)
        return f"raw/{md5}"

    def event(self, *keys: str, name: str = "s3:ObjectCreated:Post", token: str = TOKEN) -> Any:
        bucket = self.storage.bucket(Area.UPLOAD)
        body = {"EventName": name, "Records": [record(key, bucket, name) for key in keys]}
        return self.client.post(
            "/v1/storage-events", json=body, headers={"Authorization": f"Bearer {token}"}
        )


def record(key: str, bucket: str, name: str = "s3:ObjectCreated:Post") -> dict[str, Any]:
    return {"eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield Harness(tmp_path)


def described(data: bytes = b"", **overrides: Any) -> dict[str, Any]:
    data = data or images.jpeg()
    return {
        "md5": hashlib.md5(data).hexdigest(),
        "content_type": "image/jpeg",
        "size": len(data),
        **overrides,
    }


# --- POST /v1/uploads ----------------------------------------------------------------


def test_permit_pins_key_type_bytes_size_and_metadata(h: Harness) -> None:
    data = images.jpeg()
    md5 = hashlib.md5(data).hexdigest()
    response = h.permit(described(data, name="Summer pin", featured="2024-05-01T10:00:00Z"))
    assert response.status_code == 201, response.text
    answer = response.json()["data"]
    name = resource.upload_name(md5, "Pin", "42")
    assert answer["key"] == f"raw/{md5}"
    assert answer["name"] == name
    assert answer["status_url"] == f"/v1/images/{name}"
    assert answer["expires_at"].endswith("Z")
    (asked,) = h.storage.posted
    assert asked["key"] == f"raw/{md5}"
    assert asked["Content-Type"] == "image/jpeg"
    assert asked["Content-MD5"] == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert asked["max_bytes"] == h.settings.limits.max_bytes
    assert asked["expires_in"] == 120
    # What POST / stores, so both paths leave the same object.
    assert {k: v for k, v in asked.items() if k.startswith("x-amz-meta-")} == {
        "x-amz-meta-user_id": "user-1",
        "x-amz-meta-imageable_type": "Pin",
        "x-amz-meta-imageable_id": "42",
        "x-amz-meta-name": "Summer pin",
        "x-amz-meta-featured": "2024-05-01T10:00:00Z",
        "x-amz-meta-base_file_name": md5,
    }
    assert answer["fields"] == {
        k: v for k, v in asked.items() if k not in ("max_bytes", "expires_in")
    }


def test_permit_takes_exactly_the_types_it_names(h: Harness) -> None:
    response = h.permit(described(content_type="image/jpeg; charset=x"))
    assert (response.status_code, response.json()["reason"]) == (415, "UnsupportedImageType")
    assert "image/jpeg" in response.json()["error"]


@pytest.mark.parametrize("payload", [None, {}, [], "text"])
def test_permit_without_data_shows_the_example(h: Harness, payload: Any) -> None:
    response = h.client.post("/v1/uploads", json=payload, headers=si.bearer(PAIR))
    assert response.status_code == 400
    assert response.json()["example_body"]["data"]["md5"] == "md5 of the image, hex"


def test_permit_names_every_wrong_field_at_once(h: Harness) -> None:
    response = h.permit({"md5": "ABC", "content_type": 5, "size": True, "name": "ab"})
    assert response.status_code == 400
    errors = response.json()["errors"]["data"]
    assert set(errors) == {"md5", "content_type", "size", "name"}
    assert errors["name"].startswith("Must be between 3 and 140")
    assert not h.storage.posted


@pytest.mark.parametrize(
    ("content_type", "status", "reason"),
    [("text/plain", 400, "UnsupportedFileType"), ("image/tiff", 415, "UnsupportedImageType")],
)
def test_permit_refuses_types_it_does_not_take(
    h: Harness, content_type: str, status: int, reason: str
) -> None:
    response = h.permit(described(content_type=content_type))
    assert (response.status_code, response.json().get("reason")) == (status, reason)


def test_permit_refuses_a_size_above_the_limit(tmp_path: Path) -> None:
    h = Harness(tmp_path, limits=ImageLimits(max_bytes=1000))
    response = h.permit(described(size=1001))
    assert (response.status_code, response.json()["reason"]) == (413, "ImageTooLarge")


def test_permit_needs_a_token(h: Harness) -> None:
    response = h.client.post("/v1/uploads", json={"data": described()})
    assert response.status_code == 401


def test_routes_are_absent_unless_enabled(tmp_path: Path) -> None:
    settings = si.settings(tmp_path / "store", PAIR.public)
    app = create_app(settings, storage=DirectoryStorage(tmp_path / "s"), uploads=si.FakeUploads())
    client = si.client(app)
    assert client.post("/v1/uploads", json={}).status_code == 404
    assert "/v1/uploads" not in client.get("/openapi.json").json()["paths"]


def test_document_describes_both_routes(h: Harness) -> None:
    paths = h.client.get("/openapi.json").json()["paths"]
    assert paths["/v1/uploads"]["post"]["security"] == [{"bearer": []}]
    assert paths["/v1/storage-events"]["post"]["security"] == [{"eventsToken": []}]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PINSTER_DIRECT_UPLOADS": "true"}, "PINSTER_STORAGE_EVENTS_TOKEN"),
        (
            {"PINSTER_DIRECT_UPLOADS": "true", "PINSTER_STORAGE_EVENTS_TOKEN": "short"},
            "PINSTER_STORAGE_EVENTS_TOKEN",
        ),
        (
            {
                "PINSTER_DIRECT_UPLOADS": "true",
                "PINSTER_STORAGE_EVENTS_TOKEN": TOKEN,
                "PINSTER_DIRECT_UPLOAD_EXPIRES": "86400",
            },
            "PINSTER_DIRECT_UPLOAD_EXPIRES",
        ),
    ],
)
def test_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    base = {
        **STORAGE_ENV,
        "PINSTER_SERVICE_URL": si.SERVICE_URL,
        "PINSTER_API_URL": si.API_URL,
        "PINSTER_API_PUBLIC_KEY": PAIR.public.decode(),
    }
    with pytest.raises(ConfigError, match=variable):
        IngressSettings.from_env({**base, **env})


# --- POST /v1/storage-events ---------------------------------------------------------


def test_a_posted_object_becomes_its_upload_once(h: Harness) -> None:
    data = images.jpeg(width=64, height=48)
    key = h.store(data, name="Summer pin")
    first = h.event(key)
    assert first.status_code == 200, first.text
    (result,) = first.json()["results"]
    md5 = key.removeprefix("raw/")
    name = resource.upload_name(md5, "Pin", "42")
    assert (result["outcome"], result["name"]) == ("Accepted", name)
    created = h.uploads.objects[(NS, name)]
    assert created["metadata"]["labels"][resource.LABEL_COMPONENT] == "direct"
    spec = created["spec"]
    assert (spec["md5"], spec["width"], spec["height"], spec["byteSize"]) == (
        md5,
        64,
        48,
        len(data),
    )
    assert spec["uploader"] == {"userId": "user-1", "imageableType": "Pin", "imageableId": "42"}
    assert spec["name"] == "Summer pin"
    # The object store sends an event again (its retry): nothing new.
    assert h.event(key).json()["results"][0]["outcome"] == "AlreadyExists"
    assert len(h.uploads.objects) == 1
    status = h.client.get(f"/v1/images/{name}", headers=si.bearer(PAIR))
    assert status.json()["phase"] == "Pending"


@pytest.mark.parametrize(
    ("event", "prefix"),
    [
        ("s3:ObjectCreated:Put", "raw/"),
        ("s3:ObjectRemoved:Delete", "raw/"),
        ("s3:ObjectCreated:Post", ""),
    ],
)
def test_other_records_are_ignored(h: Harness, event: str, prefix: str) -> None:
    data = images.jpeg()
    key = h.store(data)
    response = h.event(prefix + key.removeprefix("raw/"), name=event)
    assert response.json()["results"][0]["outcome"] == "Ignored"
    assert not h.uploads.objects
    assert h.storage.exists(Area.UPLOAD, key)


def test_another_bucket_is_ignored(h: Harness) -> None:
    key = h.store(images.jpeg())
    body = {"Records": [record(key, "someone-elses-bucket")]}
    response = h.client.post(
        "/v1/storage-events", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.json()["results"][0]["outcome"] == "Ignored"
    assert not h.uploads.objects


def rejected(h: Harness, key: str, reason: str) -> None:
    (result,) = h.event(key).json()["results"]
    assert (result["outcome"], result["reason"]) == ("Rejected", reason), result
    assert not h.storage.exists(Area.UPLOAD, key)
    assert not h.uploads.objects


def test_bytes_that_are_not_the_keys_md5_are_deleted_and_reported(h: Harness) -> None:
    wrong = "0" * 32
    key = h.store(images.jpeg(), md5=wrong)
    rejected(h, key, "Md5Mismatch")
    name = resource.upload_name(wrong, "Pin", "42")
    assert h.uploads.rejections[(NS, name)].startswith("Md5Mismatch: the stored bytes have md5")
    # The uploader sees a terminal phase and the reason; another imageable sees nothing.
    status = h.client.get(f"/v1/images/{name}", headers=si.bearer(PAIR))
    assert status.status_code == 200
    body = status.json()
    assert (body["phase"], body["terminal"]) == ("Rejected", True)
    assert body["conditions"][0]["reason"] == "Md5Mismatch"
    other = h.client.get(f"/v1/images/{name}", headers=si.bearer(PAIR, imageable_id="43"))
    assert other.status_code == 404


def test_a_type_other_than_the_bytes_is_rejected(h: Harness) -> None:
    data = images.png()
    md5 = hashlib.md5(data).hexdigest()
    h.storage.put(
        Area.UPLOAD,
        f"raw/{md5}",
        data,
        content_type="image/jpeg",
        metadata={**si.CLAIMS, "base_file_name": md5},
    )
    rejected(h, f"raw/{md5}", "ContentTypeMismatch")


def test_not_an_image_is_rejected(h: Harness) -> None:
    rejected(h, h.store(b"just some text, not an image"), "UnsupportedImageType")


def test_above_the_limit_is_rejected_without_reading_it(tmp_path: Path) -> None:
    h = Harness(tmp_path, limits=ImageLimits(max_bytes=100))
    rejected(h, h.store(images.jpeg()), "ImageTooLarge")


def test_an_object_without_uploader_is_deleted(h: Harness) -> None:
    data = images.jpeg()
    md5 = hashlib.md5(data).hexdigest()
    h.storage.put(Area.UPLOAD, f"raw/{md5}", data, content_type="image/jpeg")
    (result,) = h.event(f"raw/{md5}").json()["results"]
    assert (result["outcome"], result["reason"]) == ("Rejected", "NotAnUpload")
    assert not h.storage.exists(Area.UPLOAD, f"raw/{md5}")


def test_an_object_gone_since_is_nothing(h: Harness) -> None:
    assert h.event("raw/" + "a" * 32).json()["results"][0]["outcome"] == "Gone"


def test_api_server_down_is_503_and_the_object_stays(h: Harness) -> None:
    key = h.store(images.jpeg())
    h.uploads.down = True
    response = h.event(key)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert h.storage.exists(Area.UPLOAD, key)


def test_sns_notifications_are_unwrapped(h: Harness) -> None:
    key = h.store(images.jpeg())
    inner = {"Records": [record(key, h.storage.bucket(Area.UPLOAD), "ObjectCreated:Post")]}
    envelope = {"Type": "Notification", "Message": json.dumps(inner)}
    basic = base64.b64encode(f"sns:{TOKEN}".encode()).decode()
    response = h.client.post(
        "/v1/storage-events", json=envelope, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.json()["results"][0]["outcome"] == "Accepted"
    confirm = {"Type": "SubscriptionConfirmation", "SubscribeURL": "https://sns.example/x"}
    response = h.client.post(
        "/v1/storage-events", json=confirm, headers={"Authorization": f"Basic {basic}"}
    )
    assert (response.status_code, response.json()) == (200, {"results": []})


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong-token"}, 403), ({"Authorization": TOKEN}, 401)],
)
def test_events_need_the_token(h: Harness, headers: dict[str, str], status: int) -> None:
    key = h.store(images.jpeg())
    response = h.client.post(
        "/v1/storage-events", json={"Records": [record(key, "b")]}, headers=headers
    )
    assert response.status_code == status
    assert h.storage.exists(Area.UPLOAD, key)


@pytest.mark.parametrize("payload", [{}, {"Records": "x"}, {"Records": [1]}, "text"])
def test_a_body_that_is_no_event_is_400(h: Harness, payload: Any) -> None:
    response = h.client.post(
        "/v1/storage-events", json=payload, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert (response.status_code, response.json()["reason"]) == (400, "InvalidEvent")


def test_a_rejection_that_cannot_be_reported_keeps_the_object_for_the_retry(h: Harness) -> None:
    """Reported first, deleted after: the object store's retry finds the object again."""
    key = h.store(images.jpeg(), md5="0" * 32)
    h.uploads.down = True
    assert h.event(key).status_code == 503
    assert h.storage.exists(Area.UPLOAD, key)
    h.uploads.down = False
    rejected(h, key, "Md5Mismatch")
