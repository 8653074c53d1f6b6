"""Pure helpers that build the ImageUpload status: phases, history and conditions.

The status is a plain dict shaped like the CRD (camelCase). Functions here never mutate
their argument: they return a new dict (a top-level copy whose changed values are new
objects, nested ones never changed in place), so a decision can be compared with the
status it came from and written only when something changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pinster_images.resource import Condition, ConditionType, Phase, rfc3339, set_condition

Status = dict[str, Any]

#: Stage names as recorded in ``status.failedStage``.
NOTIFICATION = "notification"

C = ConditionType


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def phase_of(status: Status) -> Phase | None:
    value = status.get("phase")
    return Phase(value) if value else None


def entered_at(status: Status, phase: Phase) -> datetime | None:
    """When the current run of ``phase`` was entered (last matching history entry)."""
    for entry in reversed(status.get("phaseHistory") or []):
        if entry.get("phase") == phase:
            return parse_time(entry.get("enteredAt"))
    return None


def conditions(
    status: Status,
    updates: dict[ConditionType, tuple[str, str, str]],
    *,
    generation: int,
    now: datetime,
) -> Status:
    """Merge ``{type: (status, reason, message)}`` into the conditions."""
    result = dict(status)
    merged: list[dict[str, Any]] = list(result.get("conditions") or [])
    for type_, (value, reason, message) in updates.items():
        merged = set_condition(
            merged,
            Condition(
                type=type_,
                status=value,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=rfc3339(now),
            ),
        )
    # A stable order makes `kubectl describe` readable and comparisons cheap.
    order = {t.value: i for i, t in enumerate(ConditionType)}
    merged.sort(key=lambda c: order.get(str(c.get("type")), len(order)))
    result["conditions"] = merged
    result["observedGeneration"] = generation
    return result


def enter(status: Status, phase: Phase, *, generation: int, now: datetime) -> Status:
    """Move to ``phase``, appending to the phase history when it actually changes."""
    result = dict(status)
    if result.get("phase") != phase:
        history = list(result.get("phaseHistory") or [])
        history.append({"phase": phase.value, "enteredAt": rfc3339(now)})
        result["phaseHistory"] = history
        result["phase"] = phase.value
        if phase.terminal:
            result["completedAt"] = rfc3339(now)
        else:
            result.pop("completedAt", None)
    result["observedGeneration"] = generation
    return result


def initial(*, generation: int, now: datetime) -> Status:
    """The first visit: every condition present, Unknown, saying what comes next."""
    status = enter({}, Phase.PENDING, generation=generation, now=now)
    return conditions(
        status,
        {
            C.MODERATED: ("Unknown", "Pending", "Waiting for a moderation Job to be scheduled."),
            C.THUMBNAILS_READY: ("Unknown", "Pending", "Thumbnails are made after moderation."),
            C.NOTIFIED: ("Unknown", "Pending", "PinsterApi is notified after thumbnails."),
            C.READY: ("False", "Pending", "The upload was accepted; processing has not started."),
        },
        generation=generation,
        now=now,
    )


def failed(
    status: Status,
    *,
    stage: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> Status:
    """Terminal failure of ``stage``; the retry annotation re-drives it."""
    condition = {
        "moderation": C.MODERATED,
        "thumbnail": C.THUMBNAILS_READY,
        NOTIFICATION: C.NOTIFIED,
    }[stage]
    hint = " To retry once the cause is fixed: kubectl annotate iu NAME images.pinster.io/retry=1"
    result = enter(status, Phase.FAILED, generation=generation, now=now)
    result["failedStage"] = stage
    return conditions(
        result,
        {
            condition: ("False", reason, message),
            C.READY: ("False", reason, f"{stage} failed: {message.rstrip('.')}.{hint}"),
        },
        generation=generation,
        now=now,
    )


def verdict_summary(verdict: dict[str, Any]) -> str:
    labels = verdict.get("labels") or []
    backend = verdict.get("backend", "moderation")
    threshold = verdict.get("threshold")
    at = f" at threshold {threshold}" if threshold is not None else ""
    if not labels:
        return f"{backend} found no moderation labels{at}."
    names = ", ".join(
        f"{label.get('name')} ({float(label.get('confidence', 0)):.1f}%)" for label in labels[:8]
    )
    return f"{backend} found {len(labels)} label(s){at}: {names}."
