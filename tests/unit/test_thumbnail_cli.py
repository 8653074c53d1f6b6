"""``pinster-images job moderate|thumbnail`` in-process, its uploads described in
``PINSTER_UPLOADS`` as the operator's Jobs do (the integration suite runs it as a
process and as a Job on the devcluster's node)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pinster_jobs import cli

from pinster_images import results
from pinster_images.resource import JOB_UPLOADS_ENV, ImageUploadSpec, Stage, encode_job_uploads
from pinster_images.storage import Area
from tests.support import images
from tests.support.jobs import job_uploads, stage_upload
from tests.support.rekognition import RekognitionStandIn
from tests.support.storage import STORAGE_ENV, DirectoryStorage, directory_storage_for_settings


@pytest.fixture(autouse=True)
def keep_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(__import__("os").environ):
        if name.startswith("PINSTER_"):
            monkeypatch.delenv(name)
    for name, value in STORAGE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PINSTER_PUBLIC_URL", "https://img.example.test")
    directory_storage_for_settings(monkeypatch, tmp_path / "store", "https://img.example.test")
    monkeypatch.setenv("PINSTER_LOG_FORMAT", "text")
    monkeypatch.setenv("TERMINATION_MESSAGE_PATH", str(tmp_path / "termination-log"))
    monkeypatch.setenv("HOSTNAME", "pinster-thumb-0123456789ab-x7k2q")
    return tmp_path


def describe(monkeypatch: pytest.MonkeyPatch, **specs: ImageUploadSpec) -> None:
    """Give the job its uploads as the operator's Job does."""
    monkeypatch.setenv(JOB_UPLOADS_ENV, encode_job_uploads(job_uploads(specs)))


def test_thumbnail_job_end_to_end(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = DirectoryStorage(env / "store")
    _, good = stage_upload(storage, images.photo_jpeg(900, 600), imageable_id="1")
    _, bomb = stage_upload(storage, images.jpeg_bomb(), imageable_id="2")
    describe(monkeypatch, good=good, bomb=bomb)
    code = cli.main(["thumbnail", "--namespace", "team", "good", "bomb"])
    assert code == 0
    result = results.read(storage, "team", "good", Stage.THUMBNAIL)
    assert result is not None and result.outcome == "succeeded"
    assert result.uid == "uid-good"  # as PINSTER_UPLOADS said
    assert result.job == "pinster-thumb-0123456789ab"  # derived from the pod name
    assert result.data["thumbnails"][0]["url"].startswith("https://img.example.test/")
    failed = results.read(storage, "team", "bomb", Stage.THUMBNAIL)
    assert failed is not None and failed.outcome == "failed"
    assert failed.reason == "TooManyPixels" and "PINSTER_MAX_PIXELS" in failed.message
    assert (env / "termination-log").read_text().startswith("thumbnail: 1 succeeded, 1 failed")


def test_moderation_job_with_rekognition(
    env: Path, rekognition: RekognitionStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in rekognition.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("PINSTER_JOB_NAME", "pinster-mod-explicit")
    rekognition.reject()
    storage = DirectoryStorage(env / "store")
    _, spec = stage_upload(storage, images.photo_jpeg(300, 200))
    describe(monkeypatch, one=spec)
    assert cli.main(["moderate", "-n", "team", "one"]) == 0
    result = results.read(storage, "team", "one", Stage.MODERATION)
    assert result is not None and result.job == "pinster-mod-explicit"
    assert result.data["decision"] == "Rejected" and result.data["backend"] == "rekognition"
    assert result.data["labels"][0]["name"] == "Explicit Nudity"
    # Moderation never publishes nor removes anything.
    assert storage.head(Area.UPLOAD, spec.key) is not None
    assert list(storage.list(Area.PUBLIC)) == []


def test_moderation_outage_exits_75_and_writes_no_result(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.net import free_port

    monkeypatch.setenv("PINSTER_MODERATION_BACKEND", "rekognition")
    monkeypatch.setenv("PINSTER_REKOGNITION_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("PINSTER_REKOGNITION_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    storage = DirectoryStorage(env / "store")
    _, spec = stage_upload(storage, images.jpeg())
    describe(monkeypatch, one=spec)
    assert cli.main(["moderate", "-n", "team", "one"]) == 75
    assert results.read(storage, "team", "one", Stage.MODERATION) is None
    message = (env / "termination-log").read_text()
    assert "retry one: ModerationUnavailable" in message


def test_configuration_error_exits_78_with_the_variable_named(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PINSTER_THUMBNAIL_QUALITY", "101")
    assert cli.main(["thumbnail", "-n", "team", "x"]) == 78
    assert "PINSTER_THUMBNAIL_QUALITY" in (env / "termination-log").read_text()


@pytest.mark.parametrize(
    ("uploads", "said"),
    [
        (None, "PINSTER_UPLOADS is not set"),
        ("[1, 2]", "PINSTER_UPLOADS: not a list of uploads by name (not a JSON object)"),
        (
            '{"x": {"uid": "u"}}',
            "PINSTER_UPLOADS: not a list of uploads by name (missing field 'md5')",
        ),
        ("{", "PINSTER_UPLOADS: not a list of uploads by name"),
        ("{}", "PINSTER_UPLOADS does not describe x"),
    ],
)
def test_uploads_missing_or_malformed_exit_78_saying_so(
    env: Path, monkeypatch: pytest.MonkeyPatch, uploads: str | None, said: str
) -> None:
    if uploads is not None:
        monkeypatch.setenv(JOB_UPLOADS_ENV, uploads)
    assert cli.main(["thumbnail", "-n", "team", "x"]) == 78
    assert said in (env / "termination-log").read_text()


def test_without_a_namespace_exits_78(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, spec = stage_upload(DirectoryStorage(env / "store"), images.jpeg())
    describe(monkeypatch, x=spec)
    assert cli.main(["thumbnail", "x"]) == 78
    assert "--namespace or set PINSTER_NAMESPACE" in (env / "termination-log").read_text()


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["resize", "x"])
    assert caught.value.code == 2


def test_public_surface_is_pinned() -> None:
    import pinster_jobs

    assert sorted(pinster_jobs.__all__) == sorted(
        [
            "EXIT_OK",
            "EXIT_TEMPORARY",
            "WEBP_SUFFIX",
            "ApproveAll",
            "Geometry",
            "JobSettings",
            "Label",
            "ModerationSettings",
            "Moderator",
            "Rendition",
            "Source",
            "Summary",
            "ThumbnailEngine",
            "ThumbnailSettings",
            "Verdict",
            "build_moderator",
            "exif_orientation",
            "fit",
            "publish",
            "read_source",
            "run_batch",
            "strip_location",
        ]
    )
    assert all(hasattr(pinster_jobs, name) for name in pinster_jobs.__all__)


def test_job_is_a_subcommand_of_the_one_cli(env: Path) -> None:
    from pinster_images.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["job", "--help"])
    assert caught.value.code == 0
