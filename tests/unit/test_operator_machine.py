"""The state machine's decisions, one rule at a time and along whole paths."""

from __future__ import annotations

import copy
from typing import Any

from pinster_operator import Action, JobState, NotifyOutcome, after_notify, decide
from pinster_operator._jobs import job_state, storage_trouble

from pinster_images.resource import Stage
from tests.support.operator_units import (
    APPROVED,
    PUBLISHED,
    REJECTED,
    facts,
    later,
    result,
    settings,
)

S = settings(PINSTER_JOB_ATTEMPTS="2", PINSTER_POLL_INTERVAL="7")


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def phases(status: dict[str, Any]) -> list[str]:
    return [h["phase"] for h in status["phaseHistory"]]


def moderating() -> dict[str, Any]:
    pending = decide(facts(), S).status
    return decide(facts(pending, 1, assigned={Stage.MODERATION: "pinster-mod-1"}), S).status


def notifying(verdict: dict[str, Any] = APPROVED) -> dict[str, Any]:
    status = moderating()
    moderated = result(Stage.MODERATION, verdict)
    status = decide(facts(status, 2, result=moderated), S).status
    if verdict["decision"] == "Rejected":
        return status
    assert status["phase"] == "Moderating"  # until the thumbnail Job exists
    thumb = {Stage.THUMBNAIL: "pinster-thumb-1"}
    status = decide(facts(status, 3, result=moderated, assigned=thumb), S).status
    return decide(facts(status, 4, result=result(Stage.THUMBNAIL, PUBLISHED)), S).status


def test_first_visit_sets_every_condition_and_pending() -> None:
    d = decide(facts(), S)
    assert d.status["phase"] == "Pending"
    assert [c["type"] for c in d.status["conditions"]] == [
        "Moderated",
        "ThumbnailsReady",
        "Notified",
        "Ready",
    ]
    assert {c["status"] for c in d.status["conditions"][:3]} == {"Unknown"}
    assert cond(d.status, "Ready")["status"] == "False"
    assert all(c["reason"] and c["message"] for c in d.status["conditions"])
    assert d.status["observedGeneration"] == 1
    assert d.clear_results == ()  # an earlier upload's results are ignored by uid instead
    # The batcher gets it with the first write, not one reconcile later.
    assert (d.action, d.stage, d.requeue_after) == (Action.ENQUEUE, Stage.MODERATION, 7)


def test_pending_without_job_asks_for_one_and_polls() -> None:
    pending = decide(facts(), S).status
    d = decide(facts(pending, 1), S)
    assert (d.action, d.stage, d.status) == (Action.ENQUEUE, Stage.MODERATION, pending)
    assert d.requeue_after == 7


def test_assigned_job_is_recorded_with_attempt() -> None:
    status = moderating()
    assert status["phase"] == "Moderating"
    assert status["jobs"] == {"moderation": "pinster-mod-1"}
    assert status["attempts"] == {"moderation": 1}
    assert phases(status) == ["Pending", "Moderating"]
    assert "pinster-mod-1" in cond(status, "Moderated")["message"]


def test_running_job_changes_nothing() -> None:
    status = moderating()
    d = decide(facts(status, 5, job=JobState("pinster-mod-1", "running")), S)
    assert d.status == status and d.action == Action.NONE and d.requeue_after == 7


def test_approved_goes_to_thumbnailing_with_its_job_in_one_write() -> None:
    status = moderating()
    approved = result(Stage.MODERATION, APPROVED)
    d = decide(facts(status, 2, result=approved), S)
    # Nothing to write until the thumbnail Job exists: the batcher is asked for one.
    assert d.status == status
    assert (d.action, d.stage, d.requeue_after) == (Action.ENQUEUE, Stage.THUMBNAIL, 7)
    thumb = {Stage.THUMBNAIL: "pinster-thumb-1"}
    d = decide(facts(status, 3, result=approved, assigned=thumb), S)
    assert d.status["phase"] == "Thumbnailing" and d.action == Action.NONE
    assert d.status["verdict"]["decision"] == "Approved"
    assert cond(d.status, "Moderated")["status"] == "True"
    assert cond(d.status, "Moderated")["reason"] == "Approved"
    assert d.status["jobs"] == {"moderation": "pinster-mod-1", "thumbnail": "pinster-thumb-1"}
    assert d.status["attempts"] == {"moderation": 1, "thumbnail": 1}
    assert cond(d.status, "ThumbnailsReady")["reason"] == "InProgress"
    assert "pinster-thumb-1 is running (attempt 1 of 2)" in cond(d.status, "Ready")["message"]
    assert phases(d.status) == ["Pending", "Moderating", "Thumbnailing"]


def test_rejected_skips_thumbnails_and_sends_flagged_notice() -> None:
    status = notifying(REJECTED)
    assert status["phase"] == "Notifying"
    assert cond(status, "ThumbnailsReady")["status"] == "False"
    assert "Explicit Nudity" in cond(status, "Moderated")["message"]
    assert decide(facts(status, 3), S).action == Action.NOTIFY


def test_permanent_failure_of_one_upload_is_failed_with_its_reason() -> None:
    bad = result(
        Stage.MODERATION, {}, outcome="failed", reason="CorruptImage", message="truncated JPEG"
    )
    d = decide(facts(moderating(), 2, result=bad), S)
    assert d.status["phase"] == "Failed"
    assert d.status["failedStage"] == "moderation"
    ready = cond(d.status, "Ready")
    assert ready["reason"] == "CorruptImage" and "truncated JPEG" in ready["message"]
    assert cond(d.status, "Moderated")["status"] == "False"
    assert d.status["completedAt"]


def test_failed_job_is_retried_then_fails_with_the_job_reason() -> None:
    status = moderating()
    job = JobState(
        "pinster-mod-1", "failed", "BackoffLimitExceeded", "Job failed: ...; last pod said: S3 down"
    )
    d = decide(facts(status, 10, job=job), S)
    assert (d.action, d.stage) == (Action.ENQUEUE, Stage.MODERATION)
    assert "moderation" not in d.status["jobs"]
    assert d.job_failed and d.note is not None and d.note[1] == "BackoffLimitExceeded"
    assert cond(d.status, "Moderated")["reason"] == "Retrying"
    second = decide(facts(d.status, 11, assigned={Stage.MODERATION: "pinster-mod-2"}), S).status
    assert second["attempts"]["moderation"] == 2
    final = decide(
        facts(
            second, 20, job=JobState("pinster-mod-2", "failed", "BackoffLimitExceeded", "S3 down")
        ),
        S,
    )
    assert final.status["phase"] == "Failed"
    assert cond(final.status, "Ready")["reason"] == "BackoffLimitExceeded"
    assert "S3 down" in cond(final.status, "Ready")["message"]
    assert "2 attempt" in cond(final.status, "Ready")["message"]


def test_a_job_failed_by_the_object_store_is_no_attempt_and_the_upload_waits() -> None:
    said = "moderate: 0 succeeded, 1 to retry\nretry img-1: StorageUnavailable: s3://up/raw/x: connect timeout"
    job = job_state(
        {
            "status": {
                "conditions": [
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
                ]
            }
        },
        "pinster-mod-1",
        said,
    )
    assert (job.status, job.waiting) == ("failed", "StorageUnavailable")
    status = moderating()
    for attempt in range(5):  # however long the outage lasts
        d = decide(facts(status, 10 + attempt * 20, job=job), S)
        assert d.status["phase"] == "Moderating" and "moderation" not in d.status["jobs"]
        assert d.status["attempts"]["moderation"] == 0  # the failed Job is not counted
        ready = cond(d.status, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "StorageUnavailable")
        assert "object store" in ready["message"]
        assert d.note is not None and d.note[:2] == ("Warning", "StorageUnavailable")
        # The next look asks for a new Job; with it, the stage goes on as before.
        again = decide(facts(d.status, 11 + attempt * 20), S)
        assert (again.action, again.stage) == (Action.ENQUEUE, Stage.MODERATION)
        status = decide(
            facts(d.status, 12 + attempt * 20, assigned={Stage.MODERATION: "pinster-mod-1"}), S
        ).status
    # A pod that failed for the upload's own reasons still counts.
    assert storage_trouble("retry img-1: ModerationUnavailable: throttled") == ""
    assert storage_trouble("thumbnail: 3 succeeded\nfailed img-2: CorruptImage: bad") == ""


def test_succeeded_job_without_result_counts_as_failure() -> None:
    one = settings(PINSTER_JOB_ATTEMPTS="1")
    d = decide(facts(moderating(), 9, job=JobState("pinster-mod-1", "succeeded")), one)
    assert cond(d.status, "Ready")["reason"] == "NoResult"


def test_a_result_entering_notifying_asks_for_the_notification_at_once() -> None:
    status = moderating()
    rejected = decide(facts(status, 2, result=result(Stage.MODERATION, REJECTED)), S)
    assert (rejected.status["phase"], rejected.action) == ("Notifying", Action.NOTIFY)
    moderated = result(Stage.MODERATION, APPROVED)
    thumb = {Stage.THUMBNAIL: "pinster-thumb-1"}
    thumbnailing = decide(facts(status, 3, result=moderated, assigned=thumb), S).status
    published = decide(facts(thumbnailing, 4, result=result(Stage.THUMBNAIL, PUBLISHED)), S)
    assert (published.status["phase"], published.action) == ("Notifying", Action.NOTIFY)
    # What the controller then writes: Notifying is in the history, Ready is the phase.
    done = after_notify(facts(published.status, 4), S, NotifyOutcome(sent=True))
    assert phases(done.status)[-2:] == ["Notifying", "Ready"]


def test_thumbnails_published_then_notified_then_ready() -> None:
    status = notifying()
    assert status["phase"] == "Notifying"
    assert status["published"]["thumbnailCount"] == 2
    assert cond(status, "ThumbnailsReady")["status"] == "True"
    f = facts(status, 5)
    assert decide(f, S).action == Action.NOTIFY
    done = after_notify(f, S, NotifyOutcome(sent=True))
    assert done.status["phase"] == "Ready"
    assert phases(done.status) == ["Pending", "Moderating", "Thumbnailing", "Notifying", "Ready"]
    assert {c["type"]: c["status"] for c in done.status["conditions"]} == {
        "Moderated": "True",
        "ThumbnailsReady": "True",
        "Notified": "True",
        "Ready": "True",
    }
    assert done.status["notification"]["sentAt"] and done.status["completedAt"]
    # Ready stays Ready: only clean-up is left.
    assert decide(later(f, done.status, 6), S).status == done.status


def test_notification_backoff_then_deadline() -> None:
    s = settings(PINSTER_NOTIFY_DEADLINE="30", PINSTER_NOTIFY_BACKOFF_INITIAL="2")
    status = notifying()
    f = facts(status, 4)
    retry = after_notify(f, s, NotifyOutcome(error="NotificationRefused: 503", rand=0.0))
    assert retry.status["phase"] == "Notifying"
    assert retry.requeue_after == 1.0  # 2 s base, half of it with rand 0
    assert cond(retry.status, "Notified")["reason"] == "Retrying"
    assert "503" in retry.status["notification"]["lastError"]
    early = decide(later(f, retry.status, 4.5), s)
    assert early.action == Action.NONE and early.requeue_after == 0.5
    assert decide(later(f, retry.status, 5), s).action == Action.NOTIFY
    late = after_notify(
        later(f, retry.status, 40), s, NotifyOutcome(error="NotificationRefused: 503", rand=0.0)
    )
    assert late.status["phase"] == "Failed"
    assert late.status["failedStage"] == "notification"
    assert cond(late.status, "Ready")["reason"] == "NotificationFailed"
    assert "published images stay" in cond(late.status, "Ready")["message"]


def test_permanent_refusal_fails_at_once() -> None:
    d = after_notify(
        facts(notifying(), 4), S, NotifyOutcome(error="NotificationRejected: 400", permanent=True)
    )
    assert d.status["phase"] == "Failed"
    assert d.status["attempts"]["notification"] == 1


def test_rejected_with_sns_needs_both() -> None:
    s = settings(PINSTER_SNS_TOPIC_ARN="arn:aws:sns:us-east-1:123456789012:flags")
    status = notifying(REJECTED)
    f = facts(status, 3)
    half = after_notify(
        f, s, NotifyOutcome(flagged_sent=True, error="SnsUnavailable: down", rand=0.5)
    )
    assert half.status["phase"] == "Notifying"
    assert half.status["notification"]["flaggedSentAt"]
    done = after_notify(
        later(f, half.status, 60), s, NotifyOutcome(flagged_sent=True, sns_message_id="m-1")
    )
    assert done.status["phase"] == "Rejected"
    assert done.status["notification"]["snsMessageId"] == "m-1"
    assert cond(done.status, "Ready")["reason"] == "Rejected"
    assert cond(done.status, "Notified")["reason"] == "FlaggedNoticeSent"
    assert "published" not in done.status


def test_rejected_retention_then_ttl() -> None:
    s = settings(PINSTER_REJECTED_RETENTION="100", PINSTER_TERMINAL_TTL="1000")
    f = facts(notifying(REJECTED), 3)
    rejected = after_notify(f, s, NotifyOutcome(flagged_sent=True)).status
    wait = decide(later(f, rejected, 50), s)
    assert wait.action == Action.NONE and wait.requeue_after == 53
    assert decide(later(f, rejected, 103), s).action == Action.DELETE_RAW
    gone = dict(rejected, rawDeletedAt="2026-01-02T03:06:00Z")
    assert decide(later(f, gone, 500), s).requeue_after == 503
    assert decide(later(f, gone, 1003), s).action == Action.DELETE_UPLOAD


def test_rejected_upload_outlives_its_ttl_until_the_raw_bytes_are_gone() -> None:
    # Retention longer than the TTL: deleting the upload first would orphan the bytes.
    s = settings(PINSTER_REJECTED_RETENTION="1000", PINSTER_TERMINAL_TTL="100")
    f = facts(notifying(REJECTED), 3)
    rejected = after_notify(f, s, NotifyOutcome(flagged_sent=True)).status
    assert decide(later(f, rejected, 500), s).action == Action.NONE
    assert decide(later(f, rejected, 1003), s).action == Action.DELETE_RAW
    gone = dict(rejected, rawDeletedAt="2026-01-02T03:20:00Z")
    assert decide(later(f, gone, 1004), s).action == Action.DELETE_UPLOAD


def test_failed_upload_deletes_its_raw_bytes_before_itself_at_the_ttl() -> None:
    s = settings(PINSTER_JOB_ATTEMPTS="1", PINSTER_TERMINAL_TTL="100")
    job = JobState("pinster-mod-1", "failed", "DeadlineExceeded", "too slow")
    f = facts(moderating(), 9, job=job)
    failed = decide(f, s).status
    assert failed["phase"] == "Failed"
    wait = decide(later(f, failed, 50), s)
    assert wait.action == Action.NONE and wait.requeue_after is not None
    assert decide(later(f, failed, 200), s).action == Action.DELETE_RAW
    gone = dict(failed, rawDeletedAt="2026-01-02T03:08:00Z")
    assert decide(later(f, gone, 200), s).action == Action.DELETE_UPLOAD


def test_retry_annotation_redrives_failed_stage() -> None:
    job = JobState("pinster-mod-1", "failed", "DeadlineExceeded", "too slow")
    failed = decide(facts(moderating(), 9, job=job), settings(PINSTER_JOB_ATTEMPTS="1")).status
    d = decide(facts(failed, 100, retry_requested=True), S)
    assert d.clear_retry and d.clear_results == (Stage.MODERATION,)
    assert d.status["phase"] == "Pending"
    assert "failedStage" not in d.status and "moderation" not in d.status["jobs"]
    assert d.status["attempts"]["moderation"] == 0
    assert cond(d.status, "Ready")["reason"] == "Retrying"
    assert phases(d.status)[-2:] == ["Failed", "Pending"]


def test_retry_annotation_redrives_notification() -> None:
    f = facts(notifying(), 4)
    failed = after_notify(f, S, NotifyOutcome(error="x", permanent=True)).status
    d = decide(later(f, failed, 9, retry_requested=True), S)
    assert d.status["phase"] == "Notifying" and d.clear_results == ()
    assert decide(later(f, d.status, 10), S).action == Action.NOTIFY


def test_retry_annotation_on_healthy_upload_is_only_removed() -> None:
    status = moderating()
    d = decide(facts(status, 3, retry_requested=True), S)
    assert d.clear_retry and d.status == status


def test_decisions_do_not_mutate_their_input() -> None:
    status = moderating()
    snapshot = repr(status)
    decide(facts(status, 2, result=result(Stage.MODERATION, APPROVED)), S)
    after_notify(facts(status, 2), S, NotifyOutcome(error="x"))
    assert repr(status) == snapshot


def test_no_decision_changes_the_status_it_started_from() -> None:
    """Statuses are copied at the top level only: nested changes must not leak back."""
    retrying = settings(PINSTER_NOTIFY_DEADLINE="30")
    status: dict[str, Any] = {}
    steps: list[tuple[dict[str, Any], Any]] = [
        ({}, None),
        ({"assigned": {Stage.MODERATION: "pinster-mod-1"}}, None),
        ({"result": result(Stage.MODERATION, APPROVED)}, None),
        (
            {
                "result": result(Stage.MODERATION, APPROVED),
                "assigned": {Stage.THUMBNAIL: "pinster-thumb-1"},
            },
            None,
        ),
        ({"result": result(Stage.THUMBNAIL, PUBLISHED)}, NotifyOutcome(error="x: 503")),
        ({}, NotifyOutcome(sent=True)),
    ]
    for i, (observed, outcome) in enumerate(steps):
        before = copy.deepcopy(status)
        f = facts(status, i, **observed)
        decided = decide(f, retrying)
        assert status == before
        status = decided.status
        if outcome is not None:
            before = copy.deepcopy(status)
            status = after_notify(facts(status, i), retrying, outcome).status
            assert before == decided.status
    assert status["phase"] == "Ready"
