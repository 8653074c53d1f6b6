"""Token verification: RS256 from PinsterApi only, aud/iss/exp/nbf with 10 s leeway, claims."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from pinster_ingress import AuthSettings, Claims, HttpError, TokenVerifier

from pinster_images import keys
from tests.support import ingress as si

PAIR = si.key_pair()
OTHER = si.key_pair()
AUTH = AuthSettings(
    service_url=si.SERVICE_URL, api_url=si.API_URL, public_key=PAIR.public, jwks=None
)


def _payload(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {
        **si.CLAIMS,
        "iss": si.API_URL,
        "aud": si.SERVICE_URL,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
    }
    for key, value in overrides.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def _rs256(
    private: bytes = PAIR.private, headers: dict[str, Any] | None = None, **overrides: Any
) -> str:
    return jwt.encode(_payload(**overrides), private, algorithm="RS256", headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _verify(token: str, auth: AuthSettings = AUTH) -> Claims:
    return TokenVerifier(auth).verify(f"Bearer {token}")


def _refused(token: str, auth: AuthSettings = AUTH) -> HttpError:
    with pytest.raises(HttpError) as caught:
        _verify(token, auth)
    assert caught.value.status == 403
    assert caught.value.body["error"].startswith("Token was invalid. Error: ")
    return caught.value


def test_valid_token_gives_claims() -> None:
    assert _verify(_rs256()) == Claims("user-1", "Pin", "42")


def test_numeric_claims_become_strings() -> None:
    assert _verify(_rs256(imageable_id=42, user_id=7)) == Claims("7", "Pin", "42")


def test_token_minted_by_keys_mint_is_accepted() -> None:
    assert _verify(si.token(PAIR)).imageable_type == "Pin"


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Bearer    "])
def test_missing_header_or_token_is_401(header: str | None) -> None:
    with pytest.raises(HttpError) as caught:
        TokenVerifier(AUTH).verify(header)
    assert caught.value.status == 401
    assert caught.value.body["error"] == "Request missing valid Authorization header."


def test_wrong_key_is_refused() -> None:
    _refused(_rs256(OTHER.private))


def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode(_payload(), None, algorithm="none")
    _refused(unsigned)
    # and a hand-made one with an empty signature
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    _refused(f"{header}.{_b64(json.dumps(_payload()).encode())}.")


def test_hs256_signed_with_the_public_key_as_secret_is_refused() -> None:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_payload()).encode())
    signature = hmac.new(PAIR.public, f"{header}.{body}".encode(), hashlib.sha256).digest()
    _refused(f"{header}.{body}.{_b64(signature)}")


def test_expired_beyond_leeway_is_refused_within_leeway_accepted() -> None:
    now = int(time.time())
    assert "expired" in _refused(_rs256(exp=now - 20, nbf=now - 60, iat=now - 60)).body["error"]
    assert _verify(_rs256(exp=now - 5, nbf=now - 60, iat=now - 60)).user_id == "user-1"


def test_not_yet_valid_is_refused_within_leeway_accepted() -> None:
    now = int(time.time())
    _refused(_rs256(nbf=now + 30))
    assert _verify(_rs256(nbf=now + 5)).user_id == "user-1"


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "http://someone-else.test"},
        {"aud": None},
        {"iss": "http://evil.test"},
        {"iss": None},
    ],
    ids=["wrong-aud", "no-aud", "wrong-iss", "no-iss"],
)
def test_wrong_or_missing_aud_iss_is_refused(overrides: dict[str, Any]) -> None:
    _refused(_rs256(**overrides))


@pytest.mark.parametrize("claim", ["user_id", "imageable_type", "imageable_id"])
def test_missing_claims_are_refused(claim: str) -> None:
    assert claim in _refused(_rs256(**{claim: None})).body["error"]


@pytest.mark.parametrize("value", [True, {"a": 1}, ["x"], "", "x" * 257, "bad\nvalue", "ünï"])
def test_unusable_claim_values_are_refused(value: Any) -> None:
    _refused(_rs256(imageable_id=value))


def test_garbage_tokens_are_refused() -> None:
    for garbage in ("x", "a.b.c", "Basic dXNlcjpwYXNz", "....", "eyJhbGciOiJSUzI1NiJ9.e30.AAAA"):
        _refused(garbage)


def test_over_http_401_and_403_bodies(tmp_path: Path) -> None:
    from pinster_ingress import create_app

    app = create_app(si.settings(tmp_path, PAIR.public), uploads=si.FakeUploads())
    client = si.client(app)
    missing = client.post("/v1/images", json={})
    assert missing.status_code == 401
    assert missing.json() == {
        "error": "Request missing valid Authorization header.",
        "reason": "MissingToken",
    }
    wrong = client.post(
        "/v1/images", json={}, headers={"Authorization": f"Bearer {_rs256(OTHER.private)}"}
    )
    assert wrong.status_code == 403
    assert wrong.json()["reason"] == "InvalidToken"
    status = client.get("/v1/images/img-x", headers={"Authorization": "Bearer nope"})
    assert status.status_code == 403


# --- JWKS ----------------------------------------------------------------------------


def _jwk(public: bytes, kid: str) -> dict[str, Any]:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(load_pem_public_key(public)))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def test_jwks_file_with_rotation(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [_jwk(PAIR.public, "k1")]}))
    auth = AuthSettings(si.SERVICE_URL, si.API_URL, public_key=None, jwks=str(jwks))
    verifier = TokenVerifier(auth)
    assert verifier.verify(f"Bearer {_rs256(headers={'kid': 'k1'})}").user_id == "user-1"
    # PinsterApi rotates: a new key appears; a token naming it triggers a re-read.
    new = keys.generate_private_key()
    jwks.write_text(
        json.dumps({"keys": [_jwk(PAIR.public, "k1"), _jwk(keys.public_key_of(new), "k2")]})
    )
    assert verifier.verify(f"Bearer {_rs256(new, headers={'kid': 'k2'})}").user_id == "user-1"
    with pytest.raises(HttpError) as caught:
        verifier.verify(f"Bearer {_rs256(OTHER.private, headers={'kid': 'k3'})}")
    assert caught.value.status == 403
    with pytest.raises(HttpError):  # kid of a known key, signed by another
        verifier.verify(f"Bearer {_rs256(OTHER.private, headers={'kid': 'k1'})}")


@pytest.fixture
def jwks_url() -> Iterator[tuple[str, list[int]]]:
    body = json.dumps({"keys": [_jwk(PAIR.public, "k1")]}).encode()
    hits: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(1)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_jwks_url_is_fetched_once_and_cached(jwks_url: tuple[str, list[int]]) -> None:
    url, hits = jwks_url
    verifier = TokenVerifier(AuthSettings(si.SERVICE_URL, si.API_URL, public_key=None, jwks=url))
    assert verifier.blocking
    for _ in range(3):
        assert verifier.verify(f"Bearer {_rs256(headers={'kid': 'k1'})}").imageable_id == "42"
    assert len(hits) == 1
