"""An in-process :class:`Storage` for unit tests: a directory of this machine.

Unit tests never start the devcluster, so they cannot reach its object store; this keeps
the interface's semantics (atomic writes, metadata, ``Cache-Control``, listing by prefix)
in files. Everything that meets S3 for real runs against MinIO (tests/support/s3.py).
``directory_settings`` gives settings that open one (for code handed its settings), and
``directory_storage_for_settings`` makes every ``StorageSettings.open()`` of a test return
one (for code that reads its settings from the environment: the CLIs).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pinster_images.errors import NotFoundError, PermanentError, TemporaryError
from pinster_images.storage import (
    CACHE_CONTROL,
    Area,
    Body,
    ObjectInfo,
    PresignedPost,
    Storage,
    StorageSettings,
    StoredObject,
)

#: Storage variables that satisfy ``StorageSettings.from_env`` in unit tests.
STORAGE_ENV = {"PINSTER_S3_UPLOAD_BUCKET": "uploads", "PINSTER_S3_PUBLIC_BUCKET": "public"}


class DirectoryStorage(Storage):
    """``<root>/<area>/<key>``, with content type and metadata in ``<root>/<area>.meta/<key>.json``."""

    def __init__(self, root: Path, public_url: str | None = None) -> None:
        self.root = root.resolve()
        self._public_url = (public_url or (self.root / Area.PUBLIC).as_uri()).rstrip("/")
        self.posted: list[dict[str, Any]] = []
        for area in Area:
            (self.root / area).mkdir(parents=True, exist_ok=True)

    def _path(self, area: Area, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/") or key.endswith("/"):
            raise PermanentError(f"invalid storage key {key!r}", reason="InvalidKey")
        return self.root / area / key

    def _meta_path(self, area: Area, key: str) -> Path:
        self._path(area, key)
        return self.root / f"{area}.meta" / f"{key}.json"

    def bucket(self, area: Area) -> str:
        return str(self.root / area)

    def head(self, area: Area, key: str) -> ObjectInfo | None:
        return self._info(area, key)

    def _info(self, area: Area, key: str) -> ObjectInfo | None:
        path = self._path(area, key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        try:
            meta = json.loads(self._meta_path(area, key).read_text())
        except FileNotFoundError:
            meta = {}
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            content_type=meta.get("content_type", "application/octet-stream"),
            cache_control=meta.get("cache_control"),
            metadata=meta.get("metadata", {}),
            modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def get(self, area: Area, key: str) -> StoredObject:
        info = self._info(area, key)
        if info is None:
            raise NotFoundError(f"{area}/{key} does not exist")
        return StoredObject(info=info, data=self._path(area, key).read_bytes())

    def stream(self, area: Area, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            handle = self._path(area, key).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"{area}/{key} does not exist") from None
        with handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def presigned_post(
        self,
        area: Area,
        key: str,
        *,
        content_type: str,
        content_md5: str,
        max_bytes: int,
        metadata: dict[str, str],
        expires_in: int,
    ) -> PresignedPost:
        """No signature (nothing checks one here): the form names what S3's would pin,
        and ``posted`` records each request so tests can read what was asked for."""
        fields = {
            "key": key,
            "Content-Type": content_type,
            "Content-MD5": content_md5,
            "Cache-Control": CACHE_CONTROL,
            **{f"x-amz-meta-{name}": value for name, value in metadata.items()},
        }
        self.posted.append({"max_bytes": max_bytes, "expires_in": expires_in, **fields})
        return PresignedPost(url=(self.root / area).as_uri(), fields=fields)

    @staticmethod
    def _atomic_write(path: Path, body: Body) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                if isinstance(body, bytes | bytearray | memoryview):
                    handle.write(body)
                else:
                    while chunk := body.read(1 << 20):
                        handle.write(chunk)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put(
        self,
        area: Area,
        key: str,
        body: Body,
        *,
        content_type: str,
        cache_control: str | None = CACHE_CONTROL,
        metadata: dict[str, str] | None = None,
        if_absent: bool = False,
    ) -> bool:
        if if_absent and self._path(area, key).exists():
            return False
        meta: dict[str, Any] = {"content_type": content_type, "metadata": metadata or {}}
        if cache_control is not None:
            meta["cache_control"] = cache_control
        # Metadata first: an object is only visible once its data file exists.
        self._atomic_write(self._meta_path(area, key), json.dumps(meta).encode())
        self._atomic_write(self._path(area, key), body)
        return True

    def delete(self, area: Area, key: str) -> None:
        for path in (self._path(area, key), self._meta_path(area, key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def list(self, area: Area, prefix: str = "") -> Iterator[str]:
        base = self.root / area
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key

    def public_url(self, key: str) -> str:
        return f"{self._public_url}/{key}"

    def check(self) -> None:
        for area in Area:
            if not os.access(self.root / area, os.W_OK):
                raise TemporaryError(f"storage directory {self.root / area} is not writable")


def directory_storage_for_settings(
    monkeypatch: pytest.MonkeyPatch, root: Path, public_url: str | None = None
) -> DirectoryStorage:
    """Make every ``StorageSettings.open()`` of this test give one DirectoryStorage."""
    storage = DirectoryStorage(root, public_url)
    monkeypatch.setattr(StorageSettings, "open", lambda self: storage)
    return storage


@dataclass(frozen=True)
class _DirectorySettings(StorageSettings):
    root: Path = Path()

    def open(self) -> Storage:
        return DirectoryStorage(self.root, self.public_url)


def directory_settings(root: Path, public_url: str | None = None) -> StorageSettings:
    """Storage settings whose ``open()`` gives a DirectoryStorage at ``root``."""
    return _DirectorySettings(
        endpoint_url=None,
        region=None,
        upload_bucket=STORAGE_ENV["PINSTER_S3_UPLOAD_BUCKET"],
        public_bucket=STORAGE_ENV["PINSTER_S3_PUBLIC_BUCKET"],
        public_url=public_url,
        root=root,
    )
