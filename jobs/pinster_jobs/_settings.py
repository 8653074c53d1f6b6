"""Job pod settings, read once from the ``PINSTER_*`` variables the operator passes on.

Three small groups (moderation, thumbnails, storage) plus the image limits shared with
the upload service, combined into one :class:`JobSettings`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pinster_images.config import (
    Environ,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_optional,
    env_str,
)
from pinster_images.errors import ConfigError
from pinster_images.sniff import ImageLimits
from pinster_images.storage import StorageSettings

BACKENDS = ("rekognition", "nudenet", "none")
#: The embedded/CLI default; the Helm chart sets ``rekognition`` for production.
DEFAULT_BACKEND = "none"
DEFAULT_MIN_CONFIDENCE = 99.0
#: NudeNet 3.4 class names that reject an image, with their default score thresholds.
DEFAULT_NUDENET_THRESHOLDS: dict[str, float] = {
    "FEMALE_GENITALIA_EXPOSED": 0.5,
    "MALE_GENITALIA_EXPOSED": 0.5,
    "FEMALE_BREAST_EXPOSED": 0.6,
    "BUTTOCKS_EXPOSED": 0.6,
    "ANUS_EXPOSED": 0.5,
}
#: A pod's name is ``<job name>-<5 random characters>`` (HOSTNAME in Kubernetes).
_POD_OF_JOB = re.compile(r"^(?P<job>[a-z0-9][a-z0-9.-]*)-[a-z0-9]{5}$")


def _thresholds(env: Environ, name: str) -> dict[str, float]:
    value = env_optional(env, name)
    if value is None:
        return dict(DEFAULT_NUDENET_THRESHOLDS)
    result: dict[str, float] = {}
    for item in env_list(env, name):
        label, sep, raw = item.partition("=")
        try:
            score = float(raw)
        except ValueError:
            score = -1.0
        if not sep or not label.strip() or not 0.0 <= score <= 1.0:
            raise ConfigError(
                f"{name}: {item!r} is not LABEL=SCORE with SCORE between 0 and 1 "
                "(e.g. FEMALE_BREAST_EXPOSED=0.6)"
            )
        result[label.strip().upper()] = score
    return result


@dataclass(frozen=True)
class ModerationSettings:
    backend: str = DEFAULT_BACKEND
    #: Rekognition ``MinConfidence`` (percent); any label at or above it rejects.
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    rekognition_endpoint_url: str | None = None
    rekognition_region: str | None = None
    nudenet_thresholds: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_NUDENET_THRESHOLDS)
    )

    @classmethod
    def from_env(cls, env: Environ) -> ModerationSettings:
        return cls(
            backend=env_choice(env, "PINSTER_MODERATION_BACKEND", DEFAULT_BACKEND, BACKENDS),
            min_confidence=env_float(
                env, "PINSTER_MODERATION_MIN_CONFIDENCE", DEFAULT_MIN_CONFIDENCE, minimum=0.0
            ),
            rekognition_endpoint_url=env_optional(env, "PINSTER_REKOGNITION_ENDPOINT_URL"),
            rekognition_region=env_optional(env, "PINSTER_REKOGNITION_REGION")
            or env_optional(env, "AWS_REGION")
            or env_optional(env, "AWS_DEFAULT_REGION"),
            nudenet_thresholds=_thresholds(env, "PINSTER_NUDENET_THRESHOLDS"),
        )


@dataclass(frozen=True)
class ThumbnailSettings:
    quality: int = 80
    webp: bool = False
    watermark_file: Path | None = None

    @classmethod
    def from_env(cls, env: Environ) -> ThumbnailSettings:
        quality = env_int(env, "PINSTER_THUMBNAIL_QUALITY", cls.quality, minimum=1)
        if quality > 100:
            raise ConfigError(f"PINSTER_THUMBNAIL_QUALITY={quality} must be at most 100")
        watermark = env_optional(env, "PINSTER_WATERMARK_FILE")
        if watermark is not None and not Path(watermark).is_file():
            raise ConfigError(f"PINSTER_WATERMARK_FILE={watermark!r} is not a readable file")
        return cls(
            quality=quality,
            webp=env_bool(env, "PINSTER_THUMBNAIL_WEBP", cls.webp),
            watermark_file=Path(watermark) if watermark else None,
        )


@dataclass(frozen=True)
class JobSettings:
    storage: StorageSettings
    moderation: ModerationSettings
    thumbnails: ThumbnailSettings
    limits: ImageLimits
    #: Recorded in each result; from PINSTER_JOB_NAME, else derived from the pod name.
    job_name: str = ""
    termination_message_path: Path = Path("/dev/termination-log")
    log_level: str = "INFO"
    log_format: str = "json"

    @classmethod
    def from_env(cls, env: Environ | None = None) -> JobSettings:
        env = os.environ if env is None else env
        job_name = env_optional(env, "PINSTER_JOB_NAME") or ""
        if not job_name:
            match = _POD_OF_JOB.match(env_optional(env, "HOSTNAME") or "")
            job_name = match.group("job") if match else ""
        return cls(
            storage=StorageSettings.from_env(env),
            moderation=ModerationSettings.from_env(env),
            thumbnails=ThumbnailSettings.from_env(env),
            limits=ImageLimits.from_env(env),
            job_name=job_name,
            termination_message_path=Path(
                env_str(env, "TERMINATION_MESSAGE_PATH", "/dev/termination-log")
            ),
            log_level=env_choice(
                env, "PINSTER_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ).upper(),
            log_format=env_choice(env, "PINSTER_LOG_FORMAT", "json", ("json", "text")),
        )
