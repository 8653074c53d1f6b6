"""The upload service's settings, read once from the environment (see docs/ingress.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pinster_images.config import (
    Environ,
    Secret,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_optional,
    env_pem,
    env_secret,
    env_str,
    env_thumbnail_sizes,
)
from pinster_images.errors import ConfigError
from pinster_images.resource import DEFAULT_THUMBNAIL_SIZES
from pinster_images.sniff import ImageLimits
from pinster_images.storage import StorageSettings

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_namespace(env: Environ, sa_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """PINSTER_NAMESPACE, else the Pod's own namespace, else ``default``."""
    configured = env_optional(env, "PINSTER_NAMESPACE")
    if configured is not None:
        return configured
    try:
        return sa_file.read_text().strip() or "default"
    except OSError:
        return "default"


@dataclass(frozen=True)
class AuthSettings:
    service_url: str  # ``aud`` of incoming tokens
    api_url: str  # ``iss`` of incoming tokens
    public_key: bytes | None  # PinsterApi's PEM public key
    jwks: str | None  # a JWKS file path or URL (rotating keys)
    leeway: float = 10.0

    @classmethod
    def from_env(cls, env: Environ) -> AuthSettings:
        settings = cls(
            service_url=env_str(env, "PINSTER_SERVICE_URL"),
            api_url=env_str(env, "PINSTER_API_URL"),
            public_key=env_pem(env, "PINSTER_API_PUBLIC_KEY"),
            jwks=env_optional(env, "PINSTER_API_JWKS"),
            leeway=env_float(env, "PINSTER_JWT_LEEWAY", 10.0, minimum=0),
        )
        if settings.public_key is None and settings.jwks is None:
            raise ConfigError(
                "set PINSTER_API_PUBLIC_KEY (or PINSTER_API_PUBLIC_KEY_FILE) or PINSTER_API_JWKS"
            )
        return settings


@dataclass(frozen=True)
class DirectUploadSettings:
    """``POST /v1/uploads`` and ``POST /v1/storage-events`` (docs/ingress.md)."""

    #: What the object store sends as ``Authorization: Bearer <token>`` with its events.
    events_token: Secret
    #: Seconds a presigned POST stays valid.
    expires_in: int = 300

    MIN_TOKEN = 16
    MAX_EXPIRY = 3600

    @classmethod
    def from_env(cls, env: Environ) -> DirectUploadSettings | None:
        if not env_bool(env, "PINSTER_DIRECT_UPLOADS", False):
            return None
        token = env_secret(env, "PINSTER_STORAGE_EVENTS_TOKEN", "")
        if len(token.reveal()) < cls.MIN_TOKEN:
            raise ConfigError(
                "PINSTER_DIRECT_UPLOADS=true needs PINSTER_STORAGE_EVENTS_TOKEN: at least "
                f"{cls.MIN_TOKEN} characters the object store sends with its events"
            )
        expires_in = env_int(env, "PINSTER_DIRECT_UPLOAD_EXPIRES", 300, minimum=10)
        if expires_in > cls.MAX_EXPIRY:
            raise ConfigError(
                f"PINSTER_DIRECT_UPLOAD_EXPIRES={expires_in}: at most {cls.MAX_EXPIRY} seconds"
            )
        return cls(events_token=token, expires_in=expires_in)


@dataclass(frozen=True)
class IngressSettings:
    auth: AuthSettings
    storage: StorageSettings
    limits: ImageLimits
    thumbnail_sizes: tuple[str, ...]
    namespace: str
    #: None: direct-to-storage uploads are off (PINSTER_DIRECT_UPLOADS)
    direct: DirectUploadSettings | None = None
    host: str = "0.0.0.0"  # noqa: S104 - a Pod listens on all its interfaces
    port: int = 8080
    #: Server processes (uvicorn workers), each with its own event loop; one per core.
    workers: int = 1
    #: Seconds an idle client connection is kept: above the 60 s idle timeout of common
    #: load balancers, so that the server never closes a connection the balancer reuses.
    keep_alive: int = 65
    kube_timeout: float = 10.0
    retry_after: int = 5
    log_level: str = "INFO"
    log_format: str = "json"
    kubeconfig: str | None = None

    @classmethod
    def from_env(cls, env: Environ) -> IngressSettings:
        return cls(
            auth=AuthSettings.from_env(env),
            storage=StorageSettings.from_env(env),
            limits=ImageLimits.from_env(env),
            thumbnail_sizes=env_thumbnail_sizes(env, DEFAULT_THUMBNAIL_SIZES),
            namespace=default_namespace(env),
            direct=DirectUploadSettings.from_env(env),
            host=env_str(env, "PINSTER_INGRESS_HOST", "0.0.0.0"),  # noqa: S104
            port=env_int(env, "PINSTER_INGRESS_PORT", 8080, minimum=0),
            workers=env_int(env, "PINSTER_INGRESS_WORKERS", 1, minimum=1),
            keep_alive=env_int(env, "PINSTER_INGRESS_KEEP_ALIVE", 65, minimum=1),
            kube_timeout=env_float(env, "PINSTER_KUBE_TIMEOUT", 10.0, minimum=0.1),
            retry_after=env_int(env, "PINSTER_RETRY_AFTER", 5, minimum=1),
            log_level=env_str(env, "PINSTER_LOG_LEVEL", "INFO"),
            log_format=env_choice(env, "PINSTER_LOG_FORMAT", "json", ("json", "text")),
            kubeconfig=env_optional(env, "KUBECONFIG"),
        )
