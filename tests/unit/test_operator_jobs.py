"""Job manifests, batching plans and reading a Job's outcome."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from pinster_operator import Batcher, UploadRef, build_job, job_state, plan, upload_label
from pinster_operator._jobs import job_name, member_token, termination_message, uploads_of

from pinster_images.resource import JOB_UPLOADS_ENV, JobUpload, Stage, decode_job_uploads
from tests.support.operator_units import settings, spec
from tests.support.waiting import until

#: With the uploader's text, which Jobs are not told.
SPEC = replace(spec(), name="Sunset", description="Over the bay", featured="true")
REFS = [UploadRef("ns", f"img-{i}", f"uid-{i}", SPEC) for i in range(3)]


def test_manifest_from_settings() -> None:
    s = settings(
        PINSTER_JOB_SERVICE_ACCOUNT="pinster-job",
        PINSTER_JOB_RESOURCES='{"limits": {"memory": "512Mi"}}',
        PINSTER_JOB_NODE_SELECTOR='{"pool": "batch"}',
        PINSTER_JOB_TOLERATIONS='[{"key": "batch", "operator": "Exists"}]',
        PINSTER_JOB_BACKOFF_LIMIT="3",
        PINSTER_JOB_ACTIVE_DEADLINE="120",
        PINSTER_JOB_TTL="60",
        PINSTER_JOB_ENV_FROM_SECRET="pinster-job-env",
        PINSTER_MODERATION_BACKEND="rekognition",
    )
    job = build_job(s.jobs, Stage.MODERATION, REFS)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert (
        spec["backoffLimit"],
        spec["activeDeadlineSeconds"],
        spec["ttlSecondsAfterFinished"],
    ) == (3, 120, 60)
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "pinster-job"
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert container["image"] == "registry.test/pinster-images:1.0"
    assert container["command"] == ["pinster-images", "job"]
    assert container["args"] == ["moderate", "--namespace", "ns", "img-0", "img-1", "img-2"]
    assert container["resources"] == {"limits": {"memory": "512Mi"}}
    assert container["envFrom"] == [{"secretRef": {"name": "pinster-job-env"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PINSTER_MODERATION_BACKEND"] == "rekognition"
    assert env["PINSTER_S3_UPLOAD_BUCKET"] == "uploads"
    # Operator-only settings, and the signing key above all, stay in the operator.
    leaked = [n for n in env if n.startswith(("PINSTER_JOB_", "PINSTER_SERVICE_PRIVATE"))]
    assert leaked == ["PINSTER_JOB_NAME"]
    assert env["PINSTER_JOB_NAME"] == job["metadata"]["name"]
    # Each upload's uid and spec travel in the Job: the pod needs no Kubernetes access,
    # so it gets no token, and no volume that would hold its start (see _jobs).
    told = decode_job_uploads(env[JOB_UPLOADS_ENV])
    assert told == {
        ref.name: JobUpload(ref.uid, SPEC.md5, SPEC.key, SPEC.thumbnail_sizes) for ref in REFS
    }
    assert "Sunset" not in env[JOB_UPLOADS_ENV]  # the uploader's text stays in the upload
    assert pod["automountServiceAccountToken"] is False
    assert "volumes" not in pod and "volumeMounts" not in container
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_manifest_labels_owners_and_uploads() -> None:
    job = build_job(settings().jobs, Stage.THUMBNAIL, REFS)
    meta = job["metadata"]
    assert meta["labels"]["app.kubernetes.io/part-of"] == "pinster-images"
    assert meta["labels"]["images.pinster.io/stage"] == "thumbnail"
    for ref in REFS:
        assert meta["labels"][upload_label(ref.name)] == "true"
    assert [o["uid"] for o in meta["ownerReferences"]] == ["uid-0", "uid-1", "uid-2"]
    assert not any(o["controller"] for o in meta["ownerReferences"])
    assert uploads_of(job) == ["img-0", "img-1", "img-2"]
    assert json.loads(meta["annotations"]["images.pinster.io/uploads"]) == uploads_of(job)


def test_env_passthrough_can_be_switched_off() -> None:
    s = settings(PINSTER_JOB_ENV_PASSTHROUGH="false", PINSTER_JOB_ENV_FROM_CONFIGMAP="cfg")
    container = build_job(s.jobs, Stage.MODERATION, REFS[:1])["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert [e["name"] for e in container["env"]] == ["PINSTER_JOB_NAME", "PINSTER_UPLOADS"]
    assert container["envFrom"] == [{"configMapRef": {"name": "cfg"}}]


def test_upload_labels_fit_kubernetes_limits() -> None:
    short = upload_label("img-" + "a" * 32 + "-0123456789")
    assert short.endswith("img-" + "a" * 32 + "-0123456789")
    long = upload_label("x" * 200)
    assert len(long.split("/", 1)[1]) <= 63
    assert upload_label("x" * 200) == long and upload_label("y" * 200) != long


def test_job_names_are_deterministic_and_per_attempt() -> None:
    a = job_name(Stage.MODERATION, REFS)
    assert a == job_name(Stage.MODERATION, list(reversed(REFS)))
    assert a != job_name(Stage.THUMBNAIL, REFS)
    retried = [UploadRef(r.namespace, r.name, r.uid, SPEC, attempt=2) for r in REFS]
    assert a != job_name(Stage.MODERATION, retried)
    redriven = [UploadRef(r.namespace, r.name, r.uid, SPEC, round=5) for r in REFS]
    assert a != job_name(Stage.MODERATION, redriven)
    assert len(a) <= 63


def test_batches_of_one_namespace_only() -> None:
    with pytest.raises(ValueError):
        build_job(settings().jobs, Stage.MODERATION, [REFS[0], UploadRef("other", "x", "u", SPEC)])


def job(
    name: str,
    uploads: list[str],
    conditions: list[dict[str, Any]] | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    refs = [UploadRef("ns", u, u, SPEC, attempt=attempt) for u in uploads]
    members = json.dumps([member_token(r) for r in refs])
    return {
        "metadata": {
            "name": name,
            "labels": {upload_label(u): "true" for u in uploads},
            "annotations": {"images.pinster.io/members": members},
        },
        "status": {"conditions": conditions or []},
    }


FAILED = [
    {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    }
]


def test_plan_reuses_live_jobs_and_batches_the_rest() -> None:
    waiting = [UploadRef("ns", f"u{i}", f"{i}", SPEC) for i in range(7)]
    existing = [
        job("live", ["u1", "u2"]),
        job("dead", ["u3"], FAILED),
        job("older", ["u4"], attempt=0),
    ]
    p = plan([*waiting, waiting[0]], existing, max_size=3)
    assert p.reuse == {"u1": "live", "u2": "live"}
    # u3's Job failed and u4's live Job was for an earlier attempt: both get new Jobs.
    assert [[r.name for r in b] for b in p.batches] == [["u0", "u3", "u4"], ["u5", "u6"]]


def test_plan_batch_size_one() -> None:
    p = plan(REFS, [], max_size=1)
    assert [len(b) for b in p.batches] == [1, 1, 1]


def test_job_state_reading() -> None:
    assert job_state(None, "j").status == "missing"
    assert job_state(job("j", []), "j").status == "running"
    done = job("j", [], [{"type": "Complete", "status": "True"}])
    assert job_state(done, "j").status == "succeeded"
    failed = job_state(job("j", [], FAILED), "j", "Rekognition throttled")
    assert (failed.status, failed.reason) == ("failed", "BackoffLimitExceeded")
    assert "backoff limit" in failed.message and "Rekognition throttled" in failed.message
    other = job("j", [], [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}])
    assert job_state(other, "j").reason == "JobFailed"


def test_termination_message_takes_the_newest() -> None:
    def pod(finished: str, message: str) -> dict[str, Any]:
        term = {"finishedAt": finished, "message": message, "exitCode": 75}
        return {"status": {"containerStatuses": [{"state": {"terminated": term}}]}}

    pods = [
        pod("2026-01-01T00:00:02Z", "second"),
        pod("2026-01-01T00:00:01Z", "first"),
        {"status": {}},
    ]
    assert termination_message(pods) == "second"
    assert termination_message([]) == ""


def test_batcher_groups_by_window_and_size() -> None:
    flushed: list[tuple[str, Stage, list[str]]] = []

    async def flush(namespace: str, stage: Stage, group: list[UploadRef]) -> set[str]:
        flushed.append((namespace, stage, [r.name for r in group]))
        return set()

    async def flushes(count: int) -> None:
        await until(lambda: len(flushed) >= count, timeout=5, what=f"{count} flushes")

    async def scenario() -> None:
        # A window long enough that "at once" and "after the window" stay apart on a
        # loaded machine.
        batcher = Batcher(window=1.0, max_size=3, flush=flush)
        loop = asyncio.get_running_loop()
        for i in range(4):
            batcher.add(Stage.MODERATION, UploadRef("a", f"m{i}", str(i), SPEC))
        batcher.add(Stage.MODERATION, UploadRef("a", "m0", "0", SPEC))  # in flight: ignored
        await flushes(1)  # the full batch starts at once
        assert flushed[0] == ("a", Stage.MODERATION, ["m0", "m1", "m2"])
        # Quiet keys start almost at once, with what keeps arriving (a finished Job's
        # uploads, reconciled one after the other).
        started = loop.time()
        batcher.add(Stage.THUMBNAIL, UploadRef("a", "t0", "t", SPEC))
        batcher.add(Stage.MODERATION, UploadRef("b", "x0", "x", SPEC))
        await asyncio.sleep(0)  # the next worker's reconcile, a moment later
        batcher.add(Stage.THUMBNAIL, UploadRef("a", "t1", "t", SPEC))
        await flushes(3)
        assert loop.time() - started < 0.5
        assert len(flushed) == 3  # m3 is still waiting
        assert sorted(flushed[1:3]) == [
            ("a", Stage.THUMBNAIL, ["t0", "t1"]),
            ("b", Stage.MODERATION, ["x0"]),
        ]
        # m3 came right after a Job started for (a, moderation): it waits for the window.
        await flushes(4)
        assert flushed[3] == ("a", Stage.MODERATION, ["m3"])
        assert loop.time() - started > 0.5
        await batcher.close()

    asyncio.run(scenario())


def test_a_quiet_key_flushes_once_no_companion_comes() -> None:
    """A quiet key's batch is due ``SETTLE`` after its last upload, ``GATHER`` after its
    first at the latest; under load, a window after its first (read off its timer)."""

    async def noop(namespace: str, stage: Stage, group: list[UploadRef]) -> set[str]:
        return set()

    class LongSettle(Batcher):
        SETTLE = 60.0  # longer than GATHER: the cap decides

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        key = ("a", Stage.THUMBNAIL)
        batcher = Batcher(window=1.0, max_size=50, flush=noop)
        first = loop.time()
        batcher.add(Stage.THUMBNAIL, UploadRef("a", "t0", "t", SPEC))
        assert batcher._timers[key].when() - first <= Batcher.SETTLE + 0.01
        batcher.add(Stage.THUMBNAIL, UploadRef("a", "t1", "t", SPEC))  # a companion: later
        assert batcher._timers[key].when() - first >= Batcher.SETTLE
        batcher._start(key)  # flushed: the key is under load for a window now
        started = loop.time()
        batcher.add(Stage.THUMBNAIL, UploadRef("a", "late", "t", SPEC))
        assert batcher._timers[key].when() - started >= batcher.window - 0.01
        await batcher.close()

        capped = LongSettle(window=1.0, max_size=50, flush=noop)
        first = loop.time()
        capped.add(Stage.THUMBNAIL, UploadRef("a", "t0", "t", SPEC))
        capped.add(Stage.THUMBNAIL, UploadRef("a", "t1", "t", SPEC))
        assert capped._timers[key].when() <= first + Batcher.GATHER + 0.01
        await capped.close()

    asyncio.run(scenario())


def test_a_key_at_its_running_cap_holds_its_uploads_until_a_job_ends() -> None:
    """With ``max_running`` Jobs of a key unfinished, later uploads wait and then share
    as few Jobs as the free slots allow; other keys and a lone upload are not held."""
    flushed: list[list[str]] = []

    async def flush(namespace: str, stage: Stage, group: list[UploadRef]) -> set[str]:
        flushed.append([r.name for r in group])
        return {f"job-{len(flushed)}"}

    def ref(name: str) -> UploadRef:
        return UploadRef("a", name, name, SPEC)

    async def scenario() -> None:
        batcher = Batcher(window=0.05, max_size=2, flush=flush, max_running=1)
        batcher.add(Stage.MODERATION, ref("u0"))  # a lone upload starts at once
        await until(lambda: flushed == [["u0"]], timeout=5, what="the first Job")
        for name in ("u1", "u2", "u3", "u4", "u5"):
            batcher.add(Stage.MODERATION, ref(name))
        batcher.add(Stage.THUMBNAIL, ref("t0"))  # another key: its own cap
        await until(lambda: len(flushed) == 2, timeout=5, what="the thumbnail Job")
        assert flushed[1] == ["t0"]
        await asyncio.sleep(0.2)  # several windows: job-1 still runs, nothing starts
        assert len(flushed) == 2
        batcher.job_ended("a", Stage.MODERATION, "job-1")
        await until(lambda: len(flushed) == 3, timeout=5, what="the held uploads' Job")
        assert flushed[2] == ["u1", "u2"]  # one free slot: one Job of max_size
        batcher.job_running("a", Stage.MODERATION, "job-3")  # as its events report it
        batcher.job_ended("a", Stage.MODERATION, "job-3")
        await until(lambda: len(flushed) == 4, timeout=5, what="the next held Job")
        assert flushed[3] == ["u3", "u4"]
        # A Job reported ended before its creation came back never takes a slot.
        batcher.job_ended("a", Stage.MODERATION, "job-4")
        await until(lambda: len(flushed) == 5, timeout=5, what="the last held Job")
        assert flushed[4] == ["u5"]
        await batcher.close()

    asyncio.run(scenario())


def test_a_job_no_event_reports_ended_counts_for_its_lifetime_only() -> None:
    flushed: list[list[str]] = []

    async def flush(namespace: str, stage: Stage, group: list[UploadRef]) -> set[str]:
        flushed.append([r.name for r in group])
        return {f"job-{len(flushed)}"}

    async def scenario() -> None:
        batcher = Batcher(window=0.05, max_size=5, flush=flush, max_running=1, job_lifetime=0.3)
        batcher.add(Stage.MODERATION, UploadRef("a", "u0", "0", SPEC))
        await until(lambda: len(flushed) == 1, timeout=5, what="the first Job")
        batcher.add(Stage.MODERATION, UploadRef("a", "u1", "1", SPEC))
        await asyncio.sleep(0.1)
        assert len(flushed) == 1  # held while job-1 counts
        # job-1's end is never reported: it stops counting after its lifetime, and the
        # held group is looked at again without an event.
        await until(lambda: len(flushed) == 2, timeout=5, what="the held upload's Job")
        assert flushed[1] == ["u1"]
        await batcher.close()

    asyncio.run(scenario())
