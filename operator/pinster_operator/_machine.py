"""The state machine, as pure decisions: (status, what was observed, now) -> next status.

Pending -> Moderating -> Thumbnailing -> Notifying -> Ready, or Rejected (moderation
said so; the flagged notice goes out in Notifying), or Failed (with ``failedStage``).

The controller gathers :class:`Facts` (the upload's status, the stage result its Job
wrote, the Job's state, the batcher's assignment), calls :func:`decide`, carries out the
one :class:`Action` the decision asks for, writes the returned status if it changed, and
comes back after ``requeue_after``. Nothing here does I/O, so every rule is unit-tested.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from pinster_images.resource import Phase, Stage, rfc3339
from pinster_images.results import StageResult
from pinster_operator._jobs import JobState
from pinster_operator._notify import backoff_delay
from pinster_operator._settings import OperatorSettings
from pinster_operator._status import (
    NOTIFICATION,
    C,
    Status,
    conditions,
    enter,
    entered_at,
    failed,
    initial,
    parse_time,
    phase_of,
    verdict_summary,
)


class Action(enum.Enum):
    NONE = "none"
    #: Give the upload to the batcher for a Job of ``Decision.stage``.
    ENQUEUE = "enqueue"
    #: Send what is still unsent (approval POST, or flagged notice and SNS) for the
    #: decision's status, then write what :func:`after_notify` makes of it. A stage
    #: result that enters Notifying asks for it at once: the upload passes through
    #: Notifying (history, Event) with one status write instead of two.
    NOTIFY = "notify"
    DELETE_RAW = "delete-raw"
    DELETE_UPLOAD = "delete-upload"


@dataclass(frozen=True)
class Facts:
    name: str
    generation: int
    status: Status
    now: datetime
    retry_requested: bool = False
    #: The result the current stage's Job wrote for this upload, if any.
    result: StageResult | None = None
    #: The state of the Job named in ``status.jobs[<stage>]``.
    job: JobState | None = None
    #: Jobs the batcher created (or found) for this upload, not yet in the status, by
    #: stage (the next stage's while the current one's result waits for it).
    assigned: Mapping[Stage, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    status: Status
    action: Action = Action.NONE
    stage: Stage | None = None
    #: Seconds until the upload should be looked at again (None: only on events).
    requeue_after: float | None = None
    #: Stage results to delete before acting (stale ones: a retry's).
    clear_results: tuple[Stage, ...] = ()
    clear_retry: bool = False
    #: A Warning Event worth emitting besides the phase change (type, reason, message).
    note: tuple[str, str, str] | None = None
    job_failed: bool = False


@dataclass(frozen=True)
class NotifyOutcome:
    """What one notification round achieved; ``error`` is None when all is sent."""

    sent: bool = False
    flagged_sent: bool = False
    sns_message_id: str | None = None
    error: str | None = None
    permanent: bool = False
    rand: float | None = field(default=None, compare=False)


STAGE_PHASE = {Stage.MODERATION: Phase.MODERATING, Stage.THUMBNAIL: Phase.THUMBNAILING}
STAGE_CONDITION = {Stage.MODERATION: C.MODERATED, Stage.THUMBNAIL: C.THUMBNAILS_READY}


def stage_of(phase: Phase | None) -> Stage | None:
    if phase in (Phase.PENDING, Phase.MODERATING):
        return Stage.MODERATION
    if phase == Phase.THUMBNAILING:
        return Stage.THUMBNAIL
    return None


def _sub(status: Status, key: str) -> dict[str, Any]:
    """``status[key]`` as a fresh dict to change in place. Statuses are copied at the
    top level only (``dict(status)``), and every nested change goes through here, so
    the status a decision started from is never changed."""
    value = status.get(key)
    fresh = dict(value) if isinstance(value, dict) else {}
    status[key] = fresh
    return fresh


def decide(f: Facts, s: OperatorSettings) -> Decision:
    phase = phase_of(f.status)
    if f.retry_requested:
        if phase == Phase.FAILED:
            return _redrive(f)
        return Decision(f.status, clear_retry=True)
    if phase is None:
        # Straight to the batcher: the moderation Job's window starts with the first visit.
        # (Results an earlier ImageUpload of this name left are not deleted here: the
        # controller ignores results naming another uid.)
        return Decision(
            initial(generation=f.generation, now=f.now),
            Action.ENQUEUE,
            Stage.MODERATION,
            requeue_after=s.poll_interval,
        )
    stage = stage_of(phase)
    if stage is not None:
        return _stage_step(f, s, stage)
    if phase == Phase.NOTIFYING:
        return _notify_step(f, s)
    return _terminal_step(f, s, phase)


# --- Jobs ---------------------------------------------------------------------------


def _stage_step(f: Facts, s: OperatorSettings, stage: Stage) -> Decision:
    if f.result is not None and f.result.stage == stage:
        return _apply_result(f, s, stage, f.result)
    jobs = f.status.get("jobs") or {}
    current = jobs.get(stage.value)
    poll = s.poll_interval
    if current is None:
        assigned = f.assigned.get(stage)
        if assigned is None:
            return Decision(f.status, Action.ENQUEUE, stage, requeue_after=poll)
        return Decision(_running(dict(f.status), f, s, stage, assigned), requeue_after=poll)
    job = f.job
    if job is None or job.status == "running":
        return Decision(f.status, requeue_after=poll)
    if job.status == "succeeded":
        reason, message = "NoResult", f"Job {job.name} completed without a result for this upload"
    else:
        reason, message = job.reason or "JobFailed", job.message or f"Job {job.name} failed"
    if job.waiting:
        return _wait_for_storage(f, s, stage, job)
    used = int((f.status.get("attempts") or {}).get(stage.value, 1))
    if used < s.jobs.attempts:
        new = dict(f.status)
        _sub(new, "jobs").pop(stage.value, None)
        retry_message = (
            f"{message}; retrying with a new Job (attempt {used + 1} of {s.jobs.attempts})."
        )
        new = conditions(
            new,
            {STAGE_CONDITION[stage]: ("Unknown", "Retrying", retry_message)},
            generation=f.generation,
            now=f.now,
        )
        return Decision(
            new,
            Action.ENQUEUE,
            stage,
            requeue_after=poll,
            note=("Warning", reason, retry_message),
            job_failed=job.status != "succeeded",
        )
    new = failed(
        f.status,
        stage=stage.value,
        reason=reason,
        message=f"{message} (after {used} attempt(s))",
        generation=f.generation,
        now=f.now,
    )
    return Decision(new, requeue_after=0, job_failed=job.status != "succeeded")


def _running(new: Status, f: Facts, s: OperatorSettings, stage: Stage, job: str) -> Status:
    """``new`` with ``job`` recorded as the stage's Job (one more attempt), in the
    stage's phase, its condition saying so."""
    _sub(new, "jobs")[stage.value] = job
    attempts = _sub(new, "attempts")
    attempts[stage.value] = int(attempts.get(stage.value, 0)) + 1
    new = enter(new, STAGE_PHASE[stage], generation=f.generation, now=f.now)
    message = (
        f"{stage.value.capitalize()} Job {job} is running "
        f"(attempt {attempts[stage.value]} of {s.jobs.attempts})."
    )
    return conditions(
        new,
        {
            STAGE_CONDITION[stage]: ("Unknown", "InProgress", message),
            C.READY: ("False", STAGE_PHASE[stage].value, message),
        },
        generation=f.generation,
        now=f.now,
    )


def _wait_for_storage(f: Facts, s: OperatorSettings, stage: Stage, job: JobState) -> Decision:
    """The Job failed because the object store was down or refused, not because of the
    upload: that is no attempt. The Job is forgotten and the next look (after the poll
    interval) queues a new one; the conditions say what the upload waits for."""
    new = dict(f.status)
    _sub(new, "jobs").pop(stage.value, None)
    # The next Job's assignment counts again what this one counted.
    attempts = _sub(new, "attempts")
    attempts[stage.value] = max(0, int(attempts.get(stage.value, 1)) - 1)
    message = (
        f"Waiting for the object store ({job.waiting}): Job {job.name} could not reach it. "
        f"A new Job starts in {s.poll_interval:.0f}s; this is not counted as an attempt."
    )
    new = conditions(
        new,
        {
            STAGE_CONDITION[stage]: ("Unknown", job.waiting, message),
            C.READY: ("False", job.waiting, message),
        },
        generation=f.generation,
        now=f.now,
    )
    return Decision(new, requeue_after=s.poll_interval, note=("Warning", job.waiting, message))


def _apply_result(f: Facts, s: OperatorSettings, stage: Stage, result: StageResult) -> Decision:
    g, now = f.generation, f.now
    if result.outcome == "failed":
        new = failed(
            f.status,
            stage=stage.value,
            reason=result.reason or "ProcessingFailed",
            message=result.message or f"the {stage.value} Job could not process this upload",
            generation=g,
            now=now,
        )
        return Decision(new, requeue_after=0)
    new = dict(f.status)
    if result.job:
        _sub(new, "jobs").setdefault(stage.value, result.job)
    if stage == Stage.MODERATION:
        verdict = dict(result.data)
        new["verdict"] = verdict
        summary = verdict_summary(verdict)
        if verdict.get("decision") == "Rejected":
            new = enter(new, Phase.NOTIFYING, generation=g, now=now)
            new = conditions(
                new,
                {
                    C.MODERATED: ("True", "Rejected", f"Rejected: {summary}"),
                    C.THUMBNAILS_READY: (
                        "False",
                        "Rejected",
                        "Rejected images are never published.",
                    ),
                    C.NOTIFIED: ("Unknown", "Sending", "Sending the flagged notice."),
                    C.READY: ("False", "Rejected", f"Rejected by moderation: {summary}"),
                },
                generation=g,
                now=now,
            )
            return Decision(new, Action.NOTIFY)
        job = f.assigned.get(Stage.THUMBNAIL)
        if job is None:
            # Nothing is written until the thumbnail Job exists: the verdict, Thumbnailing
            # and its Job then go in one write (one write and one watch event fewer per
            # upload); the result is read again then.
            return Decision(
                f.status, Action.ENQUEUE, Stage.THUMBNAIL, requeue_after=s.poll_interval
            )
        new = conditions(
            new,
            {C.MODERATED: ("True", "Approved", f"Approved: {summary}")},
            generation=g,
            now=now,
        )
        new = _running(new, f, s, Stage.THUMBNAIL, job)
        return Decision(new, requeue_after=s.poll_interval)
    published = dict(result.data)
    new["published"] = published
    count = int(published.get("thumbnailCount", len(published.get("thumbnails") or [])))
    url = (published.get("original") or {}).get("url", "")
    new = enter(new, Phase.NOTIFYING, generation=g, now=now)
    new = conditions(
        new,
        {
            C.THUMBNAILS_READY: (
                "True",
                "Published",
                f"The original and {count} thumbnail(s) are published at {url}.",
            ),
            C.NOTIFIED: ("Unknown", "Sending", "Notifying PinsterApi."),
            C.READY: ("False", "Notifying", "Published; notifying PinsterApi."),
        },
        generation=g,
        now=now,
    )
    return Decision(new, Action.NOTIFY)


# --- notification -------------------------------------------------------------------


def is_rejected(status: Status) -> bool:
    return (status.get("verdict") or {}).get("decision") == "Rejected"


def notification_done(status: Status, s: OperatorSettings) -> bool:
    sent = status.get("notification") or {}
    if is_rejected(status):
        sns_done = not s.notify.sns_topic_arn or bool(sent.get("snsMessageId"))
        return bool(sent.get("flaggedSentAt")) and sns_done
    return bool(sent.get("sentAt"))


def _notify_step(f: Facts, s: OperatorSettings) -> Decision:
    if notification_done(f.status, s):
        return _finish(dict(f.status), f, s)
    next_at = parse_time((f.status.get("notification") or {}).get("nextAttemptAt"))
    if next_at is not None and f.now < next_at:
        return Decision(f.status, requeue_after=(next_at - f.now).total_seconds())
    return Decision(f.status, Action.NOTIFY)


def after_notify(f: Facts, s: OperatorSettings, outcome: NotifyOutcome) -> Decision:
    """The status after one notification round."""
    g, now = f.generation, f.now
    new = dict(f.status)
    sent = _sub(new, "notification")
    if outcome.sent:
        sent["sentAt"] = rfc3339(now)
    if outcome.flagged_sent:
        sent["flaggedSentAt"] = rfc3339(now)
    if outcome.sns_message_id:
        sent["snsMessageId"] = outcome.sns_message_id
    attempts = _sub(new, "attempts")
    attempts[NOTIFICATION] = int(attempts.get(NOTIFICATION, 0)) + 1
    if outcome.error is None:
        sent.pop("nextAttemptAt", None)
        sent.pop("lastError", None)
        return _finish(new, f, s)
    sent["lastError"] = outcome.error[:1024]
    started = entered_at(f.status, Phase.NOTIFYING) or now
    delay = backoff_delay(
        attempts[NOTIFICATION],
        initial=s.notify.backoff_initial,
        maximum=s.notify.backoff_max,
        rand=outcome.rand,
    )
    retry_at = now + timedelta(seconds=delay)
    out_of_time = retry_at > started + timedelta(seconds=s.notify.deadline)
    if outcome.permanent or out_of_time:
        why = "refused for good" if outcome.permanent else f"gave up after {s.notify.deadline:g}s"
        message = f"{attempts[NOTIFICATION]} attempt(s), {why}; last error: {outcome.error}"
        sent.pop("nextAttemptAt", None)
        if is_rejected(new):
            # The image stays rejected; only the notice is missing.
            new = enter(new, Phase.REJECTED, generation=g, now=now)
            new = conditions(
                new,
                {C.NOTIFIED: ("False", "NotificationFailed", message)},
                generation=g,
                now=now,
            )
            return Decision(new, requeue_after=0, note=("Warning", "NotificationFailed", message))
        new = failed(
            new,
            stage=NOTIFICATION,
            reason="NotificationFailed",
            message=f"{message}. The published images stay.",
            generation=g,
            now=now,
        )
        return Decision(new, requeue_after=0)
    sent["nextAttemptAt"] = rfc3339(retry_at)
    message = (
        f"Attempt {attempts[NOTIFICATION]} failed: {outcome.error}; "
        f"retrying at {rfc3339(retry_at)}."
    )
    new = conditions(new, {C.NOTIFIED: ("Unknown", "Retrying", message)}, generation=g, now=now)
    return Decision(new, requeue_after=delay, note=("Warning", "NotificationRetrying", message))


def _finish(new: Status, f: Facts, s: OperatorSettings) -> Decision:
    g, now = f.generation, f.now
    sent = new.get("notification") or {}
    if is_rejected(new):
        summary = verdict_summary(new.get("verdict") or {})
        sns = f" SNS message {sent['snsMessageId']}." if sent.get("snsMessageId") else ""
        new = enter(new, Phase.REJECTED, generation=g, now=now)
        new = conditions(
            new,
            {
                C.NOTIFIED: (
                    "True",
                    "FlaggedNoticeSent",
                    f"PinsterApi received the flagged notice at {sent.get('flaggedSentAt')}.{sns}",
                ),
                C.READY: ("False", "Rejected", f"Rejected by moderation: {summary}"),
            },
            generation=g,
            now=now,
        )
        return Decision(new, requeue_after=_first_deadline(new, f, s))
    new = enter(new, Phase.READY, generation=g, now=now)
    new = conditions(
        new,
        {
            C.NOTIFIED: (
                "True",
                "Accepted",
                f"PinsterApi accepted the image at {sent.get('sentAt')}.",
            ),
            C.READY: ("True", "Ready", "Published and PinsterApi notified."),
        },
        generation=g,
        now=now,
    )
    return Decision(new, requeue_after=_first_deadline(new, f, s))


def _first_deadline(new: Status, f: Facts, s: OperatorSettings) -> float:
    """Seconds until a just-finished upload's first deadline (raw retention or TTL), so
    no reconcile in between is needed to find it."""
    then = _terminal_step(replace(f, status=new), s, Phase(new["phase"]))
    if then.action != Action.NONE or then.requeue_after is None:
        return 0.0
    return then.requeue_after


# --- terminal: retention and clean-up --------------------------------------------------


def _terminal_step(f: Facts, s: OperatorSettings, phase: Phase) -> Decision:
    completed = parse_time(f.status.get("completedAt")) or f.now
    ttl_due = completed + timedelta(seconds=s.cleanup.terminal_ttl)
    raw_due: datetime | None = None
    if not f.status.get("rawDeletedAt"):
        if phase == Phase.REJECTED:
            raw_due = completed + timedelta(seconds=s.cleanup.rejected_retention)
        elif phase == Phase.FAILED:
            # Kept for a retry while the upload exists; nothing would remove them later.
            raw_due = ttl_due
    if raw_due is not None:
        if f.now >= raw_due:
            return Decision(f.status, Action.DELETE_RAW)
        # The upload is the only record of its raw bytes: it goes after them, never before.
        ttl_due = max(ttl_due, raw_due)
    if f.now >= ttl_due:
        return Decision(f.status, Action.DELETE_UPLOAD)
    next_due = raw_due or ttl_due
    return Decision(f.status, requeue_after=(next_due - f.now).total_seconds())


def raw_deleted(status: Status, now: datetime) -> Status:
    new = dict(status)
    new["rawDeletedAt"] = rfc3339(now)
    return new


# --- retry annotation ---------------------------------------------------------------


def _redrive(f: Facts) -> Decision:
    g, now = f.generation, f.now
    new = dict(f.status)
    stage = str(new.pop("failedStage", "moderation"))
    attempts = _sub(new, "attempts")
    attempts[stage] = 0
    message = "Re-driven by the images.pinster.io/retry annotation."
    clear: tuple[Stage, ...] = ()
    if stage == NOTIFICATION:
        new["notification"] = {
            k: v for k, v in (new.get("notification") or {}).items() if k in ("sentAt",)
        }
        new = enter(new, Phase.NOTIFYING, generation=g, now=now)
        updates = {C.NOTIFIED: ("Unknown", "Retrying", message)}
    else:
        job_stage = Stage(stage)
        _sub(new, "jobs").pop(stage, None)
        clear = (job_stage,)
        target = Phase.PENDING if job_stage == Stage.MODERATION else Phase.THUMBNAILING
        new = enter(new, target, generation=g, now=now)
        updates = {STAGE_CONDITION[job_stage]: ("Unknown", "Retrying", message)}
    updates[C.READY] = ("False", "Retrying", message)
    new = conditions(new, updates, generation=g, now=now)
    return Decision(new, clear_results=clear, clear_retry=True, requeue_after=0)
