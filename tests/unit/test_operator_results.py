"""The operator's reading of stage results: one bundle GET per Job, records as the
fallback, a result kept until the upload moves on (:mod:`pinster_operator._results`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pinster_operator._metrics import Metrics
from pinster_operator._results import ResultReader

from pinster_images import results
from pinster_images.resource import Stage
from pinster_images.results import StageResult
from pinster_images.storage import Area, StoredObject
from tests.support.storage import DirectoryStorage

NS, JOB = "ns", "pinster-mod-1"


class CountingStorage(DirectoryStorage):
    """Counts GETs by key; a GET of a bundle waits for ``release`` when one is given."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: list[str] = []
        self.release: threading.Event | None = None

    def get(self, area: Area, key: str) -> StoredObject:
        self.gets.append(key)
        if self.release is not None and "/_jobs/" in key:
            self.release.wait(5)
        return super().get(area, key)


def result(upload: str, uid: str = "uid-" + "x", stage: Stage = Stage.MODERATION) -> StageResult:
    return StageResult(NS, upload, stage, JOB, "succeeded", data={"decision": "Approved"}, uid=uid)


def job_wrote(storage: DirectoryStorage, uploads: list[str], *, bundle: bool = True) -> None:
    """What a Job pod leaves: a record per upload, then (a current image) the bundle."""
    written = [result(name, uid=f"uid-{name}") for name in uploads]
    for record in written:
        results.write(storage, record)
    if bundle:
        results.write_bundle(storage, NS, JOB, written)


def take(reader: ResultReader, name: str, uid: str = "", *, bundled: bool = True) -> Any:
    """The moderation result of upload ``name`` (uid ``uid-<name>`` unless given) from JOB."""
    return reader.read((NS, name), Stage.MODERATION, JOB, uid or f"uid-{name}", bundled=bundled)


def reads(reader: ResultReader) -> dict[str, float]:
    """``pinster_result_reads_total`` by source."""
    sample = reader.metrics.registry.get_sample_value
    return {s: sample("pinster_result_reads_total", {"source": s}) for s in ("bundle", "record")}


def bundle_gets(storage: CountingStorage) -> int:
    return sum("/_jobs/" in key for key in storage.gets)


def test_a_jobs_uploads_share_one_get_of_its_bundle_which_is_then_deleted(
    tmp_path: Path,
) -> None:
    storage = CountingStorage(tmp_path)
    names = [f"u{i}" for i in range(5)]
    job_wrote(storage, names)
    reader = ResultReader(storage, Metrics())
    for name in names:
        got = take(reader, name)
        assert got is not None and got.upload == name and got.data == {"decision": "Approved"}
    assert storage.gets == [results.bundle_key(NS, JOB)]
    assert reads(reader) == {"bundle": 1, "record": 0}
    assert storage.head(Area.UPLOAD, results.bundle_key(NS, JOB)) is None
    # The records stay: the durable channel (an operator restarted reads them).
    assert results.read(storage, NS, "u0", Stage.MODERATION) is not None


def test_what_a_bundle_lacks_is_read_from_its_own_record(tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path)
    job_wrote(storage, ["u0"])
    results.write(storage, result("late", uid="uid-late"))  # not in the bundle
    reader = ResultReader(storage, Metrics())
    assert take(reader, "u0") is not None
    late = take(reader, "late")
    assert late is not None and late.upload == "late"
    assert take(reader, "none") is None
    assert bundle_gets(storage) == 1  # read once, not asked for again
    assert reads(reader) == {"bundle": 1, "record": 2}


def test_without_a_bundle_each_record_is_read_and_the_bundle_asked_for_once(
    tmp_path: Path,
) -> None:
    storage = CountingStorage(tmp_path)
    names = ["u0", "u1", "u2"]
    job_wrote(storage, names, bundle=False)  # a Job of an older image
    reader = ResultReader(storage, Metrics())
    for name in names:
        assert take(reader, name) is not None
    assert bundle_gets(storage) == 1
    assert len(storage.gets) == 1 + len(names)


def test_a_job_of_one_upload_is_read_from_its_record_alone(tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path)
    job_wrote(storage, ["u0"], bundle=False)  # one record: the Job writes no bundle
    reader = ResultReader(storage, Metrics())
    assert take(reader, "u0", bundled=False) is not None
    assert storage.gets == [results.result_key(NS, "u0", Stage.MODERATION)]


def test_a_result_of_an_earlier_upload_of_the_name_is_not_taken(tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path)
    job_wrote(storage, ["u0", "u1"])
    reader = ResultReader(storage, Metrics())
    assert take(reader, "u0", uid="another-uid") is None
    results.write(storage, result("u1", uid="old-uid"))  # the record is an earlier one's too
    assert take(reader, "u1") is not None  # the bundle's
    assert take(reader, "u2") is None


def test_a_result_is_kept_until_the_upload_moves_on(tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path)
    job_wrote(storage, ["u0"])
    reader = ResultReader(storage, Metrics())
    key = (NS, "u0")
    first = take(reader, "u0")
    reader.moved_on(key, Stage.MODERATION)  # still moderating (its thumbnail Job is due)
    assert take(reader, "u0") is first
    assert len(storage.gets) == 1
    reader.moved_on(key, Stage.THUMBNAIL)
    again = take(reader, "u0")  # from its record now
    assert again == first and len(storage.gets) == 2
    reader.clear(key, Stage.MODERATION)  # a retry: the record goes, nothing is kept
    assert take(reader, "u0") is None


def test_uploads_reconciled_at_once_share_one_bundle_get(tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path)
    names = [f"u{i}" for i in range(6)]
    job_wrote(storage, names)
    storage.release = threading.Event()
    reader = ResultReader(storage, Metrics())
    got: dict[str, Any] = {}

    def read(name: str) -> None:
        got[name] = take(reader, name)

    threads = [threading.Thread(target=read, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    while bundle_gets(storage) == 0:  # the first reader is inside the GET
        threading.Event().wait(0.001)
    storage.release.set()
    for thread in threads:
        thread.join()
    assert all(got[name] is not None and got[name].upload == name for name in names)
    assert storage.gets == [results.bundle_key(NS, JOB)]


def test_a_deleted_jobs_bundle_is_deleted_even_when_never_read(tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path)
    job_wrote(storage, ["u0"])
    reader = ResultReader(storage, Metrics())
    reader.job_gone(NS, JOB)
    reader.delete_bundle(NS, JOB)
    assert storage.head(Area.UPLOAD, results.bundle_key(NS, JOB)) is None
    reader.delete_bundle(NS, JOB)  # again (read and deleted before): no error


def test_a_result_key_names_its_upload_or_job() -> None:
    """The orphan sweep's reading of ``results/`` keys (:func:`results.owner_of`)."""
    upload = results.owner_of(results.result_key(NS, "img-1", Stage.THUMBNAIL))
    assert upload == results.Owner("upload", NS, "img-1")
    assert results.owner_of(results.bundle_key(NS, JOB)) == results.Owner("job", NS, JOB)
    for other in (
        f"results/{NS}/notes.json",
        f"results/{NS}/img-1/moderation.txt",
        f"results/{NS}/img-1/deeper/moderation.json",
        f"raw/{NS}/img-1/moderation.json",
    ):
        assert results.owner_of(other) is None, other
