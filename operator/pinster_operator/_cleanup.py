"""Clean-up at a deadline the state machine set: the raw bytes of a Rejected upload
(after ``PINSTER_REJECTED_RETENTION``) or of a Failed one (at its TTL), and a terminal
upload itself with its result records (``PINSTER_TERMINAL_TTL`` after it completed).
Published objects are never touched.

Also the raw bytes an upload deleted by someone else (by hand, with its namespace)
leaves behind: else the orphan sweep would take them for a lost upload and adopt them,
and the deleted upload would come back.

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
        if self._in_flight_elsewhere(obj):
            # Same bytes still being processed for another imageable: keep them.
            return Decision(facts.status, requeue_after=self.settings.poll_interval * 6)
        self._delete_raw(obj)
        logs.for_upload(logger, obj["metadata"]["namespace"], obj["metadata"]["name"]).info(
            "deleted raw bytes of a %s upload", (facts.status.get("phase") or "").lower()
        )
        return Decision(raw_deleted(facts.status, facts.now), requeue_after=0)

    def raw_of_deleted(self, obj: dict[str, Any], others_known: bool) -> None:
        """``obj`` was deleted while its status says its raw bytes are still stored
        (:func:`raw_kept`): delete them, unless another upload of them is in flight
        (asked of the API server only when the index knows ``others_known``). Blocking;
        never raises: bytes left behind are the orphan sweep's."""
        log = logs.for_upload(logger, obj["metadata"]["namespace"], obj["metadata"]["name"])
        try:
            if others_known and self._in_flight_elsewhere(obj):
                return
            self._delete_raw(obj)
        except Exception as exc:
            log.warning("the raw bytes of a deleted upload are left to the orphan sweep: %s", exc)
            return
        log.info(
            "deleted raw bytes of an upload deleted in %s",
            (phase_of(obj.get("status") or {}) or Phase.PENDING).value,
        )

    def delete_upload(self, namespace: str, name: str) -> None:
        """Delete the terminal upload, then its result records."""
        logs.for_upload(logger, namespace, name).info(
            "deleting terminal upload after %ss", self.settings.cleanup.terminal_ttl
        )
        self.kube.delete_upload(namespace, name)
        results.delete(self.storage, namespace, name)

    def _in_flight_elsewhere(self, obj: dict[str, Any]) -> bool:
        """Whether another upload of the same bytes is not done yet (an API call)."""
        md5 = ImageUploadSpec.from_dict(obj["spec"]).md5
        return any(
            o["metadata"].get("uid") != obj["metadata"].get("uid")
            and not (phase_of(o.get("status") or {}) or Phase.PENDING).terminal
            for o in self.kube.uploads_with_md5(md5)
        )

    def _delete_raw(self, obj: dict[str, Any]) -> None:
        spec = ImageUploadSpec.from_dict(obj["spec"])
        self.storage.delete(Area.UPLOAD, spec.key or raw_key(spec.md5))


def raw_kept(status: dict[str, Any]) -> bool:
    """Whether an upload's raw bytes are still stored by what its status says: until the
    thumbnail Job used them up (``Notifying``, ``Ready``) or the clean-up deleted them
    (``rawDeletedAt``)."""
    phase = phase_of(status)
    return phase not in (Phase.NOTIFYING, Phase.READY) and not status.get("rawDeletedAt")
