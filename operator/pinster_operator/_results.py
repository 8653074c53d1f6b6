"""Stage results as the controller reads them: a finished Job's bundle once, not one
object store GET per upload (see :mod:`pinster_images.results`).

:meth:`ResultReader.read` answers, for one upload whose stage's Job is done, in order:

1. the result this upload read before and has not moved past (the moderation verdict is
   read again once its thumbnail Job is assigned: that reconcile needs no GET);
2. its entry in the Job's bundle, if the Job served several uploads: the first upload
   of a Job to ask reads the whole bundle (one GET) and deletes it from the object
   store; the other uploads take their entries from memory;
3. its own record (one GET): the durable channel, for whatever a bundle lacks (a Job
   that failed part way, an older Job image, an operator restarted after the bundle was
   read).

Threads: workers read; one worker reconciles an upload at a time, so an upload's kept
result is touched by one thread; a Job's bundle is loaded under that Job's lock, so
uploads reconciled at once by several workers share one GET.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from pinster_images import results
from pinster_images.resource import Stage
from pinster_images.results import StageResult
from pinster_images.storage import Area, Storage
from pinster_operator._metrics import Metrics
from pinster_operator._queue import Key

logger = logging.getLogger("pinster_operator")

JobKey = tuple[str, str]


class ResultReader:
    #: Jobs whose bundle is remembered (read, or known to be absent). A Job's entries are
    #: taken by its uploads within seconds, so this bounds mostly empty ones; an entry
    #: lost to it is read from the upload's own record.
    JOBS_REMEMBERED = 256

    def __init__(self, storage: Storage, metrics: Metrics) -> None:
        self.storage = storage
        self.metrics = metrics
        self._kept: dict[Key, StageResult] = {}
        #: (namespace, job) -> upload name -> its result not yet taken
        self._bundles: OrderedDict[JobKey, dict[str, StageResult]] = OrderedDict()
        self._loading: dict[JobKey, threading.Lock] = {}
        self._guard = threading.Lock()

    def read(
        self, key: Key, stage: Stage, job: str, uid: str, *, bundled: bool
    ) -> StageResult | None:
        """The result of ``stage`` for the upload ``key`` (its ImageUpload's ``uid``),
        which ``job`` served and has finished; None when there is none (yet).
        ``bundled``: the Job may have written a bundle (it served several uploads)."""
        kept = self._kept.get(key)
        if kept is not None and kept.stage == stage:
            return kept
        namespace, name = key
        result = self._bundle(namespace, job).pop(name, None) if bundled else None
        if result is None or result.stage != stage:
            self.metrics.result_reads.labels("record").inc()
            result = results.read(self.storage, namespace, name, stage)
        if result is None or not result.is_for(uid):
            return None  # none, or an earlier ImageUpload's of this name: not ours
        self._kept[key] = result
        return result

    def moved_on(self, key: Key, stage: Stage | None) -> None:
        """The upload is at ``stage`` now (None: past all Jobs): forget older results."""
        kept = self._kept.get(key)
        if kept is not None and kept.stage != stage:
            del self._kept[key]

    def clear(self, key: Key, stage: Stage) -> None:
        """The upload's ``stage`` runs again (a retry): its old record goes."""
        self.forget(key)
        namespace, name = key
        self.storage.delete(Area.UPLOAD, results.result_key(namespace, name, stage))

    def forget(self, key: Key) -> None:
        """The upload is gone. From any thread."""
        self._kept.pop(key, None)

    def job_gone(self, namespace: str, job: str) -> None:
        """The Job is deleted: forget its bundle. (Delete it from the object store too,
        :meth:`delete_bundle`, in case it was never read or its deletion failed.)"""
        with self._guard:
            self._loading.pop((namespace, job), None)
            self._bundles.pop((namespace, job), None)

    def delete_bundle(self, namespace: str, job: str) -> None:
        """Blocking; never raises: a bundle left behind is logged, nothing else."""
        try:
            self.storage.delete(Area.UPLOAD, results.bundle_key(namespace, job))
        except Exception as exc:
            logger.warning(
                "could not delete the result bundle of Job %s/%s: %s", namespace, job, exc
            )

    def _bundle(self, namespace: str, job: str) -> dict[str, StageResult]:
        """The Job's results not yet taken: read and deleted by the first upload asking."""
        key = (namespace, job)
        with self._guard:
            bundle = self._bundles.get(key)
            if bundle is not None:
                return bundle
            lock = self._loading.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                bundle = self._bundles.get(key)
            if bundle is not None:  # another worker read it meanwhile
                return bundle
            self.metrics.result_reads.labels("bundle").inc()
            read = results.read_bundle(self.storage, namespace, job)
            bundle = {result.upload: result for result in read or ()}
            with self._guard:
                self._bundles[key] = bundle
                self._loading.pop(key, None)
                while len(self._bundles) > self.JOBS_REMEMBERED:
                    self._bundles.popitem(last=False)
        if read is not None:  # its entries are in memory now (deleted again with the Job)
            self.delete_bundle(namespace, job)
        return bundle
