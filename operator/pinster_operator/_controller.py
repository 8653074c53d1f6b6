"""The controller: ImageUploads from the work queue (:mod:`._queue`), each reconciled by
one worker at a time in a thread of its own executor (``PINSTER_WORKERS`` threads).

Inputs: kopf's event handlers (:mod:`._handlers`), on the event loop: every ImageUpload
event goes to :meth:`Controller.observe`, every event of our Jobs to
:meth:`Controller.job_event`, of their pods to :meth:`Controller.job_pod_event`. A
reconcile gathers facts, asks the pure state machine (:mod:`._machine`) what to do, has
it done, and writes the status.

The side effects are done by collaborators the controller builds and calls: Job creation
for a batch the batcher flushed (:mod:`._creation`), status writes and Events
(:mod:`._recorder`), reading the Jobs' results (:mod:`._results`), notifications
(:mod:`._notifier`), deleting raw bytes and terminal uploads (:mod:`._cleanup`), the
orphan sweep (:mod:`._sweep`). They share its Kube, Storage, Metrics and settings, never
the controller itself.

Threads: the event loop owns the queue, its timers and the batcher; workers reach them
with ``call_soon_threadsafe``. The per-upload caches (bodies, our last written versions
in the recorder, Job assignments, Job states, results kept by the result reader) are
read and written one key at a time from both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pinster_images import logs, results
from pinster_images.resource import ANNOTATION_RETRY, ImageUploadSpec, Phase, Stage
from pinster_images.storage import Storage
from pinster_operator._batching import Batcher
from pinster_operator._cleanup import Cleanup, raw_kept
from pinster_operator._creation import JobCreator
from pinster_operator._errors import classify
from pinster_operator._jobs import (
    JobState,
    UploadRef,
    is_finished,
    job_of_pod,
    job_state,
    pod_succeeded,
    stage_of_job,
    termination_message,
    uploads_of,
)
from pinster_operator._kube import Kube
from pinster_operator._machine import (
    Action,
    Decision,
    Facts,
    after_notify,
    decide,
    stage_of,
)
from pinster_operator._metrics import Metrics
from pinster_operator._notifier import Notifier
from pinster_operator._queue import Key, WorkQueue
from pinster_operator._recorder import StatusRecorder
from pinster_operator._results import ResultReader
from pinster_operator._settings import OperatorSettings
from pinster_operator._status import Status, phase_of
from pinster_operator._sweep import OrphanSweep, SweepSummary

logger = logging.getLogger("pinster_operator")


def _slim(body: dict[str, Any]) -> dict[str, Any]:
    """The object without metadata.managedFields (often half of it, never read here)."""
    meta = body.get("metadata") or {}
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


@dataclass
class Controller:
    settings: OperatorSettings
    kube: Kube
    storage: Storage
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.queue = WorkQueue()
        self._bodies: dict[Key, dict[str, Any]] = {}
        #: reconciles run here: as many at once as PINSTER_WORKERS says (asyncio's
        #: default executor would cap them at min(32, CPUs + 4)).
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.workers, thread_name_prefix="reconcile"
        )
        self._assigned: dict[tuple[str, str, Stage], str] = {}
        #: the last state kopf showed of each of our Jobs (set on the event
        #: loop, read whole by workers): what a reconcile asks before any API call.
        self._jobs: dict[tuple[str, str], dict[str, Any]] = {}
        #: Jobs whose pod has exited 0 (set on the event loop, read by workers): done,
        #: before the Job controller says so.
        self._pods_done: set[tuple[str, str]] = set()
        #: md5 -> the uploads of those bytes, kept from every ImageUpload event and every
        #: upload the sweep adopts (on the event loop): the orphan sweep's question,
        #: without an API call. (kopf's @kopf.index holds start-up until every object is
        #: indexed, at a cost that grows with the square of their number: minutes of CPU
        #: with 10,000 uploads.)
        self._uploads_by_md5: dict[str, set[Key]] = {}
        #: the same index by upload: which ImageUploads exist (whose records the sweep keeps)
        self._md5_of: dict[Key, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: monotonic time of the last event of each kind (the probe's freshness report)
        self.last_event: dict[str, float] = {}
        #: fires the queue's timers; alive while the operator is healthy (the probe)
        self.scheduler: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batcher = Batcher(
            self.settings.batch.window,
            self.settings.batch.max_size,
            self._flush,
            max_running=self.settings.batch.max_running,
            job_lifetime=self.settings.jobs.active_deadline_seconds,
        )
        self._orphans = OrphanSweep(
            self.settings,
            self.kube,
            self.storage,
            md5_known=lambda md5: md5 in self._uploads_by_md5,
            adopted=lambda key, md5: self.queue.threadsafe(self._index, key, md5),
            upload_known=lambda key: key in self._md5_of,
            job_known=lambda key: key in self._jobs,
        )
        self._creator = JobCreator(self.settings, self.kube, self.metrics)
        #: writes status and Events, and knows the resourceVersion of our own last
        #: write of each upload (to skip older watch events)
        self._recorder = StatusRecorder(self.kube, self.metrics)
        self._notifier = Notifier(self.settings.notify, self.storage, self.metrics)
        #: the Jobs' results: a finished Job's bundle read once (not a GET per upload)
        self._results = ResultReader(self.storage, self.metrics)
        self._cleanup = Cleanup(self.settings, self.kube, self.storage)

    # --- lifecycle (event loop) ---

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.queue.bind(self._loop)
        for _ in range(self.settings.workers):
            self._tasks.append(self._loop.create_task(self._worker()))
        self.scheduler = self._loop.create_task(self.queue.run_scheduler(), name="scheduler")
        self._tasks.append(self.scheduler)
        if self.settings.cleanup.orphan_grace > 0 or self.settings.adoption is not None:
            self._tasks.append(self._loop.create_task(self._sweeper()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.batcher.close()
        # Reconciles already running finish in their threads; nothing new starts.
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- inputs (event loop) ---

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """An ImageUpload event (``None``: listed at start or after a watch broke)."""
        self.last_event["imageuploads"] = time.monotonic()
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self._deleted(key, body)
            return
        self._index(key, str((body.get("spec") or {}).get("md5") or ""))
        if self._recorder.older_than_written(key, body, inclusive=True):
            return  # the echo of our own status write: its follow-up is already queued
        if self._settled(key, body):
            return
        self._bodies[key] = _slim(body)
        self.queue.enqueue(key)

    def job_event(self, event_type: str | None, job: dict[str, Any]) -> None:
        """A Job of ours changed: when it has finished or is gone, its uploads are due."""
        self.last_event["jobs"] = time.monotonic()
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        ended = event_type == "DELETED" or is_finished(job)
        stage = stage_of_job(job)
        if stage is not None:  # the batcher's count of running Jobs
            if ended or key in self._pods_done:
                self.batcher.job_ended(key[0], stage, key[1])
            else:
                self.batcher.job_running(key[0], stage, key[1])
        if event_type == "DELETED":
            self._jobs.pop(key, None)
            self._pods_done.discard(key)
            self._results.job_gone(*key)
            if self._loop is not None:  # (None: not started, as in tests of the wiring)
                self._loop.run_in_executor(self._executor, self._results.delete_bundle, *key)
        else:
            self._jobs[key] = job
        if ended:
            self.wake(job["metadata"]["namespace"], uploads_of(job))

    def job_pod_event(self, event_type: str | None, pod: dict[str, Any]) -> None:
        """A pod of our Jobs changed: once it has exited 0, its Job's uploads are due
        (their results are stored), ahead of the Job's own ``Complete``."""
        job = job_of_pod(pod)
        if event_type == "DELETED" or job is None or not pod_succeeded(pod):
            return
        key = (pod["metadata"]["namespace"], job)
        if key in self._pods_done:
            return
        self._pods_done.add(key)
        stage = stage_of_job(pod)
        if stage is not None:
            self.batcher.job_ended(key[0], stage, job)
        known = self._jobs.get(key)
        if known is not None:  # else the Job's own event wakes them
            self.wake(key[0], uploads_of(known))

    def _settled(self, key: Key, body: dict[str, Any]) -> bool:
        """Fast path for terminal uploads (most of them, most of the time): only a
        retention or TTL deadline is left, so schedule it without keeping the body."""
        status = body.get("status") or {}
        meta = body.get("metadata") or {}
        phase = phase_of(status)
        if phase is None or not phase.terminal or self.queue.in_progress(key):
            return False
        if ANNOTATION_RETRY in (meta.get("annotations") or {}):
            return False
        facts = Facts(
            name=key[1],
            generation=int(meta.get("generation") or 1),
            status=status,
            now=datetime.now(UTC),
        )
        decision = decide(facts, self.settings)
        if decision.action != Action.NONE or decision.requeue_after is None:
            return False
        self.metrics.observe(key, phase.value)
        self.queue.enqueue_after(key, decision.requeue_after)
        return True

    def wake(self, namespace: str, names: list[str]) -> None:
        for name in names:
            self.queue.enqueue((namespace, name))

    def _deleted(self, key: Key, body: dict[str, Any]) -> None:
        """The upload was deleted: forget it, and if someone else deleted it before its
        raw bytes were used up or cleaned up, delete those too (:mod:`._cleanup`)."""
        others_known = bool(self._uploads_by_md5.get(self._md5_of.get(key, ""), set()) - {key})
        self.forget(key)
        if self._loop is None or not raw_kept(body.get("status") or {}) or not body.get("spec"):
            return
        self._loop.run_in_executor(self._executor, self._cleanup.raw_of_deleted, body, others_known)

    def forget(self, key: Key) -> None:
        """The upload is gone: drop what is kept for it. From any thread."""
        self._bodies.pop(key, None)
        self._recorder.forget(key)
        self._results.forget(key)
        self.queue.threadsafe(self._forget_on_loop, key)
        self.metrics.observe(key, None)

    def _index(self, key: Key, md5: str) -> None:
        """The upload is one of these bytes (on the event loop, which owns the index)."""
        if self._md5_of.setdefault(key, md5) == md5:  # the spec is immutable (CEL)
            self._uploads_by_md5.setdefault(md5, set()).add(key)

    def _forget_on_loop(self, key: Key) -> None:
        """What the event loop owns: the key's timer and its place in the md5 index."""
        self.queue.cancel(key)
        md5 = self._md5_of.pop(key, None)
        if md5 is None:
            return
        keys = self._uploads_by_md5[md5]
        keys.discard(key)
        if not keys:
            del self._uploads_by_md5[md5]

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cleanup.orphan_sweep_interval)
            started = time.monotonic()
            try:
                summary = await asyncio.to_thread(self.sweep_orphans)
            except Exception:
                logger.exception(
                    "orphan sweep failed; next try in %ss",
                    self.settings.cleanup.orphan_sweep_interval,
                )
                continue
            logger.info(
                "orphan sweep: %d objects in %.1fs; %d adopted, %d rejected, %d deleted, "
                "%d to try again",
                summary.listed,
                time.monotonic() - started,
                len(summary.adopted),
                len(summary.rejected),
                len(summary.deleted),
                len(summary.failed),
            )

    def sweep_orphans(self) -> SweepSummary:
        """Adopt or delete the raw objects no ImageUpload refers to, and delete the result
        objects whose upload or Job is gone (see :mod:`._sweep`).

        "Is there an upload of these bytes" (or of this name, or such a Job) is answered
        from memory (the md5 index the event loop keeps from every ImageUpload event, the
        Jobs from theirs; a membership test from this thread is one dict lookup), where a
        LIST per raw object cost an API call each."""
        return self._orphans.run()

    async def _worker(self) -> None:
        assert self._loop is not None
        while True:
            key = await self.queue.take()
            delay: float | None = None
            try:
                delay = await self._loop.run_in_executor(
                    self._executor, self._reconcile_safely, key
                )
            finally:
                self.queue.done(key, delay)

    # --- batching (event loop, creation in a thread) ---

    async def _flush(self, namespace: str, stage: Stage, group: list[UploadRef]) -> set[str]:
        assigned = await asyncio.to_thread(self._creator.create_jobs, namespace, stage, group)
        for name, job in assigned.items():
            self._assigned[(namespace, name, stage)] = job
            self.queue.enqueue((namespace, name))
        return set(assigned.values())

    # --- reconcile (worker thread) ---

    def _reconcile_safely(self, key: Key) -> float | None:
        log = logs.for_upload(logger, *key)
        try:
            delay = self.reconcile(key)
        except Exception as exc:
            self.metrics.reconciles.labels("error").inc()
            self._bodies.pop(key, None)  # start from a fresh GET next time
            retry = classify(exc)
            level = logging.ERROR if retry.permanent else logging.INFO
            log.log(
                level,
                "reconcile failed (%s: %s); again in %.0fs",
                retry.reason,
                retry.message,
                retry.delay,
                exc_info=retry.permanent,
            )
            if retry.reason.startswith("Storage"):
                self._recorder.report_waiting(key, retry)
            return retry.delay
        self.metrics.reconciles.labels("done" if delay is None else "requeued").inc()
        return delay

    def _body(self, key: Key) -> dict[str, Any] | None:
        """The upload as last seen (watch event or our own write's answer), else a GET.

        The body stays cached while the upload is in flight, so the reconcile after
        a Job assignment or a Job's end needs no GET; watch events keep it current
        (our own writes excepted, which replace it with the API server's answer).
        """
        body = self._bodies.get(key)
        if body is not None and not self._recorder.older_than_written(key, body):
            return body
        return self.kube.get_upload(*key)

    def reconcile(self, key: Key) -> float | None:
        namespace, name = key
        obj = self._body(key)
        if obj is None:
            self.forget(key)
            return None
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            self._bodies.pop(key, None)
            return None
        status: dict[str, Any] = obj.get("status") or {}
        now = datetime.now(UTC)
        stage = stage_of(phase_of(status))
        self._results.moved_on(key, stage)
        result, job = None, None
        if stage is not None:
            job_name = (status.get("jobs") or {}).get(stage.value)
            # A result is read once its Job has finished (the finish wakes the Job's
            # uploads); before there is a Job, or while it runs, there is none to read.
            if job_name:
                job = self._job_state(namespace, job_name)
                if job.status != "running":
                    known = self._jobs.get((namespace, job_name))
                    bundled = known is None or len(uploads_of(known)) >= results.BUNDLE_MIN
                    uid = str(meta.get("uid", ""))
                    result = self._results.read(key, stage, job_name, uid, bundled=bundled)
                    if result is not None:
                        job = None
        assigned = {
            st: self._assigned[(namespace, name, st)]
            for st in Stage
            if (namespace, name, st) in self._assigned
        }
        facts = Facts(
            name=name,
            generation=int(meta.get("generation") or 1),
            status=status,
            now=now,
            retry_requested=ANNOTATION_RETRY in (meta.get("annotations") or {}),
            result=result,
            job=job,
            assigned=assigned,
        )
        decision = decide(facts, self.settings)
        for cleared in decision.clear_results:
            self._results.clear(key, cleared)
        acted = self._act(obj, facts, decision)
        if acted is None:
            return None
        # A notification acted on a new status (entering Notifying): announce that too.
        passed = decision.status if acted is not decision else None
        decision = acted
        if decision.job_failed and stage is not None:
            self.metrics.jobs_failed.labels(stage.value).inc()
        if decision.status != status:
            self._write(obj, status, decision.status, now, passed)
            recorded = decision.status.get("jobs") or {}
            for assigned_stage, assigned_job in assigned.items():
                if recorded.get(assigned_stage.value) == assigned_job:
                    self._assigned.pop((namespace, name, assigned_stage), None)
        else:
            self.metrics.observe(key, status.get("phase"))
            phase = phase_of(status)
            if phase is None or phase.terminal:
                # Terminal uploads wait for a deadline only: keep no body (see _settled).
                self._bodies.pop(key, None)
        if decision.note is not None:
            self._recorder.event(obj, *decision.note)
        if decision.clear_retry:
            self._bodies.pop(key, None)  # the annotation change makes it stale
            self.kube.remove_annotation(namespace, name, ANNOTATION_RETRY)
        return decision.requeue_after

    def _act(self, obj: dict[str, Any], facts: Facts, decision: Decision) -> Decision | None:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if decision.action == Action.ENQUEUE and decision.stage is not None:
            attempts = int((decision.status.get("attempts") or {}).get(decision.stage.value, 0))
            ref = UploadRef(
                namespace,
                name,
                str(meta.get("uid", "")),
                ImageUploadSpec.from_dict(obj["spec"]),
                attempt=attempts + 1,
                round=len(decision.status.get("phaseHistory") or []),
            )
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self.batcher.add, decision.stage, ref)
            return decision
        if decision.action == Action.NOTIFY:
            outcome = self._notifier.send(obj, decision.status)
            notified = replace(facts, status=decision.status, now=datetime.now(UTC))
            return after_notify(notified, self.settings, outcome)
        if decision.action == Action.DELETE_RAW:
            return self._cleanup.delete_raw(obj, facts)
        if decision.action == Action.DELETE_UPLOAD:
            self._cleanup.delete_upload(namespace, name)
            self._notifier.forget(str(meta.get("uid")))
            self.forget((namespace, name))
            return None
        return decision

    def _job_state(self, namespace: str, name: str) -> JobState:
        job = self._jobs.get((namespace, name))
        if job is None:
            # Not seen by the Job watch yet (just created). Once seen, its finish or
            # deletion is a watch event (a relist after any break) that wakes us.
            job = self.kube.get_job(namespace, name)
        said = ""
        if job is not None and (job.get("status") or {}).get("failed"):
            said = termination_message(self.kube.job_pods(namespace, name))
        state = job_state(job, name, said)
        if state.status == "running" and (namespace, name) in self._pods_done:
            return replace(state, status="succeeded")
        return state

    def _write(
        self, obj: dict[str, Any], old: Status, new: Status, now: datetime, passed: Status | None
    ) -> None:
        """Write ``new`` through the recorder (the status PUT, then metrics and Events of
        the steps from ``old``, through ``passed`` if any) and keep the API server's
        answer as the body the next reconcile starts from."""
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        updated = self._recorder.write(obj, new)
        terminal = Phase(new["phase"]).terminal
        if terminal:
            # Only a deadline is left (see _settled): keep no body until then.
            self._bodies.pop(key, None)
        else:
            # The next reconcile starts from what the API server answered: no GET needed.
            self._bodies[key] = _slim(updated)
        self._recorder.record(obj, old, new, now, passed=passed)
        if terminal:
            self._notifier.forget(str(meta.get("uid")))
