"""Status writes and Events: what an ImageUpload shows in ``kubectl get`` and ``describe``.

:meth:`StatusRecorder.write` replaces the status subresource with the resourceVersion the
reconcile read (a stale copy fails with 409: the decision is taken again) and remembers
the version written, so the echo of our own write, and anything older, is recognised
(:meth:`StatusRecorder.older_than_written`). :meth:`StatusRecorder.record` turns a
written status into metrics and an Event per phase passed; :meth:`StatusRecorder.event`
posts one Event, never failing the reconcile on it; :meth:`StatusRecorder.report_waiting`
says on the upload that the object store holds it up.

Threads: workers write; the remembered versions are read and written one key at a time
from both sides (the event loop's watch events, the workers' writes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pinster_images import logs
from pinster_images.resource import Phase
from pinster_operator._errors import Retry
from pinster_operator._kube import Kube
from pinster_operator._metrics import Metrics
from pinster_operator._queue import Key
from pinster_operator._status import C, conditions, entered_at, phase_of

logger = logging.getLogger("pinster_operator")


@dataclass
class StatusRecorder:
    kube: Kube
    metrics: Metrics
    #: resourceVersion of our own last status write, to skip older watch events.
    _written: dict[Key, int] = field(default_factory=dict, init=False)

    def write(self, obj: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Replace the status of ``obj`` with ``new``; returns the API server's answer."""
        meta = obj["metadata"]
        updated = self.kube.replace_status(obj, new)
        self._remember((meta["namespace"], meta["name"]), updated)
        return updated

    def record(
        self,
        obj: dict[str, Any],
        old: dict[str, Any],
        new: dict[str, Any],
        now: datetime,
        *,
        passed: dict[str, Any] | None = None,
    ) -> None:
        """The written ``new`` in metrics, and an Event per phase passed since ``old``;
        ``passed`` is a status between them that was acted on but not written
        (Notifying, when the notification went out at once)."""
        meta = obj["metadata"]
        self.metrics.observe((meta["namespace"], meta["name"]), new.get("phase"))
        previous = old
        for step in (passed, new):
            if step is not None and step.get("phase") != previous.get("phase"):
                self.metrics.transition(
                    previous, step, entered_at(step, Phase(step["phase"])) or now
                )
                # An Event per transition; the first visit's Pending is not one.
                if previous.get("phase"):
                    self._announce(obj, step)
                previous = step

    def older_than_written(
        self, key: Key, body: dict[str, Any], *, inclusive: bool = False
    ) -> bool:
        written = self._written.get(key)
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        if written is None or not version.isdigit():
            return False
        # resourceVersions are opaque; etcd's are integers, which is all we rely on here.
        return int(version) <= written if inclusive else int(version) < written

    def forget(self, key: Key) -> None:
        """The upload is gone: drop its version. From any thread."""
        self._written.pop(key, None)

    def report_waiting(self, key: Key, retry: Retry) -> None:
        """The object store holds this upload up: say so on it (the Ready condition, and
        an Event when the reason is new), so `kubectl describe` tells why it waits."""
        try:
            obj = self.kube.get_upload(*key)
            if obj is None:
                return
            status: dict[str, Any] = obj.get("status") or {}
            ready: dict[str, Any] = next(
                (c for c in status.get("conditions") or [] if c.get("type") == C.READY), {}
            )
            if ready.get("reason") == retry.reason or phase_of(status) is None:
                return
            message = (
                f"Waiting for the object store: {retry.message}. Tried again every "
                f"{retry.delay:.0f}s; nothing is lost meanwhile."
            )
            generation = int(obj["metadata"].get("generation") or 1)
            new = conditions(
                status,
                {C.READY: ("False", retry.reason, message)},
                generation=generation,
                now=datetime.now(UTC),
            )
            updated = self.kube.replace_status(obj, new)
            self._remember(key, updated)
            self.event(obj, "Warning", retry.reason, message)
        except Exception as exc:  # the API server may be down too: the log said it all
            logger.info("could not record the wait on %s/%s: %s", *key, exc)

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            self.kube.event(obj, type_, reason, message)
        except Exception as exc:  # an Event is nice to have; never fail a reconcile on it
            logger.warning("posting an Event failed: %s", exc)

    def _remember(self, key: Key, updated: dict[str, Any]) -> None:
        version = str(updated.get("metadata", {}).get("resourceVersion") or "")
        if version.isdigit():
            self._written[key] = int(version)

    def _announce(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        phase = status["phase"]
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        message = str(ready.get("message") or phase)
        type_ = "Warning" if phase == Phase.FAILED else "Normal"
        meta = obj["metadata"]
        logs.for_upload(logger, meta["namespace"], meta["name"]).info(
            "phase %s: %s", phase, message, extra={"phase": phase}
        )
        self.event(obj, type_, str(phase), message)
