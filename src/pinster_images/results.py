"""The channel from Job pods to the operator: one result record per (upload, stage).

A pod's termination message holds only 4 KiB, too little for a batch, and is lost with
the pod. Instead each Job writes ``results/<namespace>/<upload>/<stage>.json`` into the
upload area of the object store, tagged with the Job's name; the operator reads it when
the Job finishes (also after its own restart) and stays the only writer of status.
A record names the ImageUpload's uid the Job read: one left by an earlier ImageUpload of
the same name (deleted, then uploaded again) is not this one's, and is ignored rather
than deleted up front (two DELETEs per upload).

When its uploads are done, a Job of several uploads also writes all its records again
as one *bundle*, ``results/<namespace>/_jobs/<job>.json`` (``_`` never starts an
upload's name). The operator reads a finished Job's bundle once instead of one record
per upload, and deletes it; the per-upload records stay the durable channel (a retried
pod's progress, an operator restart, a Job whose bundle is lost). A Job of one upload
writes none: its record is all there is to read, and a lone upload waits for nothing
more.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pinster_images.errors import NotFoundError
from pinster_images.resource import Stage, now_rfc3339
from pinster_images.storage import Area, Storage

RESULTS_PREFIX = "results/"
#: the folder of a namespace's bundles (``_`` never starts an upload's name)
BUNDLES = "_jobs"
#: the fewest records a Job bundles (see the module's docstring)
BUNDLE_MIN = 2

Outcome = Literal["succeeded", "failed"]


def result_key(namespace: str, upload: str, stage: Stage) -> str:
    return f"{RESULTS_PREFIX}{namespace}/{upload}/{stage}.json"


def bundle_key(namespace: str, job: str) -> str:
    return f"{RESULTS_PREFIX}{namespace}/{BUNDLES}/{job}.json"


@dataclass(frozen=True)
class Owner:
    """What a key under ``results/`` belongs to: an ImageUpload (its records) or a Job
    (its bundle), by namespace and name."""

    kind: Literal["upload", "job"]
    namespace: str
    name: str


def owner_of(key: str) -> Owner | None:
    """The upload or Job that ``key`` (:func:`result_key`, :func:`bundle_key`) belongs
    to; None for a key of another shape, which is nobody's to judge."""
    parts = key.removeprefix(RESULTS_PREFIX).split("/")
    if not key.startswith(RESULTS_PREFIX) or len(parts) != 3 or not parts[2].endswith(".json"):
        return None
    namespace, folder, file = parts
    if folder == BUNDLES:
        return Owner("job", namespace, file.removesuffix(".json"))
    return Owner("upload", namespace, folder)


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
        return cls.from_dict(json.loads(raw))

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> StageResult:
        return cls(**{**fields, "stage": Stage(fields["stage"])})


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


def write_bundle(storage: Storage, namespace: str, job: str, written: list[StageResult]) -> None:
    """The records ``job`` wrote, as one object (see the module's docstring)."""
    storage.put(
        Area.UPLOAD,
        bundle_key(namespace, job),
        json.dumps([asdict(result) for result in written], sort_keys=True).encode(),
        content_type="application/json",
        cache_control=None,
    )


def read_bundle(storage: Storage, namespace: str, job: str) -> list[StageResult] | None:
    """The records in ``job``'s bundle; None when there is none (an older Job image, a
    Job that wrote no record, or a bundle read and deleted before)."""
    try:
        stored = storage.get(Area.UPLOAD, bundle_key(namespace, job))
    except NotFoundError:
        return None
    return [StageResult.from_dict(fields) for fields in json.loads(stored.data)]


def delete(storage: Storage, namespace: str, upload: str) -> None:
    for stage in Stage:
        storage.delete(Area.UPLOAD, result_key(namespace, upload, stage))
