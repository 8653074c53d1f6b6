"""The S3 backend against the devcluster's object store (MinIO) over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pinster_images.storage import CACHE_CONTROL, Area, StorageSettings


def test_head_reports_what_was_written_and_when(s3_env: dict[str, str]) -> None:
    storage = StorageSettings.from_env(s3_env).open()
    before = datetime.now(UTC) - timedelta(seconds=5)  # S3 times have 1 s resolution
    storage.put(Area.UPLOAD, "raw/abc", b"bytes", content_type="image/png", metadata={"a": "b"})

    info = storage.head(Area.UPLOAD, "raw/abc")
    assert info is not None
    assert (info.size, info.content_type, info.cache_control) == (5, "image/png", CACHE_CONTROL)
    assert info.metadata == {"a": "b"}
    assert info.modified is not None and before <= info.modified <= datetime.now(UTC)
    assert list(storage.list(Area.UPLOAD, "raw/")) == ["raw/abc"]
    storage.delete(Area.UPLOAD, "raw/abc")
    assert storage.head(Area.UPLOAD, "raw/abc") is None
