"""POST / and /v1/images in-process: every validation branch and error body of the
original contract, the new limits, storage keys and metadata, idempotency, 503s."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pinster_ingress import EXAMPLE_BODY, create_app

from pinster_images.sniff import ImageLimits
from pinster_images.storage import Area
from tests.support import images
from tests.support import ingress as si
from tests.support.storage import DirectoryStorage

PAIR = si.key_pair()
FIELD_ERROR = "Must be between 3 and 140 characters A-z0-9. Omit or null the field otherwise."
FEATURED_ERROR = "Must be a string. Omit or null the field otherwise."


class Harness:
    def __init__(self, tmp_path: Path, limits: ImageLimits | None = None) -> None:
        self.uploads = si.FakeUploads()
        self.settings = si.settings(tmp_path / "store", PAIR.public, limits=limits)
        self.storage = DirectoryStorage(tmp_path / "store")
        self.app = create_app(self.settings, storage=self.storage, uploads=self.uploads)
        self.client = si.client(self.app)

    def post(self, body: Any = None, *, path: str = "/v1/images", **claims: Any) -> Any:
        return self.client.post(path, json=body, headers=si.bearer(PAIR, **claims))

    def post_raw(
        self,
        data: bytes,
        content_type: str = "image/jpeg",
        path: str = "/v1/images",
        headers: dict[str, str] | None = None,
        **claims: Any,
    ) -> Any:
        return self.client.post(
            path,
            content=data,
            headers={**si.bearer(PAIR, **claims), "Content-Type": content_type, **(headers or {})},
        )

    def raw_keys(self) -> list[str]:
        return list(self.storage.list(Area.UPLOAD, "raw/"))


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield Harness(tmp_path)


def data_uri(data: bytes, content_type: str = "image/jpeg") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def body(image: Any = None, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"image": data_uri(images.jpeg()) if image is None else image}
    data.update(fields)
    return {"data": data}


# --- the original's 400s -------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        [],
        "text",
        5,
        {"data": None},
        {"data": {}},
        {"data": "x"},
        {"data": {"image": ""}},
        {"data": {"image": None}},
        {"data": {"image": 0}},
        {"data": {"name": "only a name"}},
    ],
)
def test_missing_body_or_image_gives_the_example_body(h: Harness, payload: Any) -> None:
    response = h.post(payload)
    assert response.status_code == 400
    assert response.json() == EXAMPLE_BODY
    assert response.content == (
        b'{"error":"Bad Request. Required fields are missing.","example_body":{"data":'
        b'{"image":"base64 encoded image","name":"Optional name of image","description":'
        b'"Optional description","featured":"Optional ISO8601 format"}}}'
    )


@pytest.mark.parametrize("raw", [b"", b"{", b'{"data": {"image": "abc', b"\xff\xfe", b"nul\x00l"])
def test_unparseable_json_gives_the_example_body(h: Harness, raw: bytes) -> None:
    response = h.client.post(
        "/", content=raw, headers={**si.bearer(PAIR), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == EXAMPLE_BODY


@pytest.mark.parametrize("field", ["name", "description"])
@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("abc", False),
        ("abcd", True),
        ("x" * 139, True),
        ("x" * 140, False),
        ("😀😀", True),
        ("😀", False),
        (123, False),
        (["list"], False),
        ({"a": "b"}, False),
        (True, False),
    ],
)
def test_name_and_description_length_rule(h: Harness, field: str, value: Any, ok: bool) -> None:
    response = h.post(body(**{field: value}))
    if ok:
        assert response.status_code == 202, response.text
    else:
        assert response.status_code == 400
        assert response.json() == {"errors": {"data": {field: FIELD_ERROR}}}


@pytest.mark.parametrize("falsy", [None, "", 0, False])
def test_falsy_fields_are_ignored(h: Harness, falsy: Any) -> None:
    response = h.post(body(name=falsy, description=falsy, featured=falsy))
    assert response.status_code == 202
    spec = next(iter(h.uploads.objects.values()))["spec"]
    assert "name" not in spec and "description" not in spec and "featured" not in spec


def test_all_field_errors_are_reported_together(h: Harness) -> None:
    response = h.post(body(name="ab", description="x" * 200, featured={"when": "now"}))
    assert response.status_code == 400
    assert response.json() == {
        "errors": {
            "data": {"name": FIELD_ERROR, "description": FIELD_ERROR, "featured": FEATURED_ERROR}
        }
    }


@pytest.mark.parametrize("featured", ["x" * 65, ["2020"], "caf\u00e9 time", "tab\there"])
def test_unusable_featured_is_refused(h: Harness, featured: Any) -> None:
    response = h.post(body(featured=featured))
    assert response.status_code == 400
    assert response.json() == {"errors": {"data": {"featured": FEATURED_ERROR}}}


def test_fields_are_sanitised_as_the_original(h: Harness) -> None:
    response = h.post(
        body(
            name="My <b>pin</b>, ünï_1!",
            description="Look: a pin. Isn't it \\great\\?! #1",
            featured="2024-05-01T10:00:00Z",
        )
    )
    assert response.status_code == 202
    md5 = response.json()["md5"]
    stored = h.storage.head(Area.UPLOAD, f"raw/{md5}")
    assert stored is not None
    assert stored.metadata["name"] == "My bpinb n_1"
    assert stored.metadata["description"] == "Look a pin. Isnt it \\great\\?! 1"
    assert stored.metadata["featured"] == "2024-05-01T10:00:00Z"
    spec = next(iter(h.uploads.objects.values()))["spec"]
    assert (spec["name"], spec["description"], spec["featured"]) == (
        "My bpinb n_1",
        "Look a pin. Isnt it \\great\\?! 1",
        "2024-05-01T10:00:00Z",
    )


def test_numeric_featured_is_kept_as_text(h: Harness) -> None:
    response = h.post(body(featured=1714557600))
    assert response.status_code == 202
    assert next(iter(h.uploads.objects.values()))["spec"]["featured"] == "1714557600"


@pytest.mark.parametrize(
    "image", ["hello", "data:image/png,notbase64", "base64,AAAA", "data:;base64,AAAA", 42, ["x"]]
)
def test_image_that_is_not_a_data_uri(h: Harness, image: Any) -> None:
    response = h.post(body(image=image))
    assert response.status_code == 400
    assert response.json() == {
        "error": "Your image did not match the base64 regex",
        "reason": "InvalidDataUri",
    }


def test_non_image_data_uri_type_is_the_original_400(h: Harness) -> None:
    response = h.post(body(image=data_uri(b"hello world", "text/plain")))
    assert response.status_code == 400
    assert response.json()["error"] == "Files of type: text/plain are not supported."


# --- what the original never checked ---------------------------------------------------


def test_text_declared_as_image_is_415(h: Harness) -> None:
    response = h.post(body(image=data_uri(b"just some text, honest", "image/png")))
    assert response.status_code == 415
    assert response.json()["reason"] == "UnsupportedImageType"
    assert h.raw_keys() == []


def test_png_declared_as_jpeg_is_415(h: Harness) -> None:
    response = h.post(body(image=data_uri(images.png(), "image/jpeg")))
    assert response.status_code == 415
    assert response.json()["reason"] == "ContentTypeMismatch"


def test_jpg_alias_is_accepted(h: Harness) -> None:
    assert h.post(body(image=data_uri(images.jpeg(), "image/jpg"))).status_code == 202


def test_truncated_jpeg_is_422(h: Harness) -> None:
    data = images.jpeg(300, 300)
    response = h.post(body(image=data_uri(data[: len(data) // 2])))
    assert response.status_code == 422
    assert response.json()["reason"] == "TruncatedImage"


def test_decompression_bomb_is_422_and_names_the_limit(h: Harness) -> None:
    response = h.post(body(image=data_uri(images.png_bomb(), "image/png")))
    assert response.status_code == 422
    assert response.json()["reason"] == "TooManyPixels"
    assert "PINSTER_MAX_PIXELS=50000000" in response.json()["error"]
    assert h.raw_keys() == []


def test_too_many_frames_is_422(tmp_path: Path) -> None:
    import io

    from PIL import Image

    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    h = Harness(tmp_path, ImageLimits(max_frames=2))
    response = h.post_raw(buffer.getvalue(), "image/gif")
    assert response.status_code == 422
    assert "PINSTER_MAX_FRAMES=2" in response.json()["error"]


def test_byte_limit_while_streaming_json_is_413(tmp_path: Path) -> None:
    data = images.noisy_jpeg(20_000)
    h = Harness(tmp_path, ImageLimits(max_bytes=10_000))
    response = h.post(body(image=data_uri(data)))
    assert response.status_code == 413
    assert "10000" in response.json()["error"]


def test_byte_limit_from_content_length_is_413_before_reading(tmp_path: Path) -> None:
    h = Harness(tmp_path, ImageLimits(max_bytes=1000))
    response = h.post_raw(b"\xff" * 5000)
    assert response.status_code == 413
    assert response.json()["reason"] == "ImageTooLarge"
    assert "PINSTER_MAX_BYTES" in response.json()["error"]


def test_byte_limit_on_a_chunked_raw_body_is_413(tmp_path: Path) -> None:
    h = Harness(tmp_path, ImageLimits(max_bytes=1000))

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"\xff" * 300

    response = h.client.post(
        "/v1/images", content=chunks(), headers={**si.bearer(PAIR), "Content-Type": "image/jpeg"}
    )
    assert response.status_code == 413


# --- storage and resource ----------------------------------------------------------------


def test_accepted_upload_stores_original_keys_and_metadata(h: Harness) -> None:
    data = images.jpeg(320, 200)
    response = h.post(
        body(image=data_uri(data), name="Summer pin", description="Nice one!"),
        user_id="u-9",
        imageable_type="Collection",
        imageable_id="77",
    )
    assert response.status_code == 202
    import hashlib

    md5 = hashlib.md5(data).hexdigest()
    answer = response.json()
    assert answer["md5"] == md5
    assert answer["namespace"] == "uploads"
    assert answer["status_url"] == f"/v1/images/{answer['name']}"
    assert response.headers["location"] == answer["status_url"]
    assert response.headers["access-control-allow-origin"] == "*"
    stored = h.storage.get(Area.UPLOAD, f"raw/{md5}")
    assert stored.data == data
    assert stored.info.content_type == "image/jpeg"
    assert stored.info.cache_control == "max-age=86400"
    assert stored.info.metadata == {
        "user_id": "u-9",
        "imageable_type": "Collection",
        "imageable_id": "77",
        "name": "Summer pin",
        "description": "Nice one!",
        "base_file_name": md5,
    }
    (namespace, name), obj = next(iter(h.uploads.objects.items()))
    assert (namespace, name) == ("uploads", answer["name"])
    assert obj["spec"] == {
        "md5": md5,
        "source": {"bucket": h.storage.bucket(Area.UPLOAD), "key": f"raw/{md5}"},
        "contentType": "image/jpeg",
        "byteSize": len(data),
        "width": 320,
        "height": 200,
        "uploader": {"userId": "u-9", "imageableType": "Collection", "imageableId": "77"},
        "thumbnailSizes": ["1024x1024", "512x512", "256x256", "128x128"],
        "name": "Summer pin",
        "description": "Nice one!",
    }


def test_root_path_is_the_same_endpoint(h: Harness) -> None:
    assert h.post(body(), path="/").status_code == 202
    assert h.post(body(), path="/v1/images/").status_code == 200


def test_same_upload_twice_is_one_object_one_resource(h: Harness) -> None:
    first = h.post(body())
    second = h.post(body())
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json() == second.json()
    assert len(h.raw_keys()) == 1
    assert len(h.uploads.objects) == 1


def test_two_imageables_same_bytes_are_one_object_two_resources(h: Harness) -> None:
    a = h.post(body(), imageable_id="1")
    b = h.post(body(), imageable_id="2")
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["md5"] == b.json()["md5"]
    assert a.json()["name"] != b.json()["name"]
    assert len(h.raw_keys()) == 1
    assert len(h.uploads.objects) == 2


def test_api_server_down_is_a_retryable_503_and_the_retry_succeeds(h: Harness) -> None:
    h.uploads.down = True
    failed = h.post(body())
    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "5"
    assert failed.json()["reason"] == "KubernetesUnavailable"
    assert len(h.raw_keys()) == 1  # content-addressed; the retry reuses it
    h.uploads.down = False
    retried = h.post(body())
    assert retried.status_code == 202
    assert len(h.raw_keys()) == 1 and len(h.uploads.objects) == 1


def test_storage_down_is_a_503(h: Harness, tmp_path: Path) -> None:
    from pinster_images.errors import TemporaryError

    def broken(*args: Any, **kwargs: Any) -> None:
        raise TemporaryError("S3 unreachable", reason="StorageUnavailable")

    h.storage.put = broken  # type: ignore[method-assign]
    response = h.post(body())
    assert response.status_code == 503
    assert response.json()["reason"] == "StorageUnavailable"
    assert h.uploads.objects == {}


# --- raw form -----------------------------------------------------------------------


def test_raw_upload_with_query_fields(h: Harness) -> None:
    data = images.png(40, 30)
    response = h.post_raw(data, "image/png", path="/v1/images?name=Raw%20pin&featured=2024-01-01")
    assert response.status_code == 202, response.text
    spec = next(iter(h.uploads.objects.values()))["spec"]
    assert (spec["contentType"], spec["width"], spec["name"], spec["featured"]) == (
        "image/png",
        40,
        "Raw pin",
        "2024-01-01",
    )


def test_raw_upload_with_header_fields(h: Harness) -> None:
    response = h.post_raw(
        images.jpeg(),
        headers={"X-Pinster-Name": "Caf%C3%A9 pin", "X-Pinster-Description": "From headers"},
    )
    assert response.status_code == 202
    spec = next(iter(h.uploads.objects.values()))["spec"]
    assert (spec["name"], spec["description"]) == ("Caf pin", "From headers")


def test_raw_upload_field_errors_use_the_original_body(h: Harness) -> None:
    response = h.post_raw(images.jpeg(), path="/v1/images?name=ab")
    assert response.status_code == 400
    assert response.json() == {"errors": {"data": {"name": FIELD_ERROR}}}


def test_raw_octet_stream_is_sniffed(h: Harness) -> None:
    response = h.post_raw(images.encode("WEBP", 20, 10), "application/octet-stream")
    assert response.status_code == 202
    assert next(iter(h.uploads.objects.values()))["spec"]["contentType"] == "image/webp"


def test_raw_mismatch_and_empty(h: Harness) -> None:
    assert h.post_raw(images.png(), "image/jpeg").status_code == 415
    empty = h.post_raw(b"", "image/png")
    assert empty.status_code == 400
    assert empty.json() == EXAMPLE_BODY


# --- status, health, metrics, openapi ----------------------------------------------------


def test_status_of_an_upload(h: Harness) -> None:
    accepted = h.post(body()).json()
    key = ("uploads", accepted["name"])
    h.uploads.objects[key]["status"] = {
        "phase": "Ready",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Published",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:01Z",
            }
        ],
        "verdict": {"decision": "Approved", "backend": "none", "labels": []},
        "published": {
            "original": {"key": accepted["md5"]},
            "thumbnails": [
                {"size": "128x128", "key": f"{accepted['md5']}_128x128", "url": "http://cdn/x"}
            ],
        },
    }
    response = h.client.get(accepted["status_url"], headers=si.bearer(PAIR))
    assert response.status_code == 200
    status = response.json()
    assert status["phase"] == "Ready" and status["terminal"] is True
    assert status["verdict"]["decision"] == "Approved"
    assert status["conditions"][0]["reason"] == "Published"
    assert status["urls"] == {
        "original": h.storage.public_url(accepted["md5"]),
        "128x128": "http://cdn/x",
    }


def test_status_is_pending_before_the_operator_writes(h: Harness) -> None:
    accepted = h.post(body()).json()
    status = h.client.get(accepted["status_url"], headers=si.bearer(PAIR)).json()
    assert (status["phase"], status["terminal"], status["urls"]) == ("Pending", False, {})


def test_status_needs_the_same_imageable(h: Harness) -> None:
    accepted = h.post(body(), imageable_id="1").json()
    other = h.client.get(accepted["status_url"], headers=si.bearer(PAIR, imageable_id="2"))
    assert other.status_code == 404
    assert h.client.get(accepted["status_url"]).status_code == 401
    missing = h.client.get("/v1/images/img-nope", headers=si.bearer(PAIR))
    assert missing.status_code == 404
    assert missing.json() == {"error": "ImageUpload img-nope not found", "reason": "NotFound"}
    assert h.client.get("/v1/images/NOT_A_NAME", headers=si.bearer(PAIR)).status_code == 404


def test_health_and_readiness(h: Harness) -> None:
    assert h.client.get("/healthz").json() == {"status": "ok"}
    assert h.client.get("/readyz").status_code == 200
    h.uploads.down = True
    not_ready = h.client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["storage"] == "ok"
    assert "unreachable" in not_ready.json()["checks"]["kubernetes"]


def test_metrics_count_outcomes_and_bytes(h: Harness) -> None:
    h.post(body())
    h.post(body())
    h.post(body(name="ab"))
    text = h.client.get("/metrics").text
    assert (
        'pinster_ingress_requests_total{method="POST",outcome="Accepted",route="upload",status="202"} 1.0'
        in text
    )
    assert 'outcome="AlreadyExists",route="upload",status="200"} 1.0' in text
    assert 'outcome="InvalidFields",route="upload",status="400"} 1.0' in text
    assert "pinster_ingress_received_bytes_total" in text
    assert (
        'pinster_ingress_request_duration_seconds_count{method="POST",route="upload"} 3.0' in text
    )


def test_openapi_document_is_valid_and_lists_the_routes(h: Harness) -> None:
    from openapi_spec_validator import validate

    document = h.client.get("/openapi.json").json()
    validate(document)
    assert set(document["paths"]) >= {
        "/",
        "/v1/images",
        "/v1/images/{name}",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    assert json.dumps(EXAMPLE_BODY) in json.dumps(document)


def test_unknown_route_and_method_are_json(h: Harness) -> None:
    assert h.client.get("/nowhere").json()["reason"] == "NotFound"
    wrong = h.client.put("/v1/images")
    assert wrong.status_code == 405
    assert wrong.json()["reason"] == "MethodNotAllowed"


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/images", "OPTIONS, POST"),
        ("/", "OPTIONS, POST"),
        ("/v1/images/img-x", "GET, HEAD, OPTIONS"),
        ("/healthz", "GET, HEAD, OPTIONS"),
        ("/generate", "GET, HEAD, OPTIONS"),
    ],
)
def test_405_names_the_allowed_methods_and_options_answers_without_a_token(
    h: Harness, path: str, allow: str
) -> None:
    for method in ("TRACE", "PUT", "DELETE", "PATCH"):
        refused = h.client.request(method, path, headers=si.bearer(PAIR))
        assert refused.status_code == 405
        assert refused.headers["allow"] == allow
        assert refused.json() == {
            "error": f"{method} {path}: MethodNotAllowed",
            "reason": "MethodNotAllowed",
        }
    options = h.client.options(path)
    assert (options.status_code, options.content) == (204, b"")
    assert options.headers["allow"] == allow
    assert options.headers["access-control-allow-methods"] == allow
    assert "Authorization" in options.headers["access-control-allow-headers"]
    assert options.headers["access-control-allow-origin"] == "*"


def test_head_answers_as_get_without_a_body(h: Harness) -> None:
    from tests.support.serving import serve

    accepted = h.post(body()).json()
    with serve(h.app) as url, httpx.Client(base_url=url, headers=si.bearer(PAIR)) as client:
        for path in ("/healthz", "/openapi.json", accepted["status_url"]):
            got, head = client.get(path), client.head(path)
            assert head.status_code == got.status_code == 200
            assert head.content == b""
            for header in ("content-type", "content-length", "access-control-allow-origin"):
                assert head.headers[header] == got.headers[header], header
        assert client.head("/v1/images").status_code == 405


def test_a_client_that_goes_away_is_not_a_500(h: Harness) -> None:
    import asyncio

    from pinster_ingress._app import guarded
    from starlette.requests import Request

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/images",
        "headers": [],
        "query_string": b"",
    }
    service = h.app.state.service

    async def upload(request: Request) -> object:
        return await service.intake.read(request)

    response = asyncio.run(guarded(upload, 5)(Request(scope, receive)))  # type: ignore[arg-type]
    assert response.status_code == 400
    assert b"ClientDisconnected" in response.body
