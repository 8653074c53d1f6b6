"""Operator settings, read once from ``PINSTER_*`` environment variables.

Small frozen groups (jobs, batching, notifications, clean-up, adoption) combined into one
:class:`OperatorSettings`, as kopf does with its own settings. Every error names the
variable (``ConfigError`` from :mod:`pinster_images.config`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pinster_images.config import (
    Environ,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_optional,
    env_pem,
    env_str,
    env_thumbnail_sizes,
)
from pinster_images.errors import ConfigError
from pinster_images.resource import DEFAULT_THUMBNAIL_SIZES
from pinster_images.sniff import ImageLimits
from pinster_images.storage import StorageSettings

#: Variables only the operator needs; never copied into Job pods (the key is a secret).
OPERATOR_ONLY_PREFIXES: tuple[str, ...] = (
    "PINSTER_JOB_",
    "PINSTER_BATCH_",
    "PINSTER_NOTIFY_",
    "PINSTER_SERVICE_PRIVATE_KEY",
    "PINSTER_API_PUBLIC_KEY",
    "PINSTER_API_JWKS",
    "PINSTER_SNS_",
    "PINSTER_FLAGGED_PATH",
    "PINSTER_METRICS_PORT",
    "PINSTER_HEALTH_PORT",
    "PINSTER_OPERATOR_HOST",
    "PINSTER_WATCH_NAMESPACES",
    "PINSTER_WORKERS",
    "PINSTER_POLL_INTERVAL",
    "PINSTER_REJECTED_RETENTION",
    "PINSTER_TERMINAL_TTL",
    "PINSTER_ORPHAN_",
    "PINSTER_ADOPT_AFTER",
    "PINSTER_UPLOAD_NAMESPACE",
)


def _json_env(env: Environ, name: str, default: Any, expected: type) -> Any:
    raw = env_optional(env, name)
    if raw is None:
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, expected):
        raise ConfigError(f"{name} must be a JSON {expected.__name__}")
    return value


@dataclass(frozen=True)
class JobSettings:
    """How the moderation and thumbnail Jobs are built."""

    image: str
    image_pull_policy: str = "IfNotPresent"
    command: tuple[str, ...] = ("pinster-images", "job")
    service_account: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    backoff_limit: int = 2
    active_deadline_seconds: int = 600
    ttl_seconds_after_finished: int = 600
    #: Operator-level attempts: how many Jobs may be tried for one upload and stage.
    attempts: int = 2
    env_from_configmap: str | None = None
    env_from_secret: str | None = None
    #: Environment copied from the operator into the pods (name -> value).
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls, env: Environ) -> JobSettings:
        pull = env_choice(
            env,
            "PINSTER_JOB_IMAGE_PULL_POLICY",
            "IfNotPresent",
            ("always", "ifnotpresent", "never"),
        )
        tolerations = _json_env(env, "PINSTER_JOB_TOLERATIONS", [], list)
        node_selector = _json_env(env, "PINSTER_JOB_NODE_SELECTOR", {}, dict)
        return cls(
            image=env_str(env, "PINSTER_JOB_IMAGE", "pinster-images:latest"),
            image_pull_policy={"always": "Always", "never": "Never"}.get(pull, "IfNotPresent"),
            command=tuple(env_str(env, "PINSTER_JOB_COMMAND", "pinster-images job").split()),
            service_account=env_optional(env, "PINSTER_JOB_SERVICE_ACCOUNT"),
            resources=_json_env(env, "PINSTER_JOB_RESOURCES", {}, dict),
            node_selector={str(k): str(v) for k, v in node_selector.items()},
            tolerations=list(tolerations),
            backoff_limit=env_int(env, "PINSTER_JOB_BACKOFF_LIMIT", 2, minimum=0),
            active_deadline_seconds=env_int(env, "PINSTER_JOB_ACTIVE_DEADLINE", 600, minimum=1),
            ttl_seconds_after_finished=env_int(env, "PINSTER_JOB_TTL", 600, minimum=0),
            attempts=env_int(env, "PINSTER_JOB_ATTEMPTS", 2, minimum=1),
            env_from_configmap=env_optional(env, "PINSTER_JOB_ENV_FROM_CONFIGMAP"),
            env_from_secret=env_optional(env, "PINSTER_JOB_ENV_FROM_SECRET"),
            env=pass_through_env(env),
        )


def pass_through_env(env: Environ) -> tuple[tuple[str, str], ...]:
    """The operator's own settings the Jobs share (storage, moderation, thumbnails).

    With ``PINSTER_JOB_ENV_PASSTHROUGH=false`` nothing is copied and the pods get their
    settings only from the ConfigMap/Secret named in ``PINSTER_JOB_ENV_FROM_*`` (the
    chart's way); the default copies so the embedded default needs no extra objects.
    ``PINSTER_JOB_PASS_ENV`` names further variables to copy (e.g. AWS credentials in
    development).
    """
    if not env_bool(env, "PINSTER_JOB_ENV_PASSTHROUGH", True):
        return ()
    extra = set(env_list(env, "PINSTER_JOB_PASS_ENV", ("AWS_REGION", "AWS_DEFAULT_REGION")))
    chosen: dict[str, str] = {}
    for name in sorted(env):
        value = env[name]
        if name in extra or (
            name.startswith("PINSTER_") and not name.startswith(OPERATOR_ONLY_PREFIXES)
        ):
            chosen[name] = value
    return tuple(chosen.items())


@dataclass(frozen=True)
class BatchSettings:
    window: float = 2.0
    max_size: int = 20
    #: unfinished Jobs per stage and namespace before new uploads wait for one to end
    #: (then sharing a larger Job); 0: no cap
    max_running: int = 4
    #: A Job carries its uploads in one environment variable, which Linux caps at 128 KiB:
    #: ~0.15 KB per upload as the upload service makes them, 1.8 KB at the CRD's limits.
    MAX_SIZE_LIMIT = 64

    @classmethod
    def from_env(cls, env: Environ) -> BatchSettings:
        return cls(
            window=env_float(env, "PINSTER_BATCH_WINDOW", 2.0, minimum=0.0),
            max_size=env_int(env, "PINSTER_BATCH_MAX", 20, minimum=1, maximum=cls.MAX_SIZE_LIMIT),
            max_running=env_int(env, "PINSTER_BATCH_MAX_RUNNING", 4, minimum=0),
        )


@dataclass(frozen=True)
class NotifySettings:
    api_url: str
    service_url: str
    #: PEM of the image service's signing key; kept out of repr() and logs.
    private_key: bytes | None = field(repr=False)
    flagged_path: str = "/v1/images/flagged"
    deadline: float = 3600.0
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    timeout: float = 10.0
    sns_topic_arn: str | None = None
    sns_endpoint_url: str | None = None
    sns_region: str | None = None

    @classmethod
    def from_env(cls, env: Environ) -> NotifySettings:
        path = env_str(env, "PINSTER_FLAGGED_PATH", "/v1/images/flagged")
        if not path.startswith("/"):
            raise ConfigError(f"PINSTER_FLAGGED_PATH={path!r} must start with '/'")
        return cls(
            api_url=env_str(env, "PINSTER_API_URL").rstrip("/"),
            service_url=env_str(env, "PINSTER_SERVICE_URL"),
            private_key=env_pem(env, "PINSTER_SERVICE_PRIVATE_KEY"),
            flagged_path=path,
            deadline=env_float(env, "PINSTER_NOTIFY_DEADLINE", 3600.0, minimum=0.0),
            backoff_initial=env_float(env, "PINSTER_NOTIFY_BACKOFF_INITIAL", 1.0, minimum=0.01),
            backoff_max=env_float(env, "PINSTER_NOTIFY_BACKOFF_MAX", 300.0, minimum=0.01),
            timeout=env_float(env, "PINSTER_NOTIFY_TIMEOUT", 10.0, minimum=0.1),
            sns_topic_arn=env_optional(env, "PINSTER_SNS_TOPIC_ARN"),
            sns_endpoint_url=env_optional(env, "PINSTER_SNS_ENDPOINT_URL"),
            sns_region=env_optional(env, "PINSTER_SNS_REGION") or env_optional(env, "AWS_REGION"),
        )


@dataclass(frozen=True)
class CleanupSettings:
    rejected_retention: float = 7 * 86400.0
    terminal_ttl: float = 86400.0
    #: A raw object this old that no ImageUpload refers to and that carries no upload
    #: metadata (any such object, without adoption) is deleted (0: never).
    orphan_grace: float = 86400.0
    orphan_sweep_interval: float = 3600.0

    @classmethod
    def from_env(cls, env: Environ) -> CleanupSettings:
        return cls(
            rejected_retention=env_float(
                env, "PINSTER_REJECTED_RETENTION", 7 * 86400.0, minimum=0.0
            ),
            terminal_ttl=env_float(env, "PINSTER_TERMINAL_TTL", 86400.0, minimum=0.0),
            orphan_grace=env_float(env, "PINSTER_ORPHAN_GRACE", 86400.0, minimum=0.0),
            orphan_sweep_interval=env_float(
                env, "PINSTER_ORPHAN_SWEEP_INTERVAL", 3600.0, minimum=1.0
            ),
        )


@dataclass(frozen=True)
class AdoptionSettings:
    """What the orphan sweep makes of a ``raw/`` object with upload metadata and no
    ImageUpload: the ImageUpload the upload service would have created for it."""

    #: Where the upload service creates uploads (its release namespace).
    namespace: str
    limits: ImageLimits = field(default_factory=ImageLimits)
    thumbnail_sizes: tuple[str, ...] = DEFAULT_THUMBNAIL_SIZES
    #: Seconds before such an object is adopted: the upload service's own put-then-create
    #: and the replaced service's own pipeline finish well within them.
    after: float = 600.0

    @classmethod
    def from_env(
        cls, env: Environ, pod_namespace: str | None, watched: tuple[str, ...]
    ) -> AdoptionSettings | None:
        """None when PINSTER_ADOPT_AFTER is 0 (no adoption)."""
        after = env_float(env, "PINSTER_ADOPT_AFTER", 600.0, minimum=0.0)
        if after == 0:
            return None
        namespace = (
            env_optional(env, "PINSTER_UPLOAD_NAMESPACE")
            or pod_namespace
            or next(iter(watched), None)
        )
        if namespace is None:
            raise ConfigError(
                "PINSTER_UPLOAD_NAMESPACE is required: the namespace the upload service "
                "creates ImageUploads in, where the orphan sweep adopts stored uploads "
                "(defaults: PINSTER_POD_NAMESPACE, then the first of "
                "PINSTER_WATCH_NAMESPACES; neither is set). PINSTER_ADOPT_AFTER=0 turns "
                "adoption off"
            )
        if watched and namespace not in watched:
            # The operator's Roles exist only in the namespaces it watches, and an upload
            # created elsewhere would never be reconciled.
            raise ConfigError(
                f"PINSTER_UPLOAD_NAMESPACE={namespace!r} (where stored uploads are adopted) "
                f"is not among PINSTER_WATCH_NAMESPACES ({', '.join(watched)}): add it, or "
                "set PINSTER_ADOPT_AFTER=0 to turn adoption off"
            )
        return cls(
            namespace=namespace,
            limits=ImageLimits.from_env(env),
            thumbnail_sizes=env_thumbnail_sizes(env, DEFAULT_THUMBNAIL_SIZES),
            after=after,
        )


@dataclass(frozen=True)
class OperatorSettings:
    storage: StorageSettings
    jobs: JobSettings
    batch: BatchSettings
    notify: NotifySettings
    cleanup: CleanupSettings
    namespaces: tuple[str, ...] = ()
    workers: int = 8
    #: Safety-net re-check of uploads waiting for a Job (Job events usually come first).
    poll_interval: float = 10.0
    #: Address of the liveness and metrics servers (the pod IP on the devcluster).
    host: str = "0.0.0.0"  # noqa: S104 - a pod's servers listen on its interfaces
    health_port: int = 8080
    metrics_port: int = 9090
    log_level: str = "INFO"
    log_format: str = "json"
    #: How long start-up waits for the object store before it gives up (exit 1).
    startup_timeout: float = 60.0
    #: The operator's own Pod (downward API): a failed start-up is an Event on it.
    pod_name: str | None = None
    pod_namespace: str | None = None
    #: None: raw objects without an ImageUpload are never adopted (PINSTER_ADOPT_AFTER=0).
    adoption: AdoptionSettings | None = None

    @classmethod
    def from_env(cls, env: Environ) -> OperatorSettings:
        namespaces = env_list(env, "PINSTER_WATCH_NAMESPACES")
        pod_namespace = env_optional(env, "PINSTER_POD_NAMESPACE")
        settings = cls(
            storage=StorageSettings.from_env(env),
            jobs=JobSettings.from_env(env),
            batch=BatchSettings.from_env(env),
            notify=NotifySettings.from_env(env),
            cleanup=CleanupSettings.from_env(env),
            namespaces=namespaces,
            workers=env_int(env, "PINSTER_WORKERS", 8, minimum=1),
            poll_interval=env_float(env, "PINSTER_POLL_INTERVAL", 10.0, minimum=0.1),
            host=env_str(env, "PINSTER_OPERATOR_HOST", "0.0.0.0"),  # noqa: S104
            health_port=env_int(env, "PINSTER_HEALTH_PORT", 8080, minimum=0),
            metrics_port=env_int(env, "PINSTER_METRICS_PORT", 9090, minimum=0),
            log_level=env_choice(
                env, "PINSTER_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ).upper(),
            log_format=env_choice(env, "PINSTER_LOG_FORMAT", "json", ("json", "text")),
            startup_timeout=env_float(env, "PINSTER_STARTUP_TIMEOUT", 60.0, minimum=0.0),
            pod_name=env_optional(env, "PINSTER_POD_NAME"),
            pod_namespace=pod_namespace,
            adoption=AdoptionSettings.from_env(env, pod_namespace, namespaces),
        )
        if settings.health_port and settings.health_port == settings.metrics_port:
            raise ConfigError(
                f"PINSTER_METRICS_PORT and PINSTER_HEALTH_PORT are both {settings.health_port}: "
                "the metrics server would answer the health probes"
            )
        if settings.notify.private_key is None:
            raise ConfigError(
                "PINSTER_SERVICE_PRIVATE_KEY (or PINSTER_SERVICE_PRIVATE_KEY_FILE) is required: "
                "it signs the notifications to PinsterApi"
            )
        return settings
