"""The product end to end on the devcluster's node, installed by its chart: the upload
service, the operator and the Job pods run the product's image as containers; S3 is the
devcluster's object store; HTTP stand-ins of PinsterApi (verifying the JWT it receives)
and Rekognition listen on the node address, where the Pods reach them.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
import requests
from kubernetes import client
from pinster_operator._jobs import uploads_of

from pinster_images import results
from pinster_images.resource import LABEL_MD5
from tests.support.images import jpeg
from tests.support.rekognition import RekognitionStandIn
from tests.support.stack import OPERATOR, SERVICE_URL, SIZES, Stack, rekognition_values
from tests.support.waiting import wait_for


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def phases(obj: dict[str, Any]) -> list[str]:
    return [h["phase"] for h in obj["status"]["phaseHistory"]]


def test_upload_to_ready_with_one_verified_post(
    stack: Stack, service_keys: tuple[bytes, bytes]
) -> None:
    stack.start()
    image = jpeg(1200, 900)
    accepted = stack.upload(image)
    obj = stack.wait_terminal(accepted["name"])
    md5 = obj["spec"]["md5"]

    assert obj["status"]["phase"] == "Ready", condition(obj, "Ready")["message"]
    assert phases(obj) == ["Pending", "Moderating", "Thumbnailing", "Notifying", "Ready"]
    # kopf dispatched every event and kept nothing of its own in the object.
    assert not obj["metadata"].get("finalizers")
    assert not [a for a in obj["metadata"].get("annotations") or {} if "kopf" in a]
    assert "kopf" not in obj["status"]
    for type_ in ("Moderated", "ThumbnailsReady", "Notified", "Ready"):
        c = condition(obj, type_)
        assert c["status"] == "True" and c["observedGeneration"] == 1, c
    assert obj["status"]["observedGeneration"] == 1
    assert obj["status"]["published"]["thumbnailCount"] == len(SIZES)
    assert {md5, *(f"{md5}_{size}" for size in SIZES)} <= stack.public_keys()

    [post] = stack.api.accepted("/v1/images/")
    assert len(stack.api.all()) == 1
    token = post.headers["authorization"].removeprefix("Bearer ")
    claims = jwt.decode(
        token,
        service_keys[1],
        algorithms=["RS256"],
        audience=stack.api.url,
        issuer=SERVICE_URL,
        leeway=10,
    )
    assert claims["exp"] - claims["nbf"] == 10
    assert (claims["imageable_type"], claims["imageable_id"]) == ("Pin", "42")
    data = post.body["data"]
    assert list(data)[:5] == [
        "imageable_id",
        "imageable_type",
        "base_file_name",
        "storage_location_uri",
        "thumbnailable",
    ]
    assert (data["imageable_id"], data["imageable_type"], data["base_file_name"]) == (
        "42",
        "Pin",
        md5,
    )
    assert data["storage_location_uri"].endswith(f"/{md5}") and data["thumbnailable"] is True
    assert sorted(t["size"] for t in data["thumbnails"]) == sorted(SIZES)
    assert post.headers["idempotency-key"] == accepted["name"]


def test_pinster_api_503_for_a_while_then_ready(stack: Stack) -> None:
    stack.api.fail_first = 3
    stack.start()
    accepted = stack.upload(jpeg(320, 240))
    obj = stack.wait_terminal(accepted["name"])
    assert obj["status"]["phase"] == "Ready"
    assert [r.status for r in stack.api.all()] == [503, 503, 503, 201]
    assert len(stack.api.accepted()) == 1
    assert obj["status"]["attempts"]["notification"] == 4
    events = stack.kubectl("get", "events", "-n", stack.namespace, "-o", "json")
    assert "NotificationRetrying" in events


def test_failing_job_is_retried_then_failed_with_a_visible_reason(
    stack: Stack, node_rekognition: RekognitionStandIn
) -> None:
    rekognition = node_rekognition
    # Rekognition throttles for good: the moderation pod exits non-zero (temporary
    # trouble), the Job uses its backoffLimit and fails; the operator tries a second
    # Job (PINSTER_JOB_ATTEMPTS=2), then marks the upload Failed.
    rekognition.throttle(1_000_000)
    stack.start(**rekognition_values(rekognition))
    accepted = stack.upload(jpeg(320, 240))
    obj = stack.wait_terminal(accepted["name"], timeout=300)
    assert obj["status"]["phase"] == "Failed"
    assert obj["status"]["failedStage"] == "moderation"
    assert obj["status"]["attempts"]["moderation"] == 2
    moderation_jobs = [
        j
        for j in stack.jobs()
        if j["metadata"]["labels"]["images.pinster.io/stage"] == "moderation"
    ]
    assert len(moderation_jobs) == 2
    wide = stack.kubectl("get", "iu", accepted["name"], "-n", stack.namespace, "-o", "wide")
    assert "Failed" in wide and "BackoffLimitExceeded" in wide
    described = stack.kubectl("describe", "iu", accepted["name"], "-n", stack.namespace)
    assert "BackoffLimitExceeded" in described
    assert "retrying with a new Job" in described
    assert "last pod said" in condition(obj, "Ready")["message"]
    assert not stack.api.all()


def test_flagged_image_is_rejected_and_never_published(
    stack: Stack, node_rekognition: RekognitionStandIn
) -> None:
    rekognition = node_rekognition
    rekognition.reject()
    stack.start(**rekognition_values(rekognition))
    accepted = stack.upload(jpeg(640, 480))
    obj = stack.wait_terminal(accepted["name"])
    assert obj["status"]["phase"] == "Rejected"
    assert obj["status"]["verdict"]["decision"] == "Rejected"
    assert obj["status"]["verdict"]["labels"][0]["name"] == "Explicit Nudity"
    assert phases(obj) == ["Pending", "Moderating", "Notifying", "Rejected"]
    assert condition(obj, "ThumbnailsReady")["status"] == "False"
    assert stack.public_keys() == set()
    assert not stack.api.accepted("/v1/images/")
    [flagged] = stack.api.accepted("/v1/images/flagged")
    assert flagged.body["data"]["verdict"]["labels"][0]["name"] == "Explicit Nudity"
    assert not any(
        j["metadata"]["labels"]["images.pinster.io/stage"] == "thumbnail" for j in stack.jobs()
    )

    # Kept for the retention, the raw bytes go with the upload when it is deleted by hand
    # (left, the orphan sweep would adopt them and the upload would come back).
    raw = f"raw/{obj['spec']['md5']}"
    assert raw in stack.upload_keys("raw/")
    stack.kubectl("delete", "iu", accepted["name"], "-n", stack.namespace)
    wait_for(lambda: raw not in stack.upload_keys("raw/"), timeout=30, what=f"{raw} deleted")


@pytest.mark.parametrize("stage", ["Moderating", "Thumbnailing", "Notifying"])
def test_operator_killed_mid_stage_resumes_without_duplicates(stack: Stack, stage: str) -> None:
    if stage == "Notifying":
        stack.api.fail_first = 2  # keep it in Notifying long enough to be killed there
    stack.start()
    names = [stack.upload(jpeg(300 + i, 200), imageable_id=str(i))["name"] for i in range(3)]

    def reached() -> bool:
        return any((stack.get(n).get("status") or {}).get("phase") == stage for n in names)

    wait_for(reached, timeout=120, what=f"an upload in {stage}")
    stack.kill_operator()
    finished = [stack.wait_terminal(n) for n in names]
    assert [o["status"]["phase"] for o in finished] == ["Ready"] * 3
    per_upload: dict[str, int] = {}
    for job in stack.jobs():
        stage_label = job["metadata"]["labels"]["images.pinster.io/stage"]
        for upload in json.loads(job["metadata"]["annotations"]["images.pinster.io/uploads"]):
            per_upload[f"{upload}/{stage_label}"] = per_upload.get(f"{upload}/{stage_label}", 0) + 1
    assert set(per_upload.values()) == {1}, per_upload
    keys_seen = [r.headers["idempotency-key"] for r in stack.api.accepted("/v1/images/")]
    assert sorted(set(keys_seen)) == sorted(names)


def test_200_uploads_at_once_share_jobs(stack: Stack) -> None:
    count = 200
    stack.start(operator={"batch": {"windowSeconds": 2, "maxSize": 20}})
    images = [jpeg(160, 120 + i) for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        accepted = list(
            pool.map(lambda i: stack.upload(images[i], imageable_id=str(i)), range(count))
        )
    names = [a["name"] for a in accepted]
    assert [stack.wait_terminal(n, timeout=600)["status"]["phase"] for n in names] == [
        "Ready"
    ] * count
    jobs = stack.jobs()
    print(f"{count} uploads -> {len(jobs)} Jobs")
    for stage in ("moderation", "thumbnail"):
        carried = [
            len(uploads_of(j))
            for j in jobs
            if j["metadata"]["labels"]["images.pinster.io/stage"] == stage
        ]
        # Every upload went through one Job per stage; without batching there would be
        # `count` Jobs per stage. Uploads arrive over a few seconds (one upload-service
        # replica), so batches fill to at least 5 on average, not to the maximum.
        assert sum(carried) == count, (stage, carried)
        assert len(carried) <= count // 5, f"{stage}: {len(carried)} Jobs for {count} uploads"
    assert sorted(
        r.headers["idempotency-key"] for r in stack.api.accepted("/v1/images/")
    ) == sorted(names)
    listed = stack.kubectl("get", "iu", "-n", stack.namespace, "-l", LABEL_MD5, "-o", "name")
    assert len(listed.split()) == count
    # The Jobs' results: the pods wrote a record per upload and stage, which stay, and a
    # bundle per Job of several uploads, which the operator read once each and deleted;
    # it read records only for the uploads a Job served alone.
    records = stack.upload_keys(f"results/{stack.namespace}/")
    assert {key for key in records if "/_jobs/" in key} == set()
    assert len(records) == 2 * count
    served = [len(uploads_of(j)) for j in jobs]
    shared = sum(n >= results.BUNDLE_MIN for n in served)
    read = {
        source: stack.operator_metric("pinster_result_reads_total", source=source)
        for source in ("bundle", "record")
    }
    assert read == {"bundle": shared, "record": len(jobs) - shared}, (read, served)


def test_the_operator_reports_its_health(stack: Stack) -> None:
    stack.start(operator={"healthPort": 8081})
    core = client.CoreV1Api(stack.kube_api)
    pod = core.read_namespaced_pod(stack.operator_pod(), stack.namespace)
    health = requests.get(f"http://{pod.status.pod_ip}:8081/healthz", timeout=10)
    assert health.status_code == 200
    report = health.json()["health"]
    assert report["queue"] == 0 and report["timers"] == 0
    assert report["last_event"] == {}  # nothing in the namespace yet
    stack.wait_terminal(stack.upload(jpeg(640, 480))["name"])
    pod_ip = pod.status.pod_ip

    def fresh() -> Any:
        # kopf caches probe results for 10 s.
        report = requests.get(f"http://{pod_ip}:8081/healthz", timeout=10).json()["health"]
        return set(report["last_event"]) == {"imageuploads", "jobs"} and report

    report = wait_for(fresh, 30, what="events of both kinds in the health report")
    assert all(0 <= age < 60 for age in report["last_event"].values())


def test_an_operator_that_cannot_start_is_not_ready_and_says_why(stack: Stack) -> None:
    # An address the Pod does not have: the metrics server cannot listen, which no
    # retry in place would heal (a port in use: tests/integration/test_operator_start.py).
    node_address = {"name": "PINSTER_OPERATOR_HOST", "value": "10.253.0.1"}
    extra_env = [*stack.values["operator"]["extraEnv"], node_address]
    stack.start(wait=False, operator={"extraEnv": extra_env})
    core = client.CoreV1Api(stack.kube_api)

    def failed() -> Any:
        pods = core.list_namespaced_pod(
            stack.namespace, label_selector="app.kubernetes.io/component=operator"
        ).items
        for pod in pods:
            for status in pod.status.container_statuses or []:
                ended = status.last_state.terminated or status.state.terminated
                if status.restart_count >= 1 and ended is not None:
                    return pod, status, ended
        return None

    pod, status, ended = wait_for(failed, 180, what="the operator's container exited and restarted")
    assert ended.exit_code == 1
    assert not status.ready
    assert "cannot listen on 10.253.0.1:9090" in ended.message, ended.message
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert ready.status == "False"
    events = core.list_namespaced_event(
        stack.namespace, field_selector=f"involvedObject.name={pod.metadata.name}"
    ).items
    said = [e for e in events if e.reason == "StartupFailed"]
    assert said and "PINSTER_OPERATOR_HOST" in said[0].message, [e.reason for e in events]
    assert said[0].type == "Warning"
    deployment = client.AppsV1Api(stack.kube_api).read_namespaced_deployment(
        OPERATOR, stack.namespace
    )
    assert not deployment.status.ready_replicas
