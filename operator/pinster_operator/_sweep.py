"""The orphan sweep: what becomes of ``raw/`` objects no ImageUpload refers to.

Every PINSTER_ORPHAN_SWEEP_INTERVAL the upload area's ``raw/`` is listed. An object whose
md5 has an ImageUpload is left alone (in flight, or rejected and within its retention);
that question is answered by the controller's md5 index, without an API call. Any other
object older than PINSTER_ADOPT_AFTER is examined as the upload service examines a
directly stored one (:mod:`pinster_images.adoption`):

* upload metadata and passing checks: the ImageUpload it should have had is created in
  the upload service's namespace (a missed storage event, a create that failed after the
  put, an object the replaced service left);
* a failed check: the object is deleted and a Warning Event on the name the upload would
  have had says why (the upload service's status read answers it as Rejected);
* no upload metadata: nobody can be told about it; deleted once older than
  PINSTER_ORPHAN_GRACE.

Without adoption (PINSTER_ADOPT_AFTER=0) every such object is deleted after the grace.
The same sweep deletes the result records (:mod:`pinster_images.results`) nobody will
read, once older than PINSTER_ORPHAN_GRACE: an upload's records when no ImageUpload of
that name exists (deleted by hand or with its namespace, or while the operator was
down; the TTL deletes them with the upload otherwise), a Job's bundle when the Job is
gone (deleted while the operator was down, which deletes it otherwise). Both questions
are answered from what the controller keeps from its watches, without an API call.

Before anything is adopted or deleted, the API server is asked once about that object
(an ImageUpload of those bytes, the upload or Job of that record): the index may be
behind it (its first listing still running when a short PINSTER_ORPHAN_SWEEP_INTERVAL
comes round, a watch catching up), and what the sweep deletes cannot come back. So the
index spares an API call for every object that has its upload, and only the rare
orphan costs one.

A failure on one object (the object store or the API server away) is logged and the
sweep goes on with the next; the next sweep tries that object again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pinster_images import logs, resource, results
from pinster_images.adoption import (
    REJECTED_EVENT_REASON,
    Adoptable,
    NotAnUpload,
    Rejection,
    dispose,
    examine,
)
from pinster_images.errors import NotFoundError
from pinster_images.storage import RAW_PREFIX, Area, Storage
from pinster_operator._errors import classify
from pinster_operator._kube import Kube
from pinster_operator._queue import Key
from pinster_operator._settings import AdoptionSettings, OperatorSettings

logger = logging.getLogger("pinster_operator")

#: ``app.kubernetes.io/component`` of an ImageUpload the sweep created.
ADOPTED_COMPONENT = "adopted"


@dataclass
class SweepSummary:
    """How many objects one sweep listed, and the keys it adopted, rejected (deleted, with
    an Event), deleted (``raw/`` objects without upload metadata, result objects nobody
    will read), and failed on (tried again next time)."""

    listed: int = 0
    adopted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass
class OrphanSweep:
    settings: OperatorSettings
    kube: Kube
    storage: Storage
    #: Whether an ImageUpload of these bytes is known (the controller's md5 index).
    md5_known: Callable[[str], bool]
    #: Tells the index about an upload the sweep created, before its watch event.
    adopted: Callable[[Key, str], None]
    #: Whether an ImageUpload of this namespace and name is known (the same index).
    upload_known: Callable[[Key], bool]
    #: Whether a Job of ours of this namespace and name is known (its watch).
    job_known: Callable[[Key], bool]

    def run(self) -> SweepSummary:
        summary = SweepSummary()
        now = datetime.now(UTC)
        for key in self.storage.list(Area.UPLOAD, RAW_PREFIX):
            summary.listed += 1
            if not self.md5_known(key.removeprefix(RAW_PREFIX)):
                with self._guarded(key, summary):
                    self._sweep_raw(key, now, summary)
        if self.settings.cleanup.orphan_grace:
            for key in self.storage.list(Area.UPLOAD, results.RESULTS_PREFIX):
                summary.listed += 1
                owner = results.owner_of(key)
                if owner is not None and not self._exists(owner):
                    with self._guarded(key, summary):
                        self._sweep_record(key, owner, now, summary)
        return summary

    @contextmanager
    def _guarded(self, key: str, summary: SweepSummary) -> Iterator[None]:
        """A failure on ``key`` is logged and counted, and the sweep goes on."""
        try:
            yield
        except Exception as exc:
            retry = classify(exc)
            logger.log(
                logging.ERROR if retry.permanent else logging.WARNING,
                "orphan sweep skipped %s (%s: %s); the next sweep tries again",
                key,
                retry.reason,
                retry.message,
                exc_info=retry.permanent,
                extra={"key": key},
            )
            summary.failed.append(key)

    def _exists(self, owner: results.Owner) -> bool:
        """Whether the owner of a result key may still read it (or is not ours: a
        namespace this operator does not watch)."""
        watched = self.settings.namespaces
        if watched and owner.namespace not in watched:
            return True
        known = self.job_known if owner.kind == "job" else self.upload_known
        return known((owner.namespace, owner.name))

    def _sweep_raw(self, key: str, now: datetime, summary: SweepSummary) -> None:
        info = self.storage.head(Area.UPLOAD, key)
        if info is None or info.modified is None:
            return
        age = now - info.modified
        adoption = self.settings.adoption
        grace = timedelta(seconds=self.settings.cleanup.orphan_grace)
        past_grace = bool(grace) and age >= grace
        # Old enough to act on: past the adoption window, or without adoption the grace.
        if not (age >= timedelta(seconds=adoption.after) if adoption is not None else past_grace):
            return
        if self.kube.uploads_with_md5(key.removeprefix(RAW_PREFIX)):
            return  # the index is behind the API server: not an orphan
        if adoption is not None:
            try:
                adoptable = examine(self.storage, key, adoption.limits, adoption.thumbnail_sizes)
            except NotFoundError:
                return  # deleted since the HEAD: nothing to do
            except NotAnUpload:
                pass  # only the grace below decides
            except Rejection as rejection:
                self._reject(key, rejection, adoption)
                summary.rejected.append(key)
                return
            else:
                if adoptable is not None and self._adopt(key, adoptable, adoption):
                    summary.adopted.append(key)
                return
        if not past_grace:
            return
        self.storage.delete(Area.UPLOAD, key)
        summary.deleted.append(key)
        logger.warning(
            "deleted orphaned raw object %s: no ImageUpload refers to it after %s",
            key,
            grace,
            extra={"md5": key.removeprefix(RAW_PREFIX)},
        )

    def _sweep_record(
        self, key: str, owner: results.Owner, now: datetime, summary: SweepSummary
    ) -> None:
        grace = timedelta(seconds=self.settings.cleanup.orphan_grace)
        info = self.storage.head(Area.UPLOAD, key)
        if info is None or info.modified is None or now - info.modified < grace:
            return
        if self._in_cluster(owner):
            return  # the index is behind the API server: still read by its owner
        self.storage.delete(Area.UPLOAD, key)
        summary.deleted.append(key)
        logger.info(
            "deleted result object %s: older than %s, and its ImageUpload or Job is gone",
            key,
            grace,
            extra={"key": key},
        )

    def _in_cluster(self, owner: results.Owner) -> bool:
        """Whether the API server has the owner of a result key (one request)."""
        if owner.kind == "job":
            return self.kube.get_job(owner.namespace, owner.name) is not None
        return self.kube.get_upload(owner.namespace, owner.name) is not None

    def _adopt(self, key: str, adoptable: Adoptable, adoption: AdoptionSettings) -> bool:
        """Create the upload; False when it exists already (its event still to come, or
        in a namespace not watched)."""
        namespace = adoption.namespace
        created = self.kube.create_upload(adoptable.manifest(namespace, ADOPTED_COMPONENT))
        # Known from now on, so the next sweep does not try again before the event.
        self.adopted((namespace, adoptable.name), adoptable.spec.md5)
        log = logs.for_upload(logger, namespace, adoptable.name)
        if created:
            log.info(
                "adopted %s: stored with upload metadata, no ImageUpload after %.0fs",
                key,
                adoption.after,
                extra={"key": key, "bytes": adoptable.spec.byte_size},
            )
        else:
            log.info("%s has its ImageUpload already", key, extra={"key": key})
        return created

    def _reject(self, key: str, rejection: Rejection, adoption: AdoptionSettings) -> None:
        namespace = adoption.namespace
        reference = resource.reference(rejection.name, namespace)
        message = dispose(
            self.storage,
            rejection,
            lambda message: self.kube.event(reference, "Warning", REJECTED_EVENT_REASON, message),
        )
        logs.for_upload(logger, namespace, rejection.name).warning(
            "stored object rejected: %s", message, extra={"key": key, "reason": rejection.reason}
        )
