"""The thumbnail stage over local storage: what gets published, in which order, and
that a second run is a harmless no-op with the same result."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pinster_jobs import (
    EXIT_OK,
    EXIT_TEMPORARY,
    ThumbnailEngine,
    ThumbnailSettings,
    publish,
    read_source,
    run_batch,
)

from pinster_images import results
from pinster_images.errors import PermanentError, TemporaryError
from pinster_images.resource import ImageUploadSpec, JobUpload, Stage
from pinster_images.sniff import ImageLimits
from pinster_images.storage import CACHE_CONTROL, Area, thumbnail_key
from tests.support import images
from tests.support.jobs import job_uploads, stage_upload
from tests.support.storage import DirectoryStorage

log = logging.getLogger("test")
SIZES = ("1024x1024", "512x512", "200xauto")


@pytest.fixture
def storage(tmp_path: Path) -> DirectoryStorage:
    return DirectoryStorage(tmp_path / "store", "https://img.example.test")


@pytest.fixture
def engine() -> ThumbnailEngine:
    return ThumbnailEngine(ThumbnailSettings(), ImageLimits())


def test_publishes_thumbnails_then_original_then_removes_raw(
    storage: DirectoryStorage, engine: ThumbnailEngine
) -> None:
    data = images.with_gps("JPEG", 1600, 1200)
    _, spec = stage_upload(storage, data, sizes=SIZES)
    published = publish(storage, engine, JobUpload.of("u", spec), log)

    assert storage.head(Area.UPLOAD, spec.key) is None
    original = storage.get(Area.PUBLIC, spec.md5)
    assert original.info.content_type == "image/jpeg"
    assert original.info.cache_control == CACHE_CONTROL
    assert original.info.metadata["imageable_id"] == "42"
    assert original.info.metadata["base_file_name"] == spec.md5
    assert Image.open(io.BytesIO(original.data)).getexif().get_ifd(0x8825) == {}

    expected = {"1024x1024": (1024, 768), "512x512": (512, 384), "200xauto": (200, 150)}
    assert published["thumbnailCount"] == 3
    assert published["original"] == {
        "key": spec.md5,
        "url": f"https://img.example.test/{spec.md5}",
        "contentType": "image/jpeg",
    }
    for entry in published["thumbnails"]:
        stored = storage.get(Area.PUBLIC, entry["key"])
        assert entry["key"] == thumbnail_key(spec.md5, entry["size"])
        assert entry["url"] == f"https://img.example.test/{entry['key']}"
        assert stored.info.content_type == entry["contentType"] == "image/jpeg"
        assert stored.info.cache_control == CACHE_CONTROL
        image = Image.open(io.BytesIO(stored.data))
        assert image.size == (entry["width"], entry["height"]) == expected[entry["size"]]
        assert not image.getexif()


def test_second_run_reads_the_public_original_and_reports_the_same(
    storage: DirectoryStorage, engine: ThumbnailEngine
) -> None:
    _, spec = stage_upload(storage, images.photo_jpeg(800, 600), sizes=SIZES)
    first = publish(storage, engine, JobUpload.of("u", spec), log)
    snapshot = {key: storage.get(Area.PUBLIC, key).data for key in storage.list(Area.PUBLIC)}
    second = publish(storage, engine, JobUpload.of("u", spec), log)
    assert second == first
    assert {key: storage.get(Area.PUBLIC, key).data for key in storage.list(Area.PUBLIC)} == (
        snapshot
    )


class CountingStorage(DirectoryStorage):
    """Records each request a stage makes: (method, area, key)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: list[tuple[str, Area, str]] = []

    @property
    def puts(self) -> list[str]:
        return [key for method, _, key in self.calls if method == "put"]

    def head(self, area: Area, key: str) -> Any:
        self.calls.append(("head", area, key))
        return super().head(area, key)

    def get(self, area: Area, key: str) -> Any:
        self.calls.append(("get", area, key))
        return super().get(area, key)

    def put(self, area: Area, key: str, body: Any, **kwargs: Any) -> bool:
        self.calls.append(("put", area, key))
        return super().put(area, key, body, **kwargs)

    def delete(self, area: Area, key: str) -> None:
        self.calls.append(("delete", area, key))
        super().delete(area, key)

    def stage(self, data: bytes, sizes: Sequence[str] = SIZES, **kwargs: Any) -> ImageUploadSpec:
        """An upload staged as the upload service would, with no call recorded yet."""
        _, spec = stage_upload(self, data, sizes=sizes, **kwargs)
        self.calls.clear()
        return spec


@pytest.fixture
def counting(tmp_path: Path) -> CountingStorage:
    return CountingStorage(tmp_path / "counted")


def test_a_first_run_asks_the_object_store_only_what_it_must(
    counting: CountingStorage, engine: ThumbnailEngine
) -> None:
    storage = counting
    spec = storage.stage(images.photo_jpeg(800, 600))
    publish(storage, engine, JobUpload.of("u", spec), log)
    thumbnails = sorted(thumbnail_key(spec.md5, size) for size in SIZES)
    # The source without a HEAD first; one HEAD says nothing of this md5 is published
    # yet, so no thumbnail is looked for one by one.
    assert storage.calls[:2] == [("get", Area.UPLOAD, spec.key), ("head", Area.PUBLIC, spec.md5)]
    assert sorted(storage.puts[:-1]) == thumbnails and storage.puts[-1] == spec.md5
    assert storage.calls[-1] == ("delete", Area.UPLOAD, spec.key)
    assert len(storage.calls) == 2 + len(SIZES) + 2


def test_the_same_bytes_uploaded_again_are_not_rendered_again(
    counting: CountingStorage, engine: ThumbnailEngine
) -> None:
    storage = counting
    data = images.photo_jpeg(800, 600)
    published = publish(storage, engine, JobUpload.of("a", storage.stage(data)), log)
    # Another imageable, the same image: the raw object is back, the thumbnails are there.
    second = storage.stage(data, imageable_id="2")
    assert publish(storage, engine, JobUpload.of("b", second), log) == published
    assert storage.puts == [second.md5]
    assert storage.get(Area.PUBLIC, second.md5).info.metadata["imageable_id"] == "2"
    assert storage.head(Area.UPLOAD, second.key) is None


def test_the_source_is_one_get_and_the_public_original_once_the_raw_is_gone(
    counting: CountingStorage, engine: ThumbnailEngine
) -> None:
    storage = counting
    spec = storage.stage(images.photo_jpeg(320, 240))
    assert read_source(storage, JobUpload.of("u", spec)).raw
    assert storage.calls == [("get", Area.UPLOAD, spec.key)]
    publish(storage, engine, JobUpload.of("u", spec), log)
    storage.calls.clear()
    source = read_source(storage, JobUpload.of("u", spec))
    assert not source.raw and source.data == storage.get(Area.PUBLIC, spec.md5).data
    assert storage.calls[:2] == [("get", Area.UPLOAD, spec.key), ("get", Area.PUBLIC, spec.md5)]
    storage.delete(Area.PUBLIC, spec.md5)
    with pytest.raises(PermanentError) as missing:
        read_source(storage, JobUpload.of("u", spec))
    assert missing.value.reason == "SourceMissing"


def test_sizes_already_published_are_skipped(
    counting: CountingStorage, engine: ThumbnailEngine
) -> None:
    storage = counting
    spec = storage.stage(images.photo_jpeg(800, 600), sizes=("512x512",))
    publish(storage, engine, JobUpload.of("u", spec), log)
    storage.calls.clear()
    # A later spec asking for one more size only renders that size.
    wider = type(spec)(**{**spec.__dict__, "thumbnail_sizes": ("512x512", "128x128")})
    published = publish(storage, engine, JobUpload.of("u", wider), log)
    assert storage.puts == [thumbnail_key(spec.md5, "128x128")]
    assert [t["size"] for t in published["thumbnails"]] == ["512x512", "128x128"]


def test_webp_objects_are_published_next_to_jpeg(storage: DirectoryStorage) -> None:
    engine = ThumbnailEngine(ThumbnailSettings(webp=True), ImageLimits())
    _, spec = stage_upload(storage, images.photo_jpeg(800, 600), sizes=("256x256",))
    published = publish(storage, engine, JobUpload.of("u", spec), log)
    kinds = {(t["key"], t["contentType"]) for t in published["thumbnails"]}
    key = thumbnail_key(spec.md5, "256x256")
    assert kinds == {(key, "image/jpeg"), (key + ".webp", "image/webp")}
    assert storage.get(Area.PUBLIC, key + ".webp").info.content_type == "image/webp"


def _batch(storage: DirectoryStorage, engine: ThumbnailEngine, specs: dict[str, ImageUploadSpec]):  # type: ignore[no-untyped-def]
    return run_batch(
        Stage.THUMBNAIL,
        "ns",
        job_uploads(specs),
        storage=storage,
        work=lambda spec, upload_log: publish(storage, engine, spec, upload_log),
        job_name="pinster-thumb-abc",
    )


def test_broken_uploads_fail_alone_while_the_batch_succeeds(
    storage: DirectoryStorage, engine: ThumbnailEngine
) -> None:
    specs: dict[str, ImageUploadSpec] = {}
    cases = {
        "good": images.photo_jpeg(640, 480),
        "truncated": images.truncated_jpeg(),
        "lying": images.lying_png(),
        "bomb": images.png_bomb(),
        "also-good": images.palette_png(),
    }
    for index, (label, data) in enumerate(cases.items()):
        _, spec = stage_upload(storage, data, imageable_id=str(index))
        specs[label] = spec
    summary = _batch(storage, engine, specs)
    assert summary.exit_code == EXIT_OK
    assert sorted(summary.succeeded) == ["also-good", "good"]
    reasons = {}
    for label in cases:
        result = results.read(storage, "ns", label, Stage.THUMBNAIL)
        assert result is not None and result.job == "pinster-thumb-abc"
        reasons[label] = (result.outcome, result.reason)
    assert reasons == {
        "good": ("succeeded", ""),
        "also-good": ("succeeded", ""),
        "truncated": ("failed", "TruncatedImage"),
        "lying": ("failed", "CorruptImage"),
        "bomb": ("failed", "TooManyPixels"),
    }
    lying = results.read(storage, "ns", "lying", Stage.THUMBNAIL)
    assert lying is not None and "cannot be decoded" in lying.message
    # The same records again, as the Job's one bundle for the operator.
    bundle = results.read_bundle(storage, "ns", "pinster-thumb-abc")
    assert bundle is not None
    assert {r.upload: (r.outcome, r.reason) for r in bundle} == reasons
    assert bundle == [results.read(storage, "ns", label, Stage.THUMBNAIL) for label in cases]
    # A broken upload is never published and keeps its raw object for inspection.
    assert storage.head(Area.UPLOAD, specs["bomb"].key) is not None
    assert storage.head(Area.PUBLIC, specs["bomb"].md5) is None
    assert summary.message().startswith("thumbnail: 2 succeeded, 3 failed\n")


class FlakyStorage(DirectoryStorage):
    """The writes ``fails`` picks fail as an S3 outage would."""

    def __init__(self, root: Path, fails: Callable[[Area, str], bool]) -> None:
        super().__init__(root)
        self.fails = fails

    def put(self, area: Area, key: str, body: Any, **kwargs: Any) -> None:
        if self.fails(area, key):
            raise TemporaryError("s3 answered SlowDown", reason="StorageUnavailable")
        super().put(area, key, body, **kwargs)


def test_temporary_trouble_writes_nothing_and_asks_for_a_retry(
    tmp_path: Path, engine: ThumbnailEngine
) -> None:
    plain = DirectoryStorage(tmp_path / "s")
    _, ok = stage_upload(plain, images.photo_jpeg(320, 240), imageable_id="1")
    _, flaky = stage_upload(plain, images.photo_jpeg(330, 240, seed=2), imageable_id="2")
    specs = {"ok": ok, "flaky": flaky}
    # Public writes of one md5 fail.
    storage = FlakyStorage(
        tmp_path / "s", lambda area, key: area == Area.PUBLIC and key.startswith(flaky.md5)
    )
    summary = _batch(storage, engine, specs)
    assert summary.exit_code == EXIT_TEMPORARY
    assert summary.succeeded == ["ok"]
    assert results.read(storage, "ns", "flaky", Stage.THUMBNAIL) is None
    assert storage.head(Area.UPLOAD, flaky.key) is not None  # raw kept for the retry
    assert "retry flaky: StorageUnavailable" in summary.message()
    # This run wrote one record (none for the upload to retry): no bundle.
    assert results.read_bundle(storage, "ns", "pinster-thumb-abc") is None
    # The retry, once storage is back, finishes the job.
    assert _batch(plain, engine, specs).exit_code == EXIT_OK
    again = results.read(plain, "ns", "flaky", Stage.THUMBNAIL)
    assert again is not None and again.outcome == "succeeded"
    whole = results.read_bundle(plain, "ns", "pinster-thumb-abc")
    assert whole is not None and sorted(r.upload for r in whole) == ["flaky", "ok"]


def test_termination_message_stays_under_4_kib(
    storage: DirectoryStorage, engine: ThumbnailEngine
) -> None:
    specs: dict[str, ImageUploadSpec] = {}
    for index in range(200):
        _, spec = stage_upload(storage, images.lying_png(64, 48 + index), imageable_id=str(index))
        specs[f"upload-with-a-long-name-{index:04d}"] = spec
    message = _batch(storage, engine, specs).message()
    assert message.startswith("thumbnail: 0 succeeded, 200 failed")
    assert len(message.encode()) <= 4000


def test_a_bundle_not_written_leaves_the_records_and_the_exit_status(
    tmp_path: Path, engine: ThumbnailEngine
) -> None:
    storage = FlakyStorage(tmp_path / "s", lambda area, key: "/_jobs/" in key)
    specs = {
        name: stage_upload(storage, images.photo_jpeg(320, 240, seed=seed), imageable_id=name)[1]
        for seed, name in enumerate(["a", "b"], start=1)
    }
    summary = _batch(storage, engine, specs)
    assert summary.exit_code == EXIT_OK and summary.succeeded == ["a", "b"]
    assert results.read_bundle(storage, "ns", "pinster-thumb-abc") is None
    for name in specs:
        record = results.read(storage, "ns", name, Stage.THUMBNAIL)
        assert record is not None and record.outcome == "succeeded"
