"""``rekognition``: AWS Rekognition ``DetectModerationLabels`` with the image bytes.

Credentials come from boto3's standard chain. Rekognition takes JPEG or PNG bytes of at
most 5 MiB; anything else (WebP, GIF, AVIF, a large PNG) is sent as a JPEG re-encoded
from a downscaled copy. As in the original service, any label returned at or above
``MinConfidence`` rejects the image.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from pinster_images.errors import PermanentError, TemporaryError
from pinster_images.sniff import JPEG, PNG, ImageInfo
from pinster_jobs._moderation import Label, Verdict
from pinster_jobs._rescale import decode_within
from pinster_jobs._settings import ModerationSettings

log = logging.getLogger("pinster_jobs.moderation")

#: Rekognition's limit for ``Image.Bytes``.
MAX_BYTES = 5 * 1024 * 1024
#: The longest side sent when the image has to be converted (ample for moderation).
CONVERT_SIDE = 2048
_RETRYABLE = {
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "InternalServerError",
    "ServiceUnavailableException",
}
_UNJUDGEABLE = {"InvalidImageFormatException", "ImageTooLargeException"}


def prepare(data: bytes, info: ImageInfo) -> bytes:
    """Bytes Rekognition accepts: the original when it can, else a downscaled JPEG."""
    if info.content_type in (JPEG, PNG) and len(data) <= MAX_BYTES:
        return data
    side = CONVERT_SIDE
    while True:
        buffer = io.BytesIO()
        decode_within(data, info, side).save(buffer, "JPEG", quality=90)
        if buffer.tell() <= MAX_BYTES or side <= 256:
            return buffer.getvalue()
        side //= 2


class RekognitionModerator:
    name = "rekognition"

    def __init__(self, settings: ModerationSettings, client: Any = None) -> None:
        self.min_confidence = settings.min_confidence
        if client is None:
            import boto3
            from botocore.config import Config

            # Standard retry mode backs off on throttling; past that it is a Job retry.
            client = boto3.client(
                "rekognition",
                endpoint_url=settings.rekognition_endpoint_url,
                region_name=settings.rekognition_region,
                config=Config(
                    retries={"mode": "standard", "total_max_attempts": 5},
                    connect_timeout=5,
                    read_timeout=30,
                ),
            )
        self._client = client

    def moderate(self, data: bytes, info: ImageInfo) -> Verdict:
        from botocore.exceptions import BotoCoreError, ClientError

        payload = prepare(data, info)
        try:
            response = self._client.detect_moderation_labels(
                Image={"Bytes": payload}, MinConfidence=self.min_confidence
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in _UNJUDGEABLE:
                raise PermanentError(
                    f"Rekognition cannot judge this image: {code}", reason="UnsupportedImage"
                ) from exc
            if code in _RETRYABLE or status >= 500:
                raise TemporaryError(
                    f"Rekognition answered {code} after retries", reason="ModerationUnavailable"
                ) from exc
            raise TemporaryError(
                f"Rekognition refused the request: {code}", reason="ModerationRefused"
            ) from exc
        except BotoCoreError as exc:
            raise TemporaryError(
                f"Rekognition unreachable: {exc}", reason="ModerationUnavailable"
            ) from exc
        labels = tuple(
            Label(
                name=str(item.get("Name", "")),
                parent_name=str(item.get("ParentName", "")),
                confidence=float(item.get("Confidence", 0.0)),
                taxonomy_level=item.get("TaxonomyLevel"),
            )
            for item in response.get("ModerationLabels", [])
            if float(item.get("Confidence", 0.0)) >= self.min_confidence
        )
        return Verdict(
            decision="Rejected" if labels else "Approved",
            backend=self.name,
            threshold=self.min_confidence,
            model_version=str(response.get("ModerationModelVersion", "")),
            labels=labels,
        )
