"""The channel from Job pods to the operator: one result record per (upload, stage).

A pod's termination message holds only 4 KiB, too little for a batch, and is lost with
the pod. Instead each Job writes ``results/<namespace>/<upload>/<stage>.json`` into the
upload area of the object store, tagged with the Job's name; the operator reads it when
the Job finishes (also after its own restart) and stays the only writer of status.
A record names the ImageUpload's uid the Job read: one left by an earlier ImageUpload of
the same name (deleted, then uploaded again) is not this one's, and is ignored rather
than deleted up front (two DELETEs per upload).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pinster_images.errors import NotFoundError
from pinster_images.resource import Stage, now_rfc3339
from pinster_images.storage import Area, Storage

RESULTS_PREFIX = "results/"

Outcome = Literal["succeeded", "failed"]


def result_key(namespace: str, upload: str, stage: Stage) -> str:
    return f"{RESULTS_PREFIX}{namespace}/{upload}/{stage}.json"


@dataclass
class StageResult:
    """What a Job says about one upload.

    ``outcome == "failed"`` is a *permanent* per-upload failure (a broken file, a pixel
    bomb); temporary trouble makes the whole pod exit non-zero so the Job retries.
    ``data`` holds the stage's payload: the verdict for moderation, the published
    objects for thumbnails (shaped as the CRD's ``status.verdict`` / ``status.published``).
    """

    namespace: str
    upload: str
    stage: Stage
    job: str
    outcome: Outcome
    reason: str = ""
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    finished_at: str = field(default_factory=now_rfc3339)
    #: the ImageUpload's ``metadata.uid`` when the Job read it ("" from Jobs before it)
    uid: str = ""

    def is_for(self, uid: str) -> bool:
        """Whether this result is about the ImageUpload with ``uid`` (a record without
        one, written by an older Job image, is taken as it always was)."""
        return not self.uid or self.uid == uid

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> StageResult:
        fields = json.loads(raw)
        fields["stage"] = Stage(fields["stage"])
        return cls(**fields)


def write(storage: Storage, result: StageResult) -> None:
    storage.put(
        Area.UPLOAD,
        result_key(result.namespace, result.upload, result.stage),
        result.to_json(),
        content_type="application/json",
        cache_control=None,
    )


def read(storage: Storage, namespace: str, upload: str, stage: Stage) -> StageResult | None:
    key = result_key(namespace, upload, stage)
    try:  # one GET, not a HEAD first: the operator reads results on every reconcile
        stored = storage.get(Area.UPLOAD, key)
    except NotFoundError:
        return None
    return StageResult.from_json(stored.data)


def delete(storage: Storage, namespace: str, upload: str) -> None:
    for stage in Stage:
        storage.delete(Area.UPLOAD, result_key(namespace, upload, stage))
