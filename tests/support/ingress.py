"""Building the upload service in-process for tests: keys, tokens, settings, a fake
API server gateway (unit tests only; integration tests use the devcluster)."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pinster_ingress import AuthSettings, IngressSettings
from pinster_ingress._settings import DirectUploadSettings

from pinster_images import keys
from pinster_images.adoption import parse_rejection_message
from pinster_images.errors import TemporaryError
from pinster_images.resource import DEFAULT_THUMBNAIL_SIZES
from pinster_images.sniff import ImageLimits
from pinster_images.storage import StorageSettings
from tests.support.storage import directory_settings

SERVICE_URL = "http://images.test"
API_URL = "http://pinster-api.test"
CLAIMS = {"user_id": "user-1", "imageable_type": "Pin", "imageable_id": "42"}


@dataclass(frozen=True)
class KeyPair:
    private: bytes
    public: bytes


def key_pair() -> KeyPair:
    private = keys.generate_private_key()
    return KeyPair(private=private, public=keys.public_key_of(private))


def token(pair: KeyPair, *, ttl: float = 60, **overrides: Any) -> str:
    claims = {**CLAIMS, **overrides}
    return keys.mint(pair.private, issuer=API_URL, audience=SERVICE_URL, claims=claims, ttl=ttl)


def bearer(pair: KeyPair, **overrides: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(pair, **overrides)}"}


def settings(
    storage_dir: Path,
    public_key: bytes | None,
    *,
    limits: ImageLimits | None = None,
    jwks: str | None = None,
    namespace: str = "uploads",
    storage: StorageSettings | None = None,
    direct: DirectUploadSettings | None = None,
) -> IngressSettings:
    return IngressSettings(
        auth=AuthSettings(
            service_url=SERVICE_URL, api_url=API_URL, public_key=public_key, jwks=jwks
        ),
        storage=storage or directory_settings(storage_dir),
        limits=limits or ImageLimits(),
        thumbnail_sizes=DEFAULT_THUMBNAIL_SIZES,
        namespace=namespace,
        direct=direct,
    )


@dataclass
class FakeUploads:
    """ImageUploads held in a dict, with 409 semantics; ``down`` makes it unreachable."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    down: bool = False
    creates: int = 0
    #: rejection reports by (namespace, name): the message an Event would carry
    rejections: dict[tuple[str, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _check(self) -> None:
        if self.down:
            raise TemporaryError("API server unreachable (fake)", reason="KubernetesUnavailable")

    def create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self._check()
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        with self._lock:
            self.creates += 1
            if key in self.objects:
                return copy.deepcopy(self.objects[key]), False
            stored = copy.deepcopy(manifest)
            stored["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
            self.objects[key] = stored
            return copy.deepcopy(stored), True

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        found = self.objects.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def ping(self) -> None:
        self._check()

    def report_rejection(self, namespace: str, name: str, message: str) -> None:
        self._check()
        with self._lock:
            self.rejections[(namespace, name)] = message

    def rejection(self, namespace: str, name: str) -> dict[str, str] | None:
        self._check()
        message = self.rejections.get((namespace, name))
        if message is None:
            return None
        reason, why = parse_rejection_message(message)
        return {"reason": reason, "message": why, "time": "2026-01-01T00:00:00Z"}


__all__ = ["CLAIMS", "FakeUploads", "KeyPair", "bearer", "key_pair", "replace", "settings", "token"]


def client(app: Any) -> Any:
    """A starlette TestClient (its httpx deprecation notice silenced)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

        return TestClient(app, raise_server_exceptions=False)
