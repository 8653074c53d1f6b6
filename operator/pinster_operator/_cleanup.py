"""Clean-up at a deadline the state machine set: the raw bytes of a Rejected upload
(after ``PINSTER_REJECTED_RETENTION``) or of a Failed one (at its TTL), and a terminal
upload itself with its result records (``PINSTER_TERMINAL_TTL`` after it completed).
Published objects are never touched.

Raw objects no ImageUpload refers to, and result objects whose upload or Job is gone,
are the orphan sweep's (:mod:`._sweep`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pinster_images import logs, results
from pinster_images.resource import ImageUploadSpec, Phase
from pinster_images.storage import Area, Storage, raw_key
from pinster_operator._kube import Kube
from pinster_operator._machine import Decision, Facts, raw_deleted
from pinster_operator._settings import OperatorSettings
from pinster_operator._status import phase_of

logger = logging.getLogger("pinster_operator")


@dataclass
class Cleanup:
    settings: OperatorSettings
    kube: Kube
    storage: Storage

    def delete_raw(self, obj: dict[str, Any], facts: Facts) -> Decision:
        """Delete the upload's raw bytes, unless another upload of them is in flight."""
        spec = ImageUploadSpec.from_dict(obj["spec"])
        others = [
            o
            for o in self.kube.uploads_with_md5(spec.md5)
            if o["metadata"].get("uid") != obj["metadata"].get("uid")
            and not (phase_of(o.get("status") or {}) or Phase.PENDING).terminal
        ]
        if others:
            # Same bytes still being processed for another imageable: keep them.
            return Decision(facts.status, requeue_after=self.settings.poll_interval * 6)
        self.storage.delete(Area.UPLOAD, spec.key or raw_key(spec.md5))
        logs.for_upload(logger, obj["metadata"]["namespace"], obj["metadata"]["name"]).info(
            "deleted raw bytes of a %s upload", (facts.status.get("phase") or "").lower()
        )
        return Decision(raw_deleted(facts.status, facts.now), requeue_after=0)

    def delete_upload(self, namespace: str, name: str) -> None:
        """Delete the terminal upload, then its result records."""
        logs.for_upload(logger, namespace, name).info(
            "deleting terminal upload after %ss", self.settings.cleanup.terminal_ttl
        )
        self.kube.delete_upload(namespace, name)
        results.delete(self.storage, namespace, name)
