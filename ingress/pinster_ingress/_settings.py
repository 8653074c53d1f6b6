"""The upload service's settings, read once from the environment (see docs/ingress.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pinster_images.config import (
    Environ,
    ThumbnailSizes,
    env_choice,
    env_float,
    env_int,
    env_optional,
    env_pem,
    env_str,
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
class IngressSettings:
    auth: AuthSettings
    storage: StorageSettings
    limits: ImageLimits
    thumbnail_sizes: tuple[str, ...]
    namespace: str
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
        sizes = env_optional(env, "PINSTER_THUMBNAIL_SIZES")
        try:
            thumbnail_sizes = ThumbnailSizes.parse(
                tuple(s.strip() for s in sizes.split(",") if s.strip())
                if sizes
                else DEFAULT_THUMBNAIL_SIZES
            ).sizes
        except ValueError as exc:
            raise ConfigError(f"PINSTER_THUMBNAIL_SIZES={sizes!r} is invalid: {exc}") from None
        return cls(
            auth=AuthSettings.from_env(env),
            storage=StorageSettings.from_env(env),
            limits=ImageLimits.from_env(env),
            thumbnail_sizes=thumbnail_sizes,
            namespace=default_namespace(env),
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
