"""Verifying PinsterApi's upload tokens: RS256 only, ``aud``, ``iss``, ``exp``, ``nbf``.

The key is PinsterApi's public key, or a JWKS (file or URL) so keys can rotate: the set
is cached and fetched again when a token names a ``kid`` it does not hold.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from pinster_images.errors import ConfigError
from pinster_ingress._errors import HttpError, forbidden, unauthorized
from pinster_ingress._settings import AuthSettings

ALGORITHMS = ["RS256"]  # pinned: never "none", never HS256 with a public key as secret
REQUIRED_CLAIMS = ("user_id", "imageable_type", "imageable_id")
MAX_CLAIM_LENGTH = 256  # the CRD's bound on uploader fields


@dataclass(frozen=True)
class Claims:
    user_id: str
    imageable_type: str
    imageable_id: str


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <JWT>`` header; 401 when there is none."""
    if not header:
        raise unauthorized()
    # The original stripped "Bearer " and used whatever remained.
    token = header.replace("Bearer ", "", 1).strip()
    if not token:
        raise unauthorized()
    return token


def _claim(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise forbidden(f"claim {name!r} is missing or not a string")
    text = str(value)
    if not text or len(text) > MAX_CLAIM_LENGTH or not text.isascii() or not text.isprintable():
        raise forbidden(f"claim {name!r} must be 1-{MAX_CLAIM_LENGTH} printable ASCII characters")
    return text


class FileJwks:
    """A JWKS file (a mounted Secret or ConfigMap), read again when a kid is unknown."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._keys: list[jwt.PyJWK] = []
        self._mtime = -1.0

    def _load(self) -> None:
        try:
            mtime = self._path.stat().st_mtime
            if mtime != self._mtime:
                self._keys = list(jwt.PyJWKSet.from_json(self._path.read_text()).keys)
                self._mtime = mtime
        except (OSError, jwt.PyJWTError, ValueError) as exc:
            raise jwt.PyJWKClientError(f"cannot read JWKS file {self._path}: {exc}") from None

    def get_signing_keys(self) -> list[jwt.PyJWK]:
        with self._lock:
            if not self._keys:
                self._load()
            return list(self._keys)

    def get_signing_key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            for attempt in range(2):
                if attempt or not self._keys:
                    self._mtime = -1.0 if attempt else self._mtime
                    self._load()
                for key in self._keys:
                    if key.key_id == kid:
                        return key
        raise jwt.PyJWKClientError(f'Unable to find a signing key that matches: "{kid}"')


class TokenVerifier:
    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        # Parsed once: a broken key fails at start, not on every request.
        self._public_key: Any = None
        if settings.public_key is not None:
            try:
                self._public_key = serialization.load_pem_public_key(settings.public_key)
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"PINSTER_API_PUBLIC_KEY is not a PEM public key: {exc}"
                ) from None
        self._jwks: jwt.PyJWKClient | FileJwks | None = None
        if settings.jwks is not None:
            if settings.jwks.startswith(("http://", "https://")):
                # cooldown: a flood of unknown kids triggers at most one fetch per 10 s.
                self._jwks = jwt.PyJWKClient(
                    settings.jwks, lifespan=300, timeout=5, cooldown_duration=10
                )
            else:
                self._jwks = FileJwks(Path(settings.jwks.removeprefix("file://")))

    @property
    def blocking(self) -> bool:
        """Whether verify() may do I/O (JWKS fetch) and belongs in a thread."""
        return self._jwks is not None

    def _key(self, token: str) -> Any:
        if self._jwks is None:
            return self._public_key
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise forbidden(str(exc)) from None
        kid = header.get("kid")
        try:
            if isinstance(kid, str):
                return self._jwks.get_signing_key(kid).key
            if self._public_key is not None:
                return self._public_key
            keys = self._jwks.get_signing_keys()
        except jwt.PyJWKClientError as exc:
            if self._public_key is not None and kid is None:
                return self._public_key
            raise forbidden(str(exc)) from None
        if len(keys) != 1:
            raise forbidden("token has no 'kid' and the JWKS holds several keys")
        return keys[0].key

    def verify(self, header: str | None) -> Claims:
        token = bearer_token(header)
        try:
            payload = jwt.decode(
                token,
                self._key(token),
                algorithms=ALGORITHMS,
                audience=self._settings.service_url,
                issuer=self._settings.api_url,
                leeway=self._settings.leeway,
                # As the original (jsonwebtoken): exp and nbf are checked when present.
                options={"require": ["aud", "iss"], "verify_nbf": True, "verify_exp": True},
            )
        except HttpError:
            raise
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise forbidden(str(exc) or type(exc).__name__) from None
        return Claims(*(_claim(payload, name) for name in REQUIRED_CLAIMS))
