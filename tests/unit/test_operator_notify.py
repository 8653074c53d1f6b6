"""Notification bodies, tokens, HTTP outcomes (against the PinsterApi stand-in) and backoff."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import jwt
import pytest
from pinster_ingress._auth import MAX_CLAIM_LENGTH
from pinster_operator import OperatorSettings, approved_body, backoff_delay, flagged_body
from pinster_operator._notify import (
    IMAGES_PATH,
    classify_status,
    new_session,
    notification_schema,
    post,
    sns_message,
    token,
)

from pinster_images import keys
from pinster_images.config import Secret
from pinster_images.errors import ConfigError, PermanentError, TemporaryError
from pinster_images.resource import MD5_PATTERN
from tests.support.operator_units import (
    API_URL,
    PUBLISHED,
    REJECTED,
    SERVICE_URL,
    private_key,
    settings,
    spec,
)
from tests.support.pinster_api import PinsterApi, body_error

#: A body the stand-in accepts, for tests about the HTTP exchange.
BODY = approved_body(spec(), f"http://cdn.test/{spec().md5}", PUBLISHED)


@pytest.fixture
def api() -> Iterator[PinsterApi]:
    stand_in = PinsterApi(public_key=keys.public_key_of(private_key()), service_url=SERVICE_URL)
    stand_in.start()
    yield stand_in
    stand_in.stop()


def test_approved_body_keeps_the_original_fields_in_order() -> None:
    body = approved_body(spec(), f"http://cdn.test/{spec().md5}", PUBLISHED)
    assert list(body["data"])[:5] == [
        "imageable_id",
        "imageable_type",
        "base_file_name",
        "storage_location_uri",
        "thumbnailable",
    ]
    assert body["data"]["imageable_id"] == "42" and body["data"]["imageable_type"] == "Pin"
    assert body["data"]["base_file_name"] == spec().md5
    assert body["data"]["storage_location_uri"] == f"http://cdn.test/{spec().md5}"
    assert body["data"]["thumbnailable"] is True
    assert [t["size"] for t in body["data"]["thumbnails"]] == ["512x512", "128x128"]
    assert body["data"]["thumbnails"][0] == {
        "size": "512x512",
        "width": 512,
        "height": 384,
        "uri": "http://cdn.test/a",
    }


def test_flagged_body_and_sns_message_carry_the_verdict() -> None:
    body = flagged_body(spec(), "img-1", REJECTED)["data"]
    assert body["verdict"]["labels"][0]["name"] == "Explicit Nudity"
    assert body["reason"] == "ModerationThresholdExceeded" and body["upload"] == "img-1"
    event = json.loads(sns_message(spec(), "img-1", REJECTED))
    assert event["moderationLabels"][0]["confidence"] == 99.6
    assert event["key"] == spec().key


# --- the published JSON Schema ----------------------------------------------------------

WEBP_PUBLISHED = {
    **PUBLISHED,
    "thumbnails": [
        *PUBLISHED["thumbnails"],
        {
            **PUBLISHED["thumbnails"][0],
            "url": "http://cdn.test/a.webp",
            "contentType": "image/webp",
        },
    ],
}
NUDENET = {
    "decision": "Rejected",
    "backend": "nudenet",
    "threshold": 45.0,
    "modelVersion": "3.4",
    "labels": [{"name": "FEMALE_BREAST_EXPOSED", "parentName": "", "confidence": 91.2}],
}


@pytest.mark.parametrize(
    "body",
    [
        approved_body(spec(), f"http://cdn.test/{spec().md5}", PUBLISHED),
        approved_body(spec(), f"http://cdn.test/{spec().md5}", WEBP_PUBLISHED),
        approved_body(spec(), f"http://cdn.test/{spec().md5}", {"thumbnails": []}),
        flagged_body(spec(), "img-1", REJECTED),
        flagged_body(spec(), "img-1", NUDENET),
    ],
    ids=["approved", "approved-webp", "approved-no-thumbnails", "flagged", "flagged-nudenet"],
)
def test_the_operators_bodies_match_the_published_schema(body: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(notification_schema()).validate(body)
    assert body_error(body, "flagged" if "verdict" in body["data"] else "approved") is None


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    broken = json.loads(json.dumps(body))
    *parents, last = path
    target = broken
    for key in parents:
        target = target[key]
    del target[last]
    return broken


FLAGGED = flagged_body(spec(), "img-1", REJECTED)


@pytest.mark.parametrize(
    ("body", "kind", "where"),
    [
        ({}, "approved", "the body"),
        ({"data": {}}, "approved", "data"),
        (_without(BODY, "data", "storage_location_uri"), "approved", "data"),
        ({"data": {**BODY["data"], "thumbnailable": False}}, "approved", "data/thumbnailable"),
        ({"data": {**BODY["data"], "base_file_name": "x"}}, "approved", "data/base_file_name"),
        ({"data": {**BODY["data"], "imageable_id": 42}}, "approved", "data/imageable_id"),
        ({"data": {**BODY["data"], "extra": 1}}, "approved", "data"),
        (_without(FLAGGED, "data", "verdict", "backend"), "flagged", "data/verdict"),
        (
            flagged_body(spec(), "img-1", {**REJECTED, "decision": "Approved"}),
            "flagged",
            "data/verdict/decision",
        ),
    ],
)
def test_a_malformed_body_does_not_match(body: dict[str, Any], kind: str, where: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(notification_schema()).validate(body)
    error = body_error(body, kind)
    assert error is not None and f"{where}:" in error


def test_each_path_takes_its_own_body() -> None:
    assert body_error(FLAGGED, "approved") is not None
    assert body_error(BODY, "flagged") is not None


def test_the_schema_states_the_services_own_rules() -> None:
    defs = notification_schema()["$defs"]
    assert defs["md5"]["pattern"] == f"^{MD5_PATTERN}$"
    assert defs["claim"]["pattern"] == f"^[ -~]{{1,{MAX_CLAIM_LENGTH}}}$"
    flagged = defs["flagged"]["properties"]["data"]["properties"]
    assert flagged["reason"]["const"] == flagged_body(spec(), "x", REJECTED)["data"]["reason"]


def test_the_stand_in_refuses_a_malformed_body_with_400(api: PinsterApi) -> None:
    s = settings(PINSTER_API_URL=api.url)
    with pytest.raises(PermanentError, match="400"):
        post(s.notify, IMAGES_PATH, {"data": {}}, spec=spec(), idempotency_key="img-1")
    [received] = api.all()
    assert received.status == 400 and received.claims is not None
    assert received.error is not None and "notification.schema.json" in received.error


def test_token_has_the_original_claims() -> None:
    s = settings()
    claims = jwt.decode(
        token(s.notify, spec(), now=1_000_000),
        keys.public_key_of(private_key()),
        algorithms=["RS256"],
        audience=API_URL,
        issuer=SERVICE_URL,
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims["imageable_type"] == "Pin" and claims["imageable_id"] == "42"
    assert claims["nbf"] == 1_000_000 and claims["exp"] == 1_000_010


def test_post_is_verified_by_the_stand_in(api: PinsterApi) -> None:
    s = settings(PINSTER_API_URL=api.url)
    body = approved_body(spec(), "http://cdn.test/x", PUBLISHED)
    assert post(s.notify, IMAGES_PATH, body, spec=spec(), idempotency_key="img-1").status == 201
    [received] = api.accepted(IMAGES_PATH)
    assert received.body == body
    assert received.headers["idempotency-key"] == "img-1"
    assert received.claims is not None and received.claims["imageable_id"] == "42"


def test_a_session_reads_the_environment_once_and_keeps_its_connection(
    api: PinsterApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/pinster/ca.pem")
    remote = new_session(settings(PINSTER_API_URL="https://api.pinster.test").notify)
    assert remote.proxies == {"https": "http://proxy.test:3128"}
    assert remote.verify == "/etc/pinster/ca.pem"
    s = settings(PINSTER_API_URL=api.url)
    local = new_session(s.notify)
    assert local.proxies == {}  # NO_PROXY
    for name in ("img-1", "img-2"):
        post(s.notify, IMAGES_PATH, BODY, spec=spec(), idempotency_key=name, session=local)
    assert len(api.accepted(IMAGES_PATH)) == 2 and api.connections == 1


def test_a_wrong_key_is_refused_by_the_stand_in(api: PinsterApi) -> None:
    other = keys.generate_private_key().decode()
    s = settings(PINSTER_API_URL=api.url, PINSTER_SERVICE_PRIVATE_KEY=other)
    with pytest.raises(PermanentError):
        post(s.notify, IMAGES_PATH, BODY, spec=spec(), idempotency_key="img-1")
    assert api.all()[0].error is not None and not api.accepted()


def test_503_is_temporary_then_accepted(api: PinsterApi) -> None:
    api.fail_first = 2
    s = settings(PINSTER_API_URL=api.url)
    for _ in range(2):
        with pytest.raises(TemporaryError):
            post(s.notify, IMAGES_PATH, BODY, spec=spec(), idempotency_key="k")
    post(s.notify, IMAGES_PATH, BODY, spec=spec(), idempotency_key="k")
    assert [r.status for r in api.all()] == [503, 503, 201]


def test_unreachable_api_is_temporary() -> None:
    s = settings(PINSTER_API_URL="http://127.0.0.1:9", PINSTER_NOTIFY_TIMEOUT="1")
    with pytest.raises(TemporaryError):
        post(s.notify, IMAGES_PATH, {}, spec=spec(), idempotency_key="k")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "ok"),
        (201, "ok"),
        (408, "temporary"),
        (429, "temporary"),
        (500, "temporary"),
        (503, "temporary"),
        (400, "permanent"),
        (401, "permanent"),
        (404, "permanent"),
        (422, "permanent"),
    ],
)
def test_status_classification(status: int, kind: str) -> None:
    assert classify_status(status) == kind


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    lows = [backoff_delay(n, initial=1, maximum=60, rand=0.0) for n in range(1, 9)]
    highs = [backoff_delay(n, initial=1, maximum=60, rand=0.999) for n in range(1, 9)]
    assert lows == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert all(low < high < 2 * low + 0.001 for low, high in zip(lows, highs, strict=True))
    assert 0.5 <= backoff_delay(1, initial=1, maximum=60) < 1.0


def test_settings_errors_name_the_variable() -> None:
    from tests.support.operator_units import env

    broken = env()
    del broken["PINSTER_SERVICE_PRIVATE_KEY"]
    with pytest.raises(ConfigError, match="PINSTER_SERVICE_PRIVATE_KEY"):
        OperatorSettings.from_env(broken)
    for name, value in [
        ("PINSTER_BATCH_MAX", "0"),
        ("PINSTER_BATCH_MAX", "65"),  # a Job's uploads must fit one variable (128 KiB)
        ("PINSTER_JOB_TOLERATIONS", "{not json"),
        ("PINSTER_JOB_NODE_SELECTOR", "[1]"),
        ("PINSTER_NOTIFY_DEADLINE", "soon"),
        ("PINSTER_FLAGGED_PATH", "flagged"),
    ]:
        with pytest.raises(ConfigError, match=name):
            OperatorSettings.from_env(env(**{name: value}))
    with pytest.raises(ConfigError, match="PINSTER_API_URL"):
        OperatorSettings.from_env({k: v for k, v in env().items() if k != "PINSTER_API_URL"})


def test_secrets_never_print() -> None:
    assert "BEGIN" not in repr(Secret(private_key().decode()))
    shown = repr(
        settings(AWS_SECRET_ACCESS_KEY="hush", PINSTER_JOB_PASS_ENV="AWS_SECRET_ACCESS_KEY")
    )
    assert "BEGIN" not in shown and "hush" not in shown
