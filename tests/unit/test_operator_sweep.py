"""The orphan sweep against the in-process fakes: ``raw/`` objects no ImageUpload refers
to are adopted (upload metadata, checks passed), rejected (a check failed: deleted, with
a Warning Event), deleted (no metadata, after the grace) or left alone (young, or known);
result objects whose upload or Job is gone are deleted after the grace; and the settings
it reads."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from pinster_operator import Controller, OperatorSettings
from pinster_operator._settings import pass_through_env

from pinster_images import results
from pinster_images.adoption import REJECTED_EVENT_REASON, raw_metadata
from pinster_images.errors import ConfigError, TemporaryError
from pinster_images.fields import Fields
from pinster_images.resource import (
    DEFAULT_THUMBNAIL_SIZES,
    LABEL_COMPONENT,
    LABEL_MD5,
    ImageUploadSpec,
    Stage,
    Uploader,
    upload_name,
)
from pinster_images.sniff import ImageLimits
from pinster_images.storage import Area, raw_key
from tests.support.images import jpeg
from tests.support.operator_units import NS, FakeKube, env, settings
from tests.support.storage import DirectoryStorage

UPLOADER = Uploader(user_id="u-1", imageable_type="Pin", imageable_id="42")
HOUR = 3600.0
DAY = 86400.0


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def store(
    storage: DirectoryStorage,
    data: bytes,
    *,
    age: float,
    uploader: Uploader | None = UPLOADER,
    key: str | None = None,
) -> str:
    """Store ``data`` under ``raw/<md5>`` (or ``key``), with the metadata the upload
    service gives it (none without ``uploader``), last modified ``age`` seconds ago."""
    key = key or raw_key(md5_of(data))
    md5 = key.removeprefix("raw/")
    metadata = raw_metadata(uploader, Fields(name="A pin"), md5) if uploader else None
    storage.put(Area.UPLOAD, key, data, content_type="image/jpeg", metadata=metadata)
    return backdate(storage, key, age)


def backdate(storage: DirectoryStorage, key: str, age: float) -> str:
    """Make ``key`` of the upload area last modified ``age`` seconds ago."""
    stamp = time.time() - age
    os.utime(storage.root / Area.UPLOAD / key, (stamp, stamp))
    return key


def record(
    storage: DirectoryStorage,
    upload: str,
    *,
    age: float,
    namespace: str = NS,
    stage: Stage = Stage.MODERATION,
) -> str:
    """The result record a Job writes for ``upload``, ``age`` seconds old."""
    result = results.StageResult(namespace, upload, stage, job="pinster-mod-1", outcome="succeeded")
    results.write(storage, result)
    return backdate(storage, results.result_key(namespace, upload, stage), age)


def bundle(storage: DirectoryStorage, job: str, *, age: float, namespace: str = NS) -> str:
    """The bundle ``job`` writes, ``age`` seconds old."""
    written = [results.StageResult(namespace, "img-1", Stage.MODERATION, job, "succeeded")]
    results.write_bundle(storage, namespace, job, written)
    return backdate(storage, results.bundle_key(namespace, job), age)


def job(name: str) -> dict[str, Any]:
    """One of our Jobs as its watch shows it."""
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"app.kubernetes.io/part-of": "pinster-images"},
        },
        "status": {"active": 1},
    }


def controller(kube: FakeKube, storage: DirectoryStorage, **env_: str) -> Controller:
    return Controller(settings(**env_), kube, storage)  # type: ignore[arg-type]


def name_of(key: str) -> str:
    return upload_name(key.removeprefix("raw/"), UPLOADER.imageable_type, UPLOADER.imageable_id)


def test_a_valid_object_becomes_its_upload_once(tmp_path: Path) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    data = jpeg(64, 48)
    key = store(storage, data, age=HOUR)
    c = controller(kube, storage, PINSTER_THUMBNAIL_SIZES="400x300,100xauto")

    summary = c.sweep_orphans()

    name = name_of(key)
    assert (summary.adopted, summary.rejected, summary.deleted, summary.failed) == (
        [key],
        [],
        [],
        [],
    )
    created = kube.uploads[name]
    assert created["metadata"]["namespace"] == NS
    assert created["metadata"]["labels"][LABEL_COMPONENT] == "adopted"
    assert created["metadata"]["labels"][LABEL_MD5] == md5_of(data)
    assert ImageUploadSpec.from_dict(created["spec"]) == ImageUploadSpec(
        md5=md5_of(data),
        bucket=storage.bucket(Area.UPLOAD),
        key=key,
        content_type="image/jpeg",
        byte_size=len(data),
        width=64,
        height=48,
        uploader=UPLOADER,
        thumbnail_sizes=("400x300", "100xauto"),
        name="A pin",
    )
    assert storage.exists(Area.UPLOAD, key)  # the upload's own pipeline takes it from here

    # The next sweep knows the upload from the index, before its watch event arrives.
    assert c.sweep_orphans().adopted == []
    c.observe("ADDED", kube.uploads[name])
    assert c.sweep_orphans().adopted == []
    assert kube.creates == [name]

    # A fresh index (a restart before the event) asks the API server, which has it.
    again = controller(kube, storage)
    lists = kube.md5_lists
    assert again.sweep_orphans().adopted == []
    assert kube.md5_lists == lists + 1
    assert kube.creates == [name]
    assert list(kube.uploads) == [name]


def test_bytes_that_are_not_the_keys_md5_are_deleted_and_reported(tmp_path: Path) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    key = store(storage, jpeg(64, 48), age=HOUR, key=raw_key(md5_of(b"other bytes")))

    summary = controller(kube, storage).sweep_orphans()

    assert summary.rejected == [key]
    assert summary.adopted == summary.deleted == summary.failed == []
    assert not storage.exists(Area.UPLOAD, key)
    ((about, type_, reason, message),) = kube.events
    assert (about, type_, reason) == (name_of(key), "Warning", REJECTED_EVENT_REASON)
    assert message.startswith("Md5Mismatch: ") and message.endswith(f"{key} deleted")
    assert kube.uploads == {}
    assert kube.creates == []


def test_an_object_without_metadata_is_deleted_only_after_the_grace(tmp_path: Path) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    within = store(storage, jpeg(64, 48), age=2 * HOUR, uploader=None)
    beyond = store(storage, jpeg(65, 48), age=2 * DAY, uploader=None)

    summary = controller(kube, storage).sweep_orphans()

    assert summary.deleted == [beyond]
    assert summary.adopted == summary.rejected == summary.failed == []
    assert not storage.exists(Area.UPLOAD, beyond)
    assert storage.exists(Area.UPLOAD, within)
    assert kube.events == []


def test_young_objects_are_left_alone(tmp_path: Path) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    valid = store(storage, jpeg(64, 48), age=60)
    mismatched = store(storage, jpeg(65, 48), age=60, key=raw_key(md5_of(b"other")))
    bare = store(storage, jpeg(66, 48), age=60, uploader=None)

    summary = controller(kube, storage, PINSTER_ORPHAN_GRACE="30").sweep_orphans()

    assert summary.adopted == summary.rejected == summary.deleted == summary.failed == []
    assert all(storage.exists(Area.UPLOAD, key) for key in (valid, mismatched, bare))
    assert kube.creates == []
    assert kube.events == []


def test_an_object_whose_md5_has_an_upload_is_left_alone(tmp_path: Path) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    data = jpeg(64, 48)
    key = store(storage, data, age=2 * DAY, uploader=None)
    kube.add_upload("img-kept", md5_of(data))
    c = controller(kube, storage)
    c.observe(None, kube.uploads["img-kept"])  # as kopf lists it at start
    gets = kube.gets

    summary = c.sweep_orphans()

    assert summary.adopted == summary.rejected == summary.deleted == summary.failed == []
    assert storage.exists(Area.UPLOAD, key)
    assert (kube.gets, kube.md5_lists) == (gets, 0)  # answered from the index
    assert kube.creates == []

    # Once the upload is gone, its bytes are an orphan like any other (asked once).
    c.observe("DELETED", kube.uploads.pop("img-kept"))
    assert c.sweep_orphans().deleted == [key]
    assert kube.md5_lists == 1


def test_an_index_behind_the_api_server_adopts_and_deletes_nothing(tmp_path: Path) -> None:
    """The first sweep may come before the first listing is done (a short interval, many
    uploads): objects whose upload the API server has are not orphans, whatever the
    index says, and nothing of theirs is deleted or adopted again."""
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    bare, valid = jpeg(64, 48), jpeg(65, 48)
    kept = [
        store(storage, bare, age=2 * DAY, uploader=None),
        store(storage, valid, age=HOUR),
        record(storage, "img-listed-later", age=2 * DAY),
        bundle(storage, "pinster-mod-running", age=2 * DAY),
    ]
    kube.add_upload("img-bare", md5_of(bare))
    kube.add_upload("img-valid", md5_of(valid))
    kube.add_upload("img-listed-later", md5_of(b"listed later"))
    kube.jobs["pinster-mod-running"] = job("pinster-mod-running")
    c = controller(kube, storage)  # its index has seen none of them yet
    c_without_adoption = controller(kube, storage, PINSTER_ADOPT_AFTER="0")

    for sweep in (c.sweep_orphans, c_without_adoption.sweep_orphans):
        summary = sweep()
        assert summary.adopted == summary.rejected == summary.deleted == summary.failed == []
        assert summary.listed == 4
    assert all(storage.exists(Area.UPLOAD, key) for key in kept)
    assert kube.creates == []
    assert kube.events == []

    # Gone from the API server too: now they are orphans.
    kube.uploads.clear()
    kube.jobs.clear()
    summary = c.sweep_orphans()
    assert summary.adopted == [kept[1]]
    assert sorted(summary.deleted) == sorted([kept[0], *kept[2:]])


def test_without_adoption_every_old_orphan_is_deleted(tmp_path: Path) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    old = store(storage, jpeg(64, 48), age=2 * DAY)
    recent = store(storage, jpeg(65, 48), age=2 * HOUR)

    summary = controller(kube, storage, PINSTER_ADOPT_AFTER="0").sweep_orphans()

    assert summary.deleted == [old]
    assert summary.adopted == summary.rejected == []
    assert storage.exists(Area.UPLOAD, recent)
    assert kube.creates == []


def test_result_objects_nobody_will_read_are_deleted_after_the_grace(tmp_path: Path) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    kube.add_upload("img-live", md5_of(b"live"))
    c = controller(kube, storage)
    c.observe(None, kube.uploads["img-live"])  # as kopf lists them at start
    c.job_event(None, job("pinster-mod-live"))
    live_record = record(storage, "img-live", age=2 * DAY)
    live_bundle = bundle(storage, "pinster-mod-live", age=2 * DAY)
    young = [
        record(storage, "img-gone-lately", age=2 * HOUR),
        bundle(storage, "pinster-mod-gone-lately", age=2 * HOUR),
    ]
    storage.put(Area.UPLOAD, f"results/{NS}/notes.json", b"{}", content_type="application/json")
    odd = backdate(storage, f"results/{NS}/notes.json", 2 * DAY)  # no record's shape
    orphans = [
        record(storage, "img-gone", age=2 * DAY),
        record(storage, "img-gone", age=2 * DAY, stage=Stage.THUMBNAIL),
        bundle(storage, "pinster-mod-gone", age=2 * DAY),
    ]
    gets = kube.gets

    summary = c.sweep_orphans()

    assert sorted(summary.deleted) == sorted(orphans)
    assert summary.adopted == summary.rejected == summary.failed == []
    assert not any(storage.exists(Area.UPLOAD, key) for key in orphans)
    kept = [live_record, live_bundle, *young, odd]
    assert all(storage.exists(Area.UPLOAD, key) for key in kept)
    # The live ones answered from the watches; each orphan's owner asked of the API server.
    assert kube.gets == gets + 2

    # Once the upload and the Job are gone, what they left is swept too.
    c.observe("DELETED", kube.uploads.pop("img-live"))
    c.job_event("DELETED", job("pinster-mod-live"))
    assert sorted(c.sweep_orphans().deleted) == sorted([live_record, live_bundle])
    assert all(storage.exists(Area.UPLOAD, key) for key in [*young, odd])


def test_result_objects_of_namespaces_not_watched_or_without_a_grace_stay(
    tmp_path: Path,
) -> None:
    kube, storage = FakeKube(), DirectoryStorage(tmp_path)
    elsewhere = [
        record(storage, "img-1", age=2 * DAY, namespace="other"),
        bundle(storage, "pinster-mod-1", age=2 * DAY, namespace="other"),
    ]
    ours = record(storage, "img-1", age=2 * DAY)

    assert controller(kube, storage, PINSTER_ORPHAN_GRACE="0").sweep_orphans().deleted == []
    assert all(storage.exists(Area.UPLOAD, key) for key in [*elsewhere, ours])

    watching_ours = controller(kube, storage, PINSTER_WATCH_NAMESPACES=NS)
    assert watching_ours.sweep_orphans().deleted == [ours]
    assert all(storage.exists(Area.UPLOAD, key) for key in elsewhere)

    # An operator of every namespace answers for them all.
    assert sorted(controller(kube, storage).sweep_orphans().deleted) == sorted(elsewhere)


class _VanishingStorage(DirectoryStorage):
    """Every object is deleted (by someone else) between its HEAD and its read."""

    def stream(self, area: Area, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        self.delete(area, key)
        return super().stream(area, key, chunk_size)


def test_an_object_gone_during_the_sweep_is_nothing(tmp_path: Path) -> None:
    kube, storage = FakeKube(), _VanishingStorage(tmp_path)
    store(storage, jpeg(64, 48), age=HOUR)

    summary = controller(kube, storage).sweep_orphans()

    assert summary.adopted == summary.rejected == summary.deleted == summary.failed == []
    assert kube.creates == []
    assert kube.events == []


class _FlakyStorage(DirectoryStorage):
    """The object store fails on the keys in ``failing``."""

    failing: set[str]

    def head(self, area: Area, key: str) -> Any:
        if key in self.failing:
            raise TemporaryError("the object store is unreachable", reason="StorageUnavailable")
        return super().head(area, key)


class _FlakyKube(FakeKube):
    """The API server answers 503 to creating the uploads in ``failing``."""

    failing: set[str]

    def create_upload(self, obj: dict[str, Any]) -> bool:
        if obj["metadata"]["name"] in self.failing:
            raise ApiException(status=503, reason="Service Unavailable")
        return super().create_upload(obj)


def test_a_failure_on_one_object_does_not_stop_the_others(tmp_path: Path) -> None:
    kube, storage = _FlakyKube(), _FlakyStorage(tmp_path)
    storage_down = store(storage, jpeg(64, 48), age=HOUR)
    api_down = store(storage, jpeg(65, 48), age=HOUR)
    fine = store(storage, jpeg(66, 48), age=HOUR)
    record_down = record(storage, "img-gone", age=2 * DAY)
    record_fine = record(storage, "img-gone-too", age=2 * DAY)
    storage.failing, kube.failing = {storage_down, record_down}, {name_of(api_down)}
    c = controller(kube, storage)

    summary = c.sweep_orphans()

    assert sorted(summary.failed) == sorted([storage_down, api_down, record_down])
    assert summary.adopted == [fine]
    assert summary.deleted == [record_fine]
    left = (storage_down, api_down, record_down)
    assert all((storage.root / Area.UPLOAD / key).exists() for key in left)

    # The next sweep tries them again.
    storage.failing, kube.failing = set(), set()
    summary = c.sweep_orphans()
    assert sorted(summary.adopted) == sorted([storage_down, api_down])
    assert summary.deleted == [record_down]
    assert set(kube.uploads) == {name_of(k) for k in (storage_down, api_down, fine)}


# -- settings ---------------------------------------------------------------------------


def test_adoption_settings_and_their_defaults() -> None:
    adoption = settings().adoption
    assert adoption is not None
    assert (adoption.namespace, adoption.after) == (NS, 600.0)
    assert adoption.limits == ImageLimits()
    assert adoption.thumbnail_sizes == DEFAULT_THUMBNAIL_SIZES
    tuned = settings(
        PINSTER_ADOPT_AFTER="120", PINSTER_MAX_BYTES="1000", PINSTER_THUMBNAIL_SIZES="64x64"
    ).adoption
    assert tuned is not None
    assert (tuned.after, tuned.limits.max_bytes, tuned.thumbnail_sizes) == (120, 1000, ("64x64",))
    assert settings(PINSTER_ADOPT_AFTER="0").adoption is None


def test_the_adoption_namespace_defaults_to_the_pods_then_the_first_watched() -> None:
    base = {k: v for k, v in env().items() if k != "PINSTER_UPLOAD_NAMESPACE"}

    def namespace(**overrides: str) -> str | None:
        adoption = OperatorSettings.from_env({**base, **overrides}).adoption
        return adoption.namespace if adoption else None

    assert (
        namespace(PINSTER_POD_NAMESPACE="pinster", PINSTER_WATCH_NAMESPACES="a,pinster")
        == "pinster"
    )
    assert namespace(PINSTER_POD_NAMESPACE="pinster") == "pinster"
    assert namespace(PINSTER_WATCH_NAMESPACES="a,b") == "a"
    # Adopted where the operator does not watch, an upload would never be reconciled.
    with pytest.raises(ConfigError, match="not among PINSTER_WATCH_NAMESPACES"):
        namespace(PINSTER_POD_NAMESPACE="pinster", PINSTER_WATCH_NAMESPACES="a,b")
    assert namespace(PINSTER_UPLOAD_NAMESPACE="up", PINSTER_POD_NAMESPACE="pinster") == "up"
    with pytest.raises(ConfigError, match="PINSTER_UPLOAD_NAMESPACE"):
        OperatorSettings.from_env(base)
    assert namespace(PINSTER_ADOPT_AFTER="0") is None  # nothing to know without adoption


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PINSTER_ADOPT_AFTER", "soon"),
        ("PINSTER_ADOPT_AFTER", "-1"),
        ("PINSTER_THUMBNAIL_SIZES", "64x64,0x10"),
        ("PINSTER_MAX_BYTES", "0"),
    ],
)
def test_adoption_settings_errors_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        settings(**{variable: value})


def test_adoption_settings_stay_out_of_the_job_pods() -> None:
    passed = dict(pass_through_env(env(PINSTER_ADOPT_AFTER="60")))
    assert "PINSTER_ADOPT_AFTER" not in passed
    assert "PINSTER_UPLOAD_NAMESPACE" not in passed
    assert "PINSTER_S3_UPLOAD_BUCKET" in passed  # the shared settings still go
