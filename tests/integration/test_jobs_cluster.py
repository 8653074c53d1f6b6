"""``pinster-images job`` as a process: ImageUploads on the devcluster's API server,
described to the job as the operator describes them (``PINSTER_UPLOADS``), bytes in its
object store over HTTP, moderation against the Rekognition stand-in; and as the
operator's Job manifest of the product's image on the node (no token, no volume)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pinster_images import resource, results
from pinster_images.resource import (
    JOB_UPLOADS_ENV,
    ImageUploadSpec,
    JobUpload,
    Stage,
    encode_job_uploads,
)
from pinster_images.sniff import ImageLimits, ImageRejected, sniff
from pinster_images.storage import CACHE_CONTROL, Area, Storage, StorageSettings
from tests.support import images
from tests.support.jobs import stage_upload
from tests.support.rekognition import RekognitionStandIn
from tests.support.s3 import S3Server

pytestmark = pytest.mark.cluster


@dataclass
class JobRig:
    namespace: str
    env: dict[str, str]
    storage: Storage
    s3: Any  # boto3 client
    public_bucket: str
    kube: Any
    tmp: Path
    #: What the operator would tell a Job of each upload created here.
    described: dict[str, JobUpload] = field(default_factory=dict)

    def upload(self, data: bytes, imageable_id: str) -> tuple[str, ImageUploadSpec]:
        """Stage the raw bytes and create the ImageUpload, as the upload service does."""
        from kubernetes import client

        try:  # the declared size, as the upload service's sniffing found it
            info = sniff(data, ImageLimits(max_pixels=10**12))
            width, height = info.width, info.height
        except ImageRejected:
            width, height = 640, 480
        name, spec = stage_upload(
            self.storage,
            data,
            sizes=("1024x1024", "256x256", "100xauto"),
            imageable_id=imageable_id,
            width=width,
            height=height,
        )
        created = client.CustomObjectsApi(self.kube).create_namespaced_custom_object(
            resource.GROUP,
            resource.VERSION,
            self.namespace,
            resource.PLURAL,
            resource.manifest(name, self.namespace, spec),
        )
        self.described[name] = JobUpload.of(created["metadata"]["uid"], spec)
        return name, spec

    def uploads_env(self, *names: str) -> dict[str, str]:
        told = {name: self.described[name] for name in names}
        return {JOB_UPLOADS_ENV: encode_job_uploads(told)}

    def job(self, stage: str, *names: str, extra: dict[str, str] | None = None) -> tuple[int, str]:
        termination = self.tmp / f"termination-{stage}"
        env = {
            **self.env,
            **self.uploads_env(*names),
            **(extra or {}),
            "TERMINATION_MESSAGE_PATH": str(termination),
        }
        done = subprocess.run(
            [sys.executable, "-m", "pinster_images", "job", stage, "-n", self.namespace, *names],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert termination.exists(), done.stderr
        return done.returncode, termination.read_text()

    def result(self, name: str, stage: Stage) -> results.StageResult:
        found = results.read(self.storage, self.namespace, name, stage)
        assert found is not None, f"no {stage} result for {name}"
        return found

    def public(self) -> dict[str, dict[str, Any]]:
        """key -> head_object of every published object."""
        listed = self.s3.list_objects_v2(Bucket=self.public_bucket).get("Contents", [])
        return {
            item["Key"]: self.s3.head_object(Bucket=self.public_bucket, Key=item["Key"])
            for item in listed
        }


@pytest.fixture
def rig(
    devcluster: Any,
    kube_api: Any,
    namespace: str,
    crd_installed: str,
    s3_server: S3Server,
    tmp_path: Path,
) -> JobRig:
    s3_env = s3_server.fresh_env()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PINSTER_", "AWS_"))}
    env = {
        **base,
        **devcluster.env,
        **s3_env,
        "PINSTER_PUBLIC_URL": "https://img.example.test",
        "PINSTER_LOG_FORMAT": "text",
        "HOSTNAME": "pinster-thumb-0123456789ab-abcde",
    }
    storage = StorageSettings.from_env(s3_env).open()
    return JobRig(
        namespace=namespace,
        env=env,
        storage=storage,
        s3=s3_server.client(),
        public_bucket=s3_env["PINSTER_S3_PUBLIC_BUCKET"],
        kube=kube_api,
        tmp=tmp_path,
    )


def test_thumbnail_job_publishes_and_is_idempotent(rig: JobRig) -> None:
    portrait, portrait_spec = rig.upload(images.with_gps("JPEG", 900, 1200), "1")
    oriented, _ = rig.upload(images.oriented_jpeg(6, 600, 400), "2")
    transparent, _ = rig.upload(images.palette_png(400, 300), "3")
    truncated, truncated_spec = rig.upload(images.truncated_jpeg(), "4")
    lying, _ = rig.upload(images.lying_png(), "5")
    bomb, _ = rig.upload(images.png_bomb(), "6")
    names = [portrait, oriented, transparent, truncated, lying, bomb]

    code, message = rig.job("thumbnail", *names)
    assert code == 0, message
    assert message.startswith("thumbnail: 3 succeeded, 3 failed")

    expected = {
        portrait: {"1024x1024": (768, 1024), "256x256": (192, 256), "100xauto": (100, 133)},
        oriented: {"1024x1024": (600, 400), "256x256": (256, 171), "100xauto": (100, 67)},
        transparent: {"1024x1024": (400, 300), "256x256": (256, 192), "100xauto": (100, 75)},
    }
    for name, sizes in expected.items():
        result = rig.result(name, Stage.THUMBNAIL)
        assert result.outcome == "succeeded" and result.job == "pinster-thumb-0123456789ab"
        assert result.uid == rig.described[name].uid
        got = {t["size"]: (t["width"], t["height"]) for t in result.data["thumbnails"]}
        assert got == sizes
    for name, reason in (
        (truncated, "TruncatedImage"),
        (lying, "CorruptImage"),
        (bomb, "TooManyPixels"),
    ):
        result = rig.result(name, Stage.THUMBNAIL)
        assert (result.outcome, result.reason) == ("failed", reason), result
        assert result.message

    published = rig.public()
    assert len(published) == 3 * 4  # three originals, three thumbnails each
    for key, head in published.items():
        assert head["CacheControl"] == CACHE_CONTROL
        body = rig.s3.get_object(Bucket=rig.public_bucket, Key=key)["Body"].read()
        image = Image.open(io.BytesIO(body))
        assert head["ContentType"] == Image.MIME[image.format or ""]
        assert image.getexif().get_ifd(0x8825) == {}, f"GPS left in {key}"
        assert b"GPSLatitude" not in body
        if "_" in key:  # thumbnails: exactly the reported size, no metadata at all
            assert not image.getexif()
    original = published[portrait_spec.md5]
    assert original["Metadata"]["imageable_id"] == "1"
    # Raw objects: gone once published, kept for the broken ones.
    assert rig.storage.head(Area.UPLOAD, portrait_spec.key) is None
    assert rig.storage.head(Area.UPLOAD, truncated_spec.key) is not None

    # A retried Job: same objects (same ETags), same results.
    first = {name: rig.result(name, Stage.THUMBNAIL) for name in names[:6]}
    code, again_message = rig.job("thumbnail", *names)
    assert code == 0 and again_message == message
    assert {k: v["ETag"] for k, v in rig.public().items()} == {
        k: v["ETag"] for k, v in published.items()
    }
    for name, before in first.items():
        after = rig.result(name, Stage.THUMBNAIL)
        assert (after.outcome, after.reason, after.message, after.data) == (
            before.outcome,
            before.reason,
            before.message,
            before.data,
        )


def test_moderation_job_against_rekognition(rig: JobRig, rekognition: RekognitionStandIn) -> None:
    first, _ = rig.upload(images.photo_jpeg(640, 480), "1")
    second, _ = rig.upload(images.save(images.photo(500, 400), "WEBP"), "2")
    bomb, _ = rig.upload(images.jpeg_bomb(), "3")

    rekognition.approve()
    code, message = rig.job("moderate", first, second, bomb, extra=rekognition.env)
    assert code == 0, message
    for name in (first, second):
        verdict = rig.result(name, Stage.MODERATION).data
        assert verdict["decision"] == "Approved" and verdict["backend"] == "rekognition"
        assert verdict["modelVersion"] == "7.0" and verdict["threshold"] == 99.0
    failed = rig.result(bomb, Stage.MODERATION)
    assert (failed.outcome, failed.reason) == ("failed", "TooManyPixels")
    assert len(rekognition.requests) == 2  # the bomb never reached the service

    rekognition.reject()
    rekognition.throttle(2)
    code, message = rig.job("moderate", first, extra=rekognition.env)
    assert code == 0, message
    verdict = rig.result(first, Stage.MODERATION).data
    assert verdict["decision"] == "Rejected"
    assert [label["name"] for label in verdict["labels"]] == [
        "Explicit Nudity",
        "Graphic Female Nudity",
    ]
    assert rig.public() == {}  # moderation publishes nothing


def test_moderation_job_retries_when_rekognition_keeps_throttling(
    rig: JobRig, rekognition: RekognitionStandIn
) -> None:
    name, _ = rig.upload(images.photo_jpeg(320, 240), "1")
    rekognition.throttle(1000)
    code, message = rig.job("moderate", name, extra=rekognition.env)
    assert code == 75
    assert f"retry {name}: ModerationUnavailable" in message
    assert results.read(rig.storage, rig.namespace, name, Stage.MODERATION) is None


def test_the_operators_job_runs_with_no_token_and_no_volume(
    rig: JobRig, product_image: Any
) -> None:
    """The manifest the operator builds, of the product's image, through the real Job
    controller and kubelet: no service-account token and no volume (a read-only root,
    nothing mounted), and the stage still finds its uploads and stores its results."""
    from kubernetes import client
    from pinster_operator import UploadRef, build_job
    from pinster_operator._settings import JobSettings

    from tests.support.waiting import wait_for

    core, batch = client.CoreV1Api(rig.kube), client.BatchV1Api(rig.kube)
    first, first_spec = rig.upload(images.photo_jpeg(800, 600), "1")
    second, second_spec = rig.upload(images.truncated_jpeg(), "2")
    env = {k: v for k, v in rig.env.items() if k.startswith(("PINSTER_", "AWS_"))}
    settings = JobSettings(image=product_image.pinned, env=tuple(env.items()), backoff_limit=0)
    refs = [
        UploadRef(rig.namespace, name, rig.described[name].uid, spec)
        for name, spec in ((first, first_spec), (second, second_spec))
    ]
    manifest = build_job(settings, Stage.THUMBNAIL, refs)
    job = manifest["metadata"]["name"]
    batch.create_namespaced_job(rig.namespace, manifest)

    def terminated() -> Any:
        pods = core.list_namespaced_pod(rig.namespace, label_selector=f"job-name={job}").items
        for pod in pods:
            for status in pod.status.container_statuses or []:
                if status.state.terminated is not None:
                    return pod, status.state.terminated
        return None

    pod, done = wait_for(terminated, 120, what="the thumbnail Job's pod to finish")
    assert done.exit_code == 0, done.message
    assert done.message.startswith("thumbnail: 1 succeeded, 1 failed")
    assert not pod.spec.volumes and not pod.spec.containers[0].volume_mounts
    assert pod.spec.automount_service_account_token is False
    result = rig.result(first, Stage.THUMBNAIL)
    assert result.outcome == "succeeded" and result.job == job
    assert result.uid == rig.described[first].uid
    assert rig.storage.head(Area.PUBLIC, first_spec.md5) is not None
    assert rig.result(second, Stage.THUMBNAIL).reason == "TruncatedImage"
