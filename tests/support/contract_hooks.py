"""schemathesis hooks of :func:`tests.support.contract.run_contract` (its child process
loads them by module name).

The one place where JSON Schema cannot say what the service does: ``name`` and
``description`` are measured in UTF-16 code units, as JavaScript's ``length``, where a
character outside the BMP counts twice; JSON Schema counts code points. The document
describes a subset that is always accepted and says in prose that strings of
``MAX_TEXT // 2 + 1`` to ``MAX_TEXT - 1`` code points mixing in such characters may pass
too. A request found "schema-violating" only there is not a contract failure.

And one of schemathesis' own: for an image media type it sends its sample file of that
format (a well-formed 1x1 image) whatever body it generated, so a negative case there
can arrive as a valid image, which the service rightly accepts.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.core.file_samples import MEDIA_TYPE_FILE_SAMPLES

from pinster_images.fields import MAX_TEXT

TEXT_FIELDS = ("name", "description")
NEGATIVE_ACCEPTED = "ST201"


def in_utf16_gap(value: Any) -> bool:
    """A string the document's length rule leaves undecided (see the module docstring)."""
    return (
        isinstance(value, str)
        and MAX_TEXT // 2 < len(value) < MAX_TEXT
        and any(ord(c) > 0xFFFF for c in value)
    )


@schemathesis.hook
def filter_failure(
    context: schemathesis.HookContext, failure: Any, case: Any, response: Any
) -> bool:
    """Keep every failure but "schema-violating request accepted" for a body whose text
    field lies in that gap, or that schemathesis replaced by its valid sample image."""
    if getattr(failure, "code", None) != NEGATIVE_ACCEPTED:
        return True
    if response.request.body in MEDIA_TYPE_FILE_SAMPLES.values():
        return False
    if not isinstance(case.body, dict):
        return True
    data = case.body.get("data")
    fields = data if isinstance(data, dict) else {}
    return not any(in_utf16_gap(fields.get(name)) for name in TEXT_FIELDS)
