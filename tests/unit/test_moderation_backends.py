"""Moderation backends: rekognition against its wire-format stand-in, nudenet on real
inference, none; and their settings."""

from __future__ import annotations

import io
import logging

import boto3
import pytest
from botocore.config import Config
from PIL import Image
from pinster_jobs import ApproveAll, ModerationSettings, build_moderator
from pinster_jobs._moderation_rekognition import MAX_BYTES, RekognitionModerator, prepare

from pinster_images.errors import ConfigError, PermanentError, TemporaryError
from pinster_images.sniff import ImageLimits, sniff
from tests.support import images
from tests.support.rekognition import MODEL_VERSION, RekognitionStandIn

LIMITS = ImageLimits()


def settings_for(stand_in: RekognitionStandIn, **extra: str) -> ModerationSettings:
    return ModerationSettings.from_env({**stand_in.env, **extra})


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def judge(moderator: object, data: bytes):  # type: ignore[no-untyped-def]
    return moderator.moderate(data, sniff(data, LIMITS))  # type: ignore[attr-defined]


@pytest.mark.usefixtures("credentials")
def test_rekognition_approves(rekognition: RekognitionStandIn) -> None:
    rekognition.approve()
    moderator = build_moderator(settings_for(rekognition))
    data = images.photo_jpeg(640, 480)
    verdict = judge(moderator, data)
    assert verdict.decision == "Approved" and verdict.backend == "rekognition"
    assert verdict.model_version == MODEL_VERSION and verdict.threshold == 99.0
    (request,) = rekognition.requests
    assert request.image == data  # a JPEG under 5 MiB goes as it is
    assert request.min_confidence == 99.0 and request.authorized


@pytest.mark.usefixtures("credentials")
def test_rekognition_rejects_and_records_labels(rekognition: RekognitionStandIn) -> None:
    rekognition.reject()
    moderator = build_moderator(settings_for(rekognition))
    verdict = judge(moderator, images.photo_jpeg(320, 240))
    assert verdict.decision == "Rejected"
    assert verdict.to_dict()["labels"] == [
        {"name": "Explicit Nudity", "parentName": "", "confidence": 99.7, "taxonomyLevel": 1},
        {
            "name": "Graphic Female Nudity",
            "parentName": "Explicit Nudity",
            "confidence": 99.4,
            "taxonomyLevel": 2,
        },
    ]


@pytest.mark.usefixtures("credentials")
def test_rekognition_threshold_is_configurable(rekognition: RekognitionStandIn) -> None:
    rekognition.reject([{"Name": "Suggestive", "Confidence": 80.0, "TaxonomyLevel": 1}])
    strict = build_moderator(settings_for(rekognition))
    assert judge(strict, images.jpeg()).decision == "Approved"  # 80 < 99
    loose = build_moderator(settings_for(rekognition, PINSTER_MODERATION_MIN_CONFIDENCE="75"))
    verdict = judge(loose, images.jpeg())
    assert verdict.decision == "Rejected" and verdict.threshold == 75.0
    assert rekognition.requests[-1].min_confidence == 75.0


@pytest.mark.usefixtures("credentials")
def test_rekognition_throttling_then_success(rekognition: RekognitionStandIn) -> None:
    rekognition.reject()
    rekognition.throttle(2)
    verdict = judge(build_moderator(settings_for(rekognition)), images.jpeg())
    assert verdict.decision == "Rejected"
    assert len(rekognition.requests) == 3  # two throttled, one answered


@pytest.mark.usefixtures("credentials")
def test_rekognition_throttling_past_retries_is_temporary(
    rekognition: RekognitionStandIn,
) -> None:
    rekognition.throttle(100)
    client = boto3.client(
        "rekognition",
        endpoint_url=rekognition.endpoint_url,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )
    moderator = RekognitionModerator(settings_for(rekognition), client=client)
    with pytest.raises(TemporaryError) as caught:
        judge(moderator, images.jpeg())
    assert caught.value.reason == "ModerationUnavailable"
    assert "ThrottlingException" in caught.value.message
    assert len(rekognition.requests) == 2


@pytest.mark.usefixtures("credentials")
def test_rekognition_gets_jpeg_for_other_formats(rekognition: RekognitionStandIn) -> None:
    rekognition.approve()
    moderator = build_moderator(settings_for(rekognition))
    for data in (images.save(images.photo(600, 400), "WEBP"), images.animated_gif()):
        assert judge(moderator, data).decision == "Approved"
        sent = rekognition.requests[-1].image
        assert sent.startswith(b"\xff\xd8\xff")
        assert Image.open(io.BytesIO(sent)).format == "JPEG"


def test_rekognition_payload_is_shrunk_under_5_mib() -> None:
    data = images.noisy_jpeg(6 * 1024 * 1024)
    assert len(data) > MAX_BYTES
    sent = prepare(data, sniff(data, LIMITS))
    assert len(sent) <= MAX_BYTES
    assert max(Image.open(io.BytesIO(sent)).size) <= 2048


def test_rekognition_refusal_of_the_image_is_permanent(
    rekognition: RekognitionStandIn, credentials: None
) -> None:
    moderator = build_moderator(settings_for(rekognition))
    # Bypass the conversion to see how a service-side refusal is classified.
    moderator._client.meta.events.register(  # type: ignore[attr-defined]
        "before-parameter-build.rekognition.DetectModerationLabels",
        lambda params, **_: params["Image"].update(Bytes=b"not an image"),
    )
    with pytest.raises(PermanentError) as caught:
        judge(moderator, images.jpeg())
    assert caught.value.reason == "UnsupportedImage"


def test_rekognition_unreachable_is_temporary(credentials: None) -> None:
    from tests.support.net import free_port

    settings = ModerationSettings.from_env(
        {
            "PINSTER_MODERATION_BACKEND": "rekognition",
            "PINSTER_REKOGNITION_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "PINSTER_REKOGNITION_REGION": "us-east-1",
        }
    )
    client = boto3.client(
        "rekognition",
        endpoint_url=settings.rekognition_endpoint_url,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    with pytest.raises(TemporaryError) as caught:
        judge(RekognitionModerator(settings, client=client), images.jpeg())
    assert caught.value.reason == "ModerationUnavailable"


def test_none_approves_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        moderator = build_moderator(ModerationSettings.from_env({}))
    assert isinstance(moderator, ApproveAll)
    assert "WITHOUT MODERATION" in caplog.text
    verdict = judge(moderator, images.jpeg())
    assert verdict.to_dict()["decision"] == "Approved"
    assert verdict.to_dict()["backend"] == "none"


def test_nudenet_approves_benign_images() -> None:
    moderator = build_moderator(
        ModerationSettings.from_env({"PINSTER_MODERATION_BACKEND": "nudenet"})
    )
    for data in (
        images.photo_jpeg(1200, 900),
        images.palette_png(),
        images.oriented_jpeg(6),
        images.save(images.photo(800, 600, seed=9), "WEBP"),
    ):
        verdict = judge(moderator, data)
        assert verdict.decision == "Approved", verdict
        assert verdict.backend == "nudenet" and verdict.model_version.startswith("nudenet-3.4")
    # The detector really ran: it returns a list (possibly empty) of class/score dicts.
    found = moderator.detections(
        images.photo_jpeg(320, 320), sniff(images.photo_jpeg(320, 320), LIMITS)
    )  # type: ignore[attr-defined]
    assert isinstance(found, list)


def test_nudenet_rejects_when_a_threshold_is_met() -> None:
    """Thresholds decide: with a class the detector does find at score >= 0, reject."""
    settings = ModerationSettings.from_env(
        {"PINSTER_MODERATION_BACKEND": "nudenet", "PINSTER_NUDENET_THRESHOLDS": "FACE_FEMALE=0"}
    )
    moderator = build_moderator(settings)
    fake = [{"class": "FACE_FEMALE", "score": 0.31, "box": [0, 0, 1, 1]}]
    moderator.detections = lambda data, info: fake  # type: ignore[attr-defined,method-assign]
    verdict = judge(moderator, images.jpeg())
    assert verdict.decision == "Rejected"
    assert verdict.to_dict()["labels"] == [
        {"name": "FACE_FEMALE", "parentName": "", "confidence": 31.0}
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PINSTER_MODERATION_BACKEND": "magic"}, "PINSTER_MODERATION_BACKEND"),
        ({"PINSTER_MODERATION_MIN_CONFIDENCE": "lots"}, "PINSTER_MODERATION_MIN_CONFIDENCE"),
        ({"PINSTER_NUDENET_THRESHOLDS": "FACE_FEMALE"}, "PINSTER_NUDENET_THRESHOLDS"),
        ({"PINSTER_NUDENET_THRESHOLDS": "FACE_FEMALE=2"}, "PINSTER_NUDENET_THRESHOLDS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ModerationSettings.from_env(env)
    assert message in str(caught.value)


def test_thresholds_parse() -> None:
    settings = ModerationSettings.from_env(
        {"PINSTER_NUDENET_THRESHOLDS": "female_breast_exposed=0.7, ANUS_EXPOSED=0.4"}
    )
    assert settings.nudenet_thresholds == {"FEMALE_BREAST_EXPOSED": 0.7, "ANUS_EXPOSED": 0.4}
