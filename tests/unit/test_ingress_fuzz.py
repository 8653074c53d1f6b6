"""Property: no body, header or path makes the upload service answer 500."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pinster_ingress import create_app

from tests.support import images
from tests.support import ingress as si

PAIR = si.key_pair()
OTHER = si.key_pair()
EXPECTED = {200, 202, 400, 401, 403, 404, 405, 413, 415, 422}
VALID = [
    images.jpeg(),
    images.png(),
    images.encode("GIF"),
    images.encode("WEBP"),
    images.png_bomb(),
]

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=200)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def data_uris(draw: st.DrawFn) -> str:
    payload = draw(st.one_of(st.sampled_from(VALID), st.binary(max_size=300)))
    if draw(st.booleans()):
        payload = payload[: draw(st.integers(0, len(payload)))]
    mime = draw(
        st.sampled_from(
            [
                "image/jpeg",
                "image/png",
                "image/gif",
                "image/webp",
                "image/jpg",
                "text/plain",
                "image/x-unknown",
                "application/json",
            ]
        )
    )
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["binary", "json", "upload"]))
    if kind == "binary":
        return draw(st.binary(max_size=600))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    data: dict[str, Any] = {}
    for field in ("image", "name", "description", "featured"):
        if field == "image" or draw(st.booleans()):
            data[field] = draw(data_uris() if field == "image" else json_values)
    return json.dumps({"data": data}).encode()


@st.composite
def auth_headers(draw: st.DrawFn) -> dict[str, str]:
    # Mostly valid, so that most examples reach the body handling.
    choice = draw(st.sampled_from(["valid"] * 6 + ["none", "garbage", "other-key", "odd-claims"]))
    if choice == "valid":
        return si.bearer(PAIR)
    if choice == "other-key":
        return si.bearer(OTHER)
    if choice == "odd-claims":
        return si.bearer(PAIR, imageable_id=draw(json_values), user_id=draw(json_values))
    if choice == "garbage":
        return {"Authorization": draw(header_text)}
    return {}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    store: Path = tmp_path_factory.mktemp("fuzz")
    return si.client(create_app(si.settings(store, PAIR.public), uploads=si.FakeUploads()))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/", "/v1/images", "/v1/images/"]),
    body=bodies(),
    auth=auth_headers(),
    content_type=st.one_of(
        st.sampled_from(
            [
                "application/json",
                "image/jpeg",
                "image/png",
                "application/octet-stream",
                "text/plain",
                "image/",
                "multipart/form-data; boundary=x",
            ]
        ),
        header_text,
    ),
    query=st.dictionaries(
        st.sampled_from(["name", "description", "featured", "x"]), header_text, max_size=3
    ),
    extra=st.dictionaries(
        st.sampled_from(["X-Pinster-Name", "X-Pinster-Description", "X-Pinster-Featured"]),
        header_text,
        max_size=3,
    ),
)
def test_no_500_on_arbitrary_uploads(
    client: Any,
    path: str,
    body: bytes,
    auth: dict[str, str],
    content_type: str,
    query: dict[str, str],
    extra: dict[str, str],
) -> None:
    response = client.post(
        path, content=body, params=query, headers={**auth, **extra, "Content-Type": content_type}
    )
    assert response.status_code in EXPECTED, response.text
    event(f"status {response.status_code}")
    payload = response.json()
    assert isinstance(payload, dict) and payload


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(max_size=80), auth=auth_headers())
def test_no_500_on_arbitrary_status_reads(client: Any, name: str, auth: dict[str, str]) -> None:
    from urllib.parse import quote

    response = client.get("/v1/images/" + quote(name, safe=""), headers=auth)
    assert response.status_code in EXPECTED, response.text
