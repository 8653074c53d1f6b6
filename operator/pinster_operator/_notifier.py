"""The notification side effect: an upload's verdict sent to PinsterApi (and SNS).

Approved: one POST of the approved body; Rejected: the flagged POST, then the SNS publish
when a topic is configured. The bodies, the signing and the POST itself are
:mod:`._notify`'s; this module decides which of them an upload still needs, sends them
over the worker thread's keep-alive session, counts them, and answers a
:class:`NotifyOutcome` for the state machine (:func:`after_notify`).

What was delivered is remembered in memory by the upload's uid (besides what the status
records), so a status write that has to be retried (409) never sends twice; it is
forgotten once the upload is terminal, or deleted at the end of its TTL.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import requests

from pinster_images import logs
from pinster_images.errors import PermanentError, PinsterError
from pinster_images.resource import ImageUploadSpec
from pinster_images.storage import Storage
from pinster_operator import _notify
from pinster_operator._machine import NotifyOutcome, is_rejected
from pinster_operator._metrics import Metrics
from pinster_operator._settings import NotifySettings

logger = logging.getLogger("pinster_operator")


@dataclass
class _Delivered:
    """Notifications already delivered for one upload."""

    approved: bool = False
    flagged: bool = False
    sns: str | None = None


@dataclass
class Notifier:
    settings: NotifySettings
    storage: Storage
    metrics: Metrics
    _delivered: dict[str, _Delivered] = field(default_factory=dict, init=False)
    _sessions: threading.local = field(default_factory=threading.local, init=False)

    def send(self, obj: dict[str, Any], status: dict[str, Any]) -> NotifyOutcome:
        """Send what ``status`` (Notifying) still asks for; a failure is in the outcome."""
        meta = obj["metadata"]
        name = meta["name"]
        spec = ImageUploadSpec.from_dict(obj["spec"])
        sent = self._delivered.setdefault(str(meta.get("uid")), _Delivered())
        recorded = status.get("notification") or {}
        settings = self.settings
        log = logs.for_upload(logger, meta["namespace"], name)

        def post(path: str, body: dict[str, Any]) -> None:
            _notify.post(
                settings, path, body, spec=spec, idempotency_key=name, session=self._http()
            )

        kind = "approved"
        try:
            if is_rejected(status):
                verdict = status.get("verdict") or {}
                if not (sent.flagged or recorded.get("flaggedSentAt")):
                    kind = "flagged"
                    post(settings.flagged_path, _notify.flagged_body(spec, name, verdict))
                    sent.flagged = True
                    self.metrics.notifications.labels(kind, "sent").inc()
                if settings.sns_topic_arn and not (sent.sns or recorded.get("snsMessageId")):
                    kind = "sns"
                    sent.sns = _notify.publish_sns(
                        settings, _notify.sns_message(spec, name, verdict)
                    )
                    self.metrics.notifications.labels(kind, "sent").inc()
            elif not sent.approved:
                published = status.get("published") or {}
                body = _notify.approved_body(spec, self.storage.public_url(spec.md5), published)
                post(_notify.IMAGES_PATH, body)
                sent.approved = True
                self.metrics.notifications.labels(kind, "sent").inc()
        except PinsterError as exc:
            self.metrics.notifications.labels(kind, "failed").inc()
            log.info("%s notification failed: %s", kind, exc.message)
            return NotifyOutcome(
                sent=sent.approved,
                flagged_sent=sent.flagged,
                sns_message_id=sent.sns,
                error=f"{exc.reason}: {exc.message}",
                permanent=isinstance(exc, PermanentError),
            )
        return NotifyOutcome(sent=sent.approved, flagged_sent=sent.flagged, sns_message_id=sent.sns)

    def forget(self, uid: str) -> None:
        """The upload is terminal or gone: nothing will be sent for it again."""
        self._delivered.pop(uid, None)

    def _http(self) -> requests.Session:
        """The worker thread's keep-alive session to PinsterApi (a new connection per
        POST cost a handshake every time)."""
        session: requests.Session | None = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = _notify.new_session(self.settings)
        return session
