"""The S3 backend against the devcluster's object store (MinIO) over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pinster_images.errors import ConfigError, TemporaryError
from pinster_images.storage import CACHE_CONTROL, Area, S3Storage, Storage, StorageSettings


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


def test_settings_that_cannot_work_are_refused_naming_the_setting(s3_env: dict[str, str]) -> None:
    wrong_secret = {**s3_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY") as refused:
        _open(wrong_secret).check()
    assert "SignatureDoesNotMatch" in str(refused.value)
    unknown_key = {**s3_env, "AWS_ACCESS_KEY_ID": "nobody"}
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        _open(unknown_key).check()
    no_bucket = {**s3_env, "PINSTER_S3_PUBLIC_BUCKET": "no-such-bucket-here"}
    with pytest.raises(ConfigError, match="PINSTER_S3_PUBLIC_BUCKET"):
        _open(no_bucket).check()
    _open(s3_env).check()  # the right ones pass


def test_a_store_that_does_not_answer_is_a_temporary_failure(s3_env: dict[str, str]) -> None:
    from tests.support.net import free_port

    nobody = {**s3_env, "PINSTER_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(TemporaryError) as down:
        _open(nobody).check()
    assert down.value.reason == "StorageUnavailable"


def test_the_upload_service_stops_at_start_on_wrong_credentials(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    from pinster_images import keys

    keys.generate_dir(tmp_path / "keys")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PINSTER_", "AWS_"))},
        **s3_env,
        "AWS_SECRET_ACCESS_KEY": "not-the-secret",
        "PINSTER_SERVICE_URL": "http://images.test",
        "PINSTER_API_URL": "http://api.test",
        "PINSTER_API_PUBLIC_KEY_FILE": str(tmp_path / "keys" / keys.API_PUBLIC),
        "PINSTER_NAMESPACE": "default",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pinster_images", "ingress", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "AWS_SECRET_ACCESS_KEY" in done.stdout + done.stderr


def _open(env: dict[str, str]) -> Storage:
    # boto3 reads credentials from the process environment: give these ones explicitly.
    import boto3

    settings = StorageSettings.from_env(env)
    client = boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    assert settings.upload_bucket and settings.public_bucket
    return S3Storage(
        settings.upload_bucket,
        settings.public_bucket,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        client=client,
    )


def test_a_conditional_put_keeps_what_is_there(s3_env: dict[str, str]) -> None:
    """``if_absent`` (If-None-Match: *, what the upload service stores raw bytes with):
    the first write wins, a second one changes nothing and says so."""
    storage = StorageSettings.from_env(s3_env).open()
    first = storage.put(
        Area.UPLOAD, "raw/same", b"first", content_type="image/png", metadata={"n": "1"},
        if_absent=True,
    )  # fmt: skip
    second = storage.put(
        Area.UPLOAD, "raw/same", b"second", content_type="image/jpeg", metadata={"n": "2"},
        if_absent=True,
    )  # fmt: skip
    assert (first, second) == (True, False)
    kept = storage.get(Area.UPLOAD, "raw/same")
    assert (kept.data, kept.info.content_type, kept.info.metadata) == (
        b"first",
        "image/png",
        {"n": "1"},
    )
    assert storage.put(Area.UPLOAD, "raw/same", b"third", content_type="image/png") is True
    assert storage.get(Area.UPLOAD, "raw/same").data == b"third"  # unconditional: replaced
