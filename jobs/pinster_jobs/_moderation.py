"""Moderation: one small protocol, three backends chosen by PINSTER_MODERATION_BACKEND.

A backend turns image bytes into a :class:`Verdict`; the verdict records which backend
(and model version) produced it, in the shape of the CRD's ``status.verdict``. Backends
raise ``TemporaryError`` for trouble a retry may fix (throttling, outages) and
``PermanentError`` for images they can never judge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pinster_images.resource import now_rfc3339
from pinster_images.sniff import ImageInfo
from pinster_jobs._settings import ModerationSettings

log = logging.getLogger("pinster_jobs.moderation")

Decision = Literal["Approved", "Rejected"]


@dataclass(frozen=True)
class Label:
    name: str
    confidence: float  # percent, 0-100, for every backend
    parent_name: str = ""
    taxonomy_level: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "parentName": self.parent_name,
            "confidence": round(self.confidence, 3),
        }
        if self.taxonomy_level is not None:
            data["taxonomyLevel"] = self.taxonomy_level
        return data


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    backend: str
    threshold: float
    model_version: str = ""
    labels: tuple[Label, ...] = ()
    decided_at: str = field(default_factory=now_rfc3339)

    @property
    def approved(self) -> bool:
        return self.decision == "Approved"

    def to_dict(self) -> dict[str, Any]:
        """The CRD's ``status.verdict``."""
        return {
            "decision": self.decision,
            "backend": self.backend,
            "modelVersion": self.model_version,
            "threshold": self.threshold,
            "decidedAt": self.decided_at,
            "labels": [label.to_dict() for label in self.labels],
        }


class Moderator(Protocol):
    #: The backend name recorded in verdicts.
    name: str

    def moderate(self, data: bytes, info: ImageInfo) -> Verdict:
        """Judge one image (already sniffed and within limits)."""
        ...


class ApproveAll:
    """``none``: approves everything. For development only, and says so at start."""

    name = "none"

    def __init__(self) -> None:
        log.warning(
            "PINSTER_MODERATION_BACKEND=none: every image is APPROVED WITHOUT MODERATION; "
            "use rekognition or nudenet anywhere real users upload"
        )

    def moderate(self, data: bytes, info: ImageInfo) -> Verdict:
        return Verdict(decision="Approved", backend=self.name, threshold=0.0)


def build_moderator(settings: ModerationSettings) -> Moderator:
    """The configured backend; imports its dependencies only when chosen."""
    if settings.backend == "rekognition":
        from pinster_jobs._moderation_rekognition import RekognitionModerator

        return RekognitionModerator(settings)
    if settings.backend == "nudenet":
        from pinster_jobs._moderation_nudenet import NudeNetModerator

        return NudeNetModerator(settings)
    return ApproveAll()
