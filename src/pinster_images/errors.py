"""The one exception tree of pinster-images.

Every failure is either *temporary* (retrying the same work later may succeed: a storage
or API server outage, throttling) or *permanent* (retrying cannot help: a broken image,
a refused token, a bad setting). Callers decide what to do next from that split alone;
kopf handlers map it onto ``kopf.TemporaryError`` / ``kopf.PermanentError`` in one place.
"""

from __future__ import annotations


class PinsterError(Exception):
    """Base class of every error raised on purpose by pinster-images."""

    #: CamelCase reason, shown in conditions and API error bodies.
    reason: str = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class TemporaryError(PinsterError):
    """Retrying later may succeed. ``delay`` hints how long to wait, in seconds."""

    reason = "TemporaryFailure"

    def __init__(self, message: str, *, reason: str | None = None, delay: float = 10.0) -> None:
        super().__init__(message, reason=reason)
        self.delay = delay


class PermanentError(PinsterError):
    """Retrying the same work cannot succeed."""

    reason = "PermanentFailure"


class ConfigError(PermanentError):
    """A setting is missing or malformed; the message names the environment variable."""

    reason = "InvalidConfiguration"


class NotFoundError(PermanentError):
    """A stored object or resource does not exist."""

    reason = "NotFound"
