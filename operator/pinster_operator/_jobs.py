"""Job manifests and reading a Job's outcome: pure functions over plain dicts.

A Job serves one stage for a batch of uploads of one namespace. It is found again after
an operator restart through labels: ``images.pinster.io/stage`` and, per upload, a label
``upload.images.pinster.io/<upload key>`` (label values and names are limited to 63
characters, so several uploads cannot share one label value). The full list of upload
names is in the annotation ``images.pinster.io/uploads`` (JSON), which is what the pod's
command line also carries; each upload's uid and spec are in its environment
(``PINSTER_UPLOADS``).

The pods get no service-account token and no volume at all: they make no Kubernetes
call, and the kubelet's volume manager, which checks every 300 ms whether a pod's
volumes are mounted, would hold each pod ~0.3 s before its sandbox starts (measured on
the devcluster's node: 0.32 s with the token or an emptyDir, 0.02 s without). The root
filesystem stays read-only; nothing in a Job writes files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pinster_images.resource import (
    API_VERSION,
    JOB_UPLOADS_ENV,
    KIND,
    LABEL_COMPONENT,
    LABEL_PART_OF,
    LABEL_STAGE,
    PART_OF,
    ImageUploadSpec,
    JobUpload,
    Stage,
    encode_job_uploads,
)
from pinster_operator._settings import JobSettings

UPLOAD_LABEL_PREFIX = "upload.images.pinster.io/"
ANNOTATION_UPLOADS = "images.pinster.io/uploads"
#: Which (upload, attempt, round) each Job was made for: only that one may be reused.
ANNOTATION_MEMBERS = "images.pinster.io/members"
#: The job subcommand of each stage.
VERBS = {Stage.MODERATION: "moderate", Stage.THUMBNAIL: "thumbnail"}
#: Job failure reasons passed on as the upload's reason; others become JobFailed.
KNOWN_REASONS = ("BackoffLimitExceeded", "DeadlineExceeded")


@dataclass(frozen=True)
class UploadRef:
    """What a Job needs to know of an upload it serves."""

    namespace: str
    name: str
    uid: str
    spec: ImageUploadSpec = field(compare=False, repr=False)
    #: Which operator-level attempt the Job is for this upload (1 = first Job).
    attempt: int = 1
    #: Length of the upload's phase history: a re-driven upload gets new Job names.
    round: int = 0


def upload_label(name: str) -> str:
    """The per-upload label key; names that do not fit a label name are hashed."""
    if len(name) <= 63:
        return UPLOAD_LABEL_PREFIX + name
    return UPLOAD_LABEL_PREFIX + "h-" + hashlib.sha256(name.encode()).hexdigest()[:40]


def member_token(ref: UploadRef) -> str:
    return f"{ref.name}#{ref.attempt}.{ref.round}"


def job_name(stage: Stage, uploads: Sequence[UploadRef]) -> str:
    """Deterministic from the batch and attempts: re-creating it hits AlreadyExists."""
    members = sorted(member_token(u) for u in uploads)
    digest = hashlib.sha256("\0".join([stage.value, *members]).encode()).hexdigest()[:12]
    short = {Stage.MODERATION: "mod", Stage.THUMBNAIL: "thumb"}[stage]
    return f"pinster-{short}-{digest}"


def build_job(
    settings: JobSettings,
    stage: Stage,
    uploads: Sequence[UploadRef],
) -> dict[str, Any]:
    """The batch/v1 Job manifest for ``uploads`` (all in one namespace)."""
    if not uploads:
        raise ValueError("a Job serves at least one upload")
    namespace = uploads[0].namespace
    if any(u.namespace != namespace for u in uploads):
        raise ValueError("a Job serves uploads of one namespace only")
    name = job_name(stage, uploads)
    labels = {
        LABEL_PART_OF: PART_OF,
        LABEL_COMPONENT: "job",
        LABEL_STAGE: stage.value,
        **{upload_label(u.name): "true" for u in uploads},
    }
    container: dict[str, Any] = {
        "name": "job",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(settings.command),
        "args": [VERBS[stage], "--namespace", namespace, *[u.name for u in uploads]],
        "env": [{"name": k, "value": v} for k, v in settings.env]
        + [
            # Recorded in each result record, so a result names the Job that wrote it.
            {"name": "PINSTER_JOB_NAME", "value": name},
            {
                "name": JOB_UPLOADS_ENV,
                "value": encode_job_uploads({u.name: JobUpload.of(u.uid, u.spec) for u in uploads}),
            },
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if settings.resources:
        container["resources"] = settings.resources
    env_from: list[dict[str, Any]] = []
    if settings.env_from_configmap:
        env_from.append({"configMapRef": {"name": settings.env_from_configmap}})
    if settings.env_from_secret:
        env_from.append({"secretRef": {"name": settings.env_from_secret}})
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod_spec["tolerations"] = list(settings.tolerations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                ANNOTATION_UPLOADS: json.dumps([u.name for u in uploads]),
                ANNOTATION_MEMBERS: json.dumps([member_token(u) for u in uploads]),
            },
            # Owned by every upload it serves; none is *the* controller of a shared Job.
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": u.name,
                    "uid": u.uid,
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
                for u in uploads
            ],
        },
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": settings.active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {
                "metadata": {
                    "labels": {
                        LABEL_PART_OF: PART_OF,
                        LABEL_COMPONENT: "job",
                        LABEL_STAGE: stage.value,
                    }
                },
                "spec": pod_spec,
            },
        },
    }


# --- reading a Job ------------------------------------------------------------------

JobStatusName = Literal["running", "succeeded", "failed", "missing"]


@dataclass(frozen=True)
class JobState:
    name: str
    status: JobStatusName
    reason: str = ""
    message: str = ""
    #: for a failed Job: the reason its pods asked for a retry when it was the object
    #: store's trouble, not the uploads' (``StorageUnavailable``...); else empty
    waiting: str = ""


def uploads_of(job: dict[str, Any]) -> list[str]:
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_UPLOADS)
    if not raw:
        return []
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def serves(job: dict[str, Any], ref: UploadRef) -> bool:
    """Whether ``job`` was made for this very attempt of ``ref`` (labels find candidates
    after a restart; the members annotation rules out Jobs of earlier attempts)."""
    meta = job.get("metadata") or {}
    if upload_label(ref.name) not in (meta.get("labels") or {}):
        return False
    try:
        members = json.loads((meta.get("annotations") or {}).get(ANNOTATION_MEMBERS, "[]"))
    except json.JSONDecodeError:
        return False
    return member_token(ref) in members


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return dict(condition)
    return None


def is_finished(job: dict[str, Any]) -> bool:
    return bool(_condition(job, "Complete") or _condition(job, "Failed"))


#: Pods of our Jobs (the Job's template labels), as the API server selects them.
JOB_POD_SELECTOR = f"{LABEL_PART_OF}={PART_OF},{LABEL_COMPONENT}=job"


def job_of_pod(pod: dict[str, Any]) -> str | None:
    """The name of the Job a pod belongs to (the label the Job controller sets)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    return str(name) if name else None


def stage_of_job(obj: dict[str, Any]) -> Stage | None:
    """The stage of one of our Jobs or of its pod (both carry the label), if it has one."""
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_STAGE)
    try:
        return Stage(str(value))
    except ValueError:
        return None


def pod_succeeded(pod: dict[str, Any]) -> bool:
    """The Job's container exited 0: every result of the pod is stored. The Job
    controller says ``Complete`` 1-2 s later (it batches pod updates, then removes its
    finalizers); a stage reading its results from here need not wait for that."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if status.get("name") == "job" and terminated.get("exitCode") == 0:
            return True
    return False


def job_state(job: dict[str, Any] | None, name: str, termination: str = "") -> JobState:
    """Running, succeeded or failed (with the Job's reason and the pods' last words)."""
    if job is None:
        return JobState(name, "missing", "JobMissing", f"Job {name} no longer exists")
    failed = _condition(job, "Failed")
    if failed is not None:
        raw_reason = str(failed.get("reason") or "")
        reason = raw_reason if raw_reason in KNOWN_REASONS else "JobFailed"
        detail = str(failed.get("message") or raw_reason or "the Job failed")
        message = f"Job {name} failed: {detail}"
        if termination:
            message = f"{message}; last pod said: {termination}"
        return JobState(name, "failed", reason, message, waiting=storage_trouble(termination))
    if _condition(job, "Complete") is not None:
        return JobState(name, "succeeded")
    return JobState(name, "running")


def storage_trouble(termination: str) -> str:
    """The reason of the first ``retry <upload>: Storage...`` line a pod left: the object
    store was down or refused for that pod, so the whole Job failed for infrastructure,
    whichever uploads the (1 KiB) message had room to list."""
    for line in termination.splitlines():
        if line.startswith("retry ") and ": " in line:
            reason = line.split(": ", 2)[1]
            if reason.startswith("Storage"):
                return reason
    return ""


def termination_message(pods: Sequence[dict[str, Any]]) -> str:
    """The newest terminated container's message among a Job's pods (at most 1 KiB)."""
    best: tuple[str, str] = ("", "")
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = str(terminated.get("message") or "").strip()
            finished = str(terminated.get("finishedAt") or "")
            if message and finished >= best[0]:
                best = (finished, message)
    return best[1][:1024]
