"""The original service's field rules for ``name``, ``description`` and ``featured``.

A field is considered only when JavaScript would find it truthy; ``name`` and
``description`` must then be longer than 3 and shorter than 140 UTF-16 code units (the
original measured ``String(x).length``) and are stored sanitised: ``name`` keeps word
characters and spaces, ``description`` also ``\\ . ! ?``. Differences, all where the
original crashed or wrote invalid S3 metadata: non-string names or descriptions are a
400 (the original threw), whitespace other than a plain space becomes a space, and
``featured`` must be a string or number of at most 64 printable ASCII characters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pinster_images.errors import PermanentError

#: The original's messages, byte for byte (clients show them).
FIELD_MESSAGE = "Must be between 3 and 140 characters A-z0-9. Omit or null the field otherwise."
FEATURED_MESSAGE = "Must be a string. Omit or null the field otherwise."

#: ``name`` and ``description``: longer than 3 and shorter than 140 UTF-16 code units.
MIN_TEXT, MAX_TEXT = 4, 139
MAX_FEATURED = 64  # the CRD's bound
#: ``featured``: printable ASCII (it becomes an S3 metadata header).
FEATURED = re.compile(rf"[ -~]{{1,{MAX_FEATURED}}}")
#: The JSON values JavaScript finds falsy (and NaN): a field holding one is ignored.
FALSY: tuple[Any, ...] = (None, False, 0, "")
_NAME_DROP = re.compile(r"[^A-Za-z0-9_\s]")
_DESCRIPTION_DROP = re.compile(r"[^A-Za-z0-9_\s\\.!?]")
_WHITESPACE = re.compile(r"\s")


class InvalidFields(PermanentError):
    """Fields breaking the rules; ``errors`` maps each to the original's message (the
    upload service answers 400 ``{"errors": {"data": errors}}``)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(f"invalid fields: {', '.join(sorted(errors))}", reason="InvalidFields")
        self.errors = errors


@dataclass(frozen=True)
class Fields:
    name: str | None = None
    description: str | None = None
    featured: str | None = None

    def metadata(self) -> dict[str, str]:
        """The optional object metadata, present only when given (as the original)."""
        items = (("name", self.name), ("description", self.description))
        meta = {key: value for key, value in items if value is not None}
        if self.featured is not None:
            meta["featured"] = self.featured
        return meta


class TooLong:
    """Stands for a field value that was streamed away because it was huge."""

    def __init__(self, length: int) -> None:
        self.length = length


def truthy(value: Any) -> bool:
    """JavaScript truthiness of a JSON value (``0.0 == 0``, so it is falsy too)."""
    return not (value in FALSY or (isinstance(value, float) and math.isnan(value)))


def js_length(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _text(value: Any, drop: re.Pattern[str]) -> str | None:
    if not isinstance(value, str):
        return None
    if not MIN_TEXT <= js_length(value) <= MAX_TEXT:
        return None
    # \s in a str pattern is Unicode whitespace, as JavaScript's; S3 metadata is ASCII.
    return _WHITESPACE.sub(" ", drop.sub("", value))


def validate(data: dict[str, Any]) -> Fields:
    errors: dict[str, str] = {}
    values: dict[str, str | None] = {"name": None, "description": None, "featured": None}
    for key, drop in (("name", _NAME_DROP), ("description", _DESCRIPTION_DROP)):
        if truthy(data.get(key)):
            values[key] = _text(data[key], drop)
            if values[key] is None:
                errors[key] = FIELD_MESSAGE
    featured = data.get("featured")
    if truthy(featured):
        if isinstance(featured, int | float) and not isinstance(featured, bool):
            featured = str(featured)
        if isinstance(featured, str) and FEATURED.fullmatch(featured):
            values["featured"] = featured
        else:
            errors["featured"] = FEATURED_MESSAGE
    if errors:
        raise InvalidFields(errors)
    return Fields(**values)
