"""The OpenAPI document states the validators' own rules: what it allows passes them,
what it forbids is refused (hypothesis, on each rule the document derives from code)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pinster_ingress import EXAMPLE_BODY, create_app
from pinster_ingress._body import data_uri_pattern, decode_data_uri
from pinster_ingress._openapi import EXAMPLE_IMAGE, document

from pinster_images.config import parse_size, size_pattern
from pinster_images.fields import FEATURED_MESSAGE, FIELD_MESSAGE, MAX_TEXT, InvalidFields, validate
from pinster_images.sniff import ImageLimits, accepted_types
from tests.support import ingress as si
from tests.support.contract_hooks import in_utf16_gap

PAIR = si.key_pair()
DOCUMENT = document(si.settings(Path("/nonexistent"), PAIR.public))
DATA = DOCUMENT["components"]["schemas"]["UploadBody"]["properties"]["data"]["properties"]


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """``schema`` with the document's components in reach of its ``$ref``s."""
    return jsonschema.Draft202012Validator({**schema, "components": DOCUMENT["components"]})


def accepted(field: str, value: Any) -> bool:
    try:
        validate({field: value})
    except InvalidFields:
        return False
    return True


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False),
    st.text(max_size=200),
    st.lists(st.integers(), max_size=2),
)


@given(value=st.one_of(json_values, st.text(min_size=60, max_size=150)))
@pytest.mark.parametrize("field", ["name", "description"])
def test_text_fields_as_documented(field: str, value: Any) -> None:
    documented = validator(DATA[field]).is_valid(value)
    if documented:
        assert accepted(field, value)
    elif not in_utf16_gap(value):  # the one rule JSON Schema cannot state (see the hooks)
        assert not accepted(field, value)


def test_text_length_is_counted_as_javascript_does() -> None:
    field = validator(DATA["name"])
    for value in ("abcd", "x" * MAX_TEXT, "😀😀", "a😀b", "😀" * (MAX_TEXT // 2)):
        assert field.is_valid(value) and accepted("name", value), value
    refused: tuple[Any, ...] = ("abc", "x" * (MAX_TEXT + 1), "😀", "😀" * (MAX_TEXT // 2 + 1), 5)
    for wrong in (*refused, True):
        assert not field.is_valid(wrong) and not accepted("name", wrong), wrong


@given(value=json_values)
def test_featured_as_documented(value: Any) -> None:
    assert validator(DATA["featured"]).is_valid(value) == accepted("featured", value)


@given(value=st.from_regex(data_uri_pattern(accepted_types()), fullmatch=True))
def test_every_documented_data_uri_gets_past_the_reader(value: str) -> None:
    decoded = decode_data_uri(value, ImageLimits())
    assert decoded is not None
    kind, subtype, sink = decoded
    assert kind == "image" and f"{kind}/{subtype}" in accepted_types() and len(sink) > 0


@given(
    value=st.one_of(
        st.from_regex(size_pattern(), fullmatch=True),
        st.from_regex(r"[0-9a-z]{1,6}x[0-9a-z]{1,6}", fullmatch=True),
        st.tuples(st.integers(0, 6000), st.integers(0, 6000)).map(lambda t: f"{t[0]}x{t[1]}"),
    )
)
def test_size_pattern_is_parse_size(value: str) -> None:
    try:
        parse_size(value)
        valid = True
    except ValueError:
        valid = False
    assert valid == bool(re.fullmatch(size_pattern(), value))


@pytest.mark.parametrize(
    "body",
    [
        EXAMPLE_BODY,
        {"errors": {"data": {"name": FIELD_MESSAGE, "featured": FEATURED_MESSAGE}}},
        {"error": "Your image did not match the base64 regex", "reason": "InvalidDataUri"},
    ],
)
def test_each_400_body_is_exactly_one_declared_shape(body: dict[str, Any]) -> None:
    upload = DOCUMENT["paths"]["/v1/images"]["post"]
    schema = upload["responses"]["400"]["content"]["application/json"]["schema"]
    validator(schema).validate(body)
    shapes = [validator(shape).is_valid(body) for shape in schema["oneOf"]]
    assert shapes.count(True) == 1


def test_the_example_upload_is_accepted_and_links_to_its_status(tmp_path: Path) -> None:
    app = create_app(si.settings(tmp_path, PAIR.public), uploads=si.FakeUploads())
    client = si.client(app)
    served = client.get("/openapi.json").json()
    upload = served["paths"]["/v1/images"]["post"]
    example = upload["requestBody"]["content"]["application/json"]["example"]
    assert example["data"]["image"] == EXAMPLE_IMAGE
    response = client.post("/v1/images", json=example, headers=si.bearer(PAIR))
    assert response.status_code == 202, response.text
    link = upload["responses"]["202"]["links"]["status"]
    assert link == {**link, "operationId": "status", "parameters": {"name": "$response.body#/name"}}
    status = client.get(f"/v1/images/{response.json()['name']}", headers=si.bearer(PAIR))
    assert status.status_code == 200


def test_generate_is_documented_with_its_key_rule(tmp_path: Path) -> None:
    app = create_app(si.settings(tmp_path, PAIR.public), uploads=si.FakeUploads())
    served = si.client(app).get("/openapi.json").json()
    [key] = served["paths"]["/generate"]["get"]["parameters"]
    assert key["schema"]["pattern"] == f"^[0-9a-f]{{32}}_(?:{size_pattern()})$"
