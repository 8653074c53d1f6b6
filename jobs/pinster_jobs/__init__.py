"""Job workloads: moderation and thumbnails for batches of ImageUploads."""

from pinster_jobs._batch import (
    EXIT_OK,
    EXIT_TEMPORARY,
    Summary,
    run_batch,
)
from pinster_jobs._metadata import exif_orientation, strip_location
from pinster_jobs._moderation import ApproveAll, Label, Moderator, Verdict, build_moderator
from pinster_jobs._publish import publish, read_source
from pinster_jobs._settings import JobSettings, ModerationSettings, ThumbnailSettings
from pinster_jobs._thumbnail import (
    WEBP_SUFFIX,
    Geometry,
    Rendition,
    Source,
    ThumbnailEngine,
    fit,
)

__all__ = [
    "EXIT_OK",
    "EXIT_TEMPORARY",
    "WEBP_SUFFIX",
    "ApproveAll",
    "Geometry",
    "JobSettings",
    "Label",
    "ModerationSettings",
    "Moderator",
    "Rendition",
    "Source",
    "Summary",
    "ThumbnailEngine",
    "ThumbnailSettings",
    "Verdict",
    "build_moderator",
    "exif_orientation",
    "fit",
    "publish",
    "read_source",
    "run_batch",
    "strip_location",
]
