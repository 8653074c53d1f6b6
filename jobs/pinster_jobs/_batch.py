"""Running one stage over a batch of uploads and reporting a result for each.

Per upload (as the operator described it in the Job: ``PINSTER_UPLOADS``): do the work,
write one StageResult. A permanent failure (broken file, bomb) becomes that upload's
``failed`` result and the batch goes on; temporary trouble writes nothing for that
upload and makes the pod exit 75 (EX_TEMPFAIL) at the end, so the Job's backoffLimit
retries the batch, whose finished uploads are then cheap no-ops. At the end the records
written go out again as the Job's one bundle (the operator's single read of the batch;
none for a single record). A short summary goes to the termination message, which the
operator shows when the Job fails.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pinster_images import logs, results
from pinster_images.errors import PermanentError, TemporaryError
from pinster_images.resource import JobUpload, Stage
from pinster_images.storage import Storage

log = logging.getLogger("pinster_jobs")

EXIT_OK = 0
EXIT_TEMPORARY = 75  # EX_TEMPFAIL: the Job's backoffLimit retries
EXIT_CONFIG = 78  # EX_CONFIG: a setting is wrong; retrying cannot help
#: Kubernetes keeps at most 4096 bytes of a termination message.
TERMINATION_LIMIT = 4000

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
#: The work of one stage for one upload; returns the result's ``data``.
Work = Callable[[JobUpload, Log], dict[str, Any]]


@dataclass
class Summary:
    stage: Stage
    succeeded: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    temporary: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_TEMPORARY if self.temporary else EXIT_OK

    def message(self) -> str:
        parts = [f"{self.stage}: {len(self.succeeded)} succeeded"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.temporary:
            parts.append(f"{len(self.temporary)} to retry")
        lines = [", ".join(parts)]
        lines += [f"retry {name}: {why}" for name, why in self.temporary]
        lines += [f"failed {name}: {why}" for name, why in self.failed]
        text = "\n".join(lines)
        if len(text.encode()) > TERMINATION_LIMIT:
            text = text.encode()[: TERMINATION_LIMIT - 4].decode(errors="ignore") + "\n..."
        return text


def write_termination_message(path: Path, text: str) -> None:
    """Best effort: outside a pod the path may not exist or be writable."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError:
        log.debug("termination message not written to %s", path)


def _outcome(
    stage: Stage,
    namespace: str,
    name: str,
    upload: JobUpload,
    *,
    work: Work,
    job_name: str,
    upload_log: Log,
) -> results.StageResult:
    """The upload's result: what the work made, or why it can never succeed. Temporary
    trouble is raised, so that nothing is written for the upload."""
    result = functools.partial(
        results.StageResult,
        namespace=namespace,
        upload=name,
        stage=stage,
        job=job_name,
        uid=upload.uid,
    )
    try:
        data = work(upload, upload_log)
    except PermanentError as exc:
        upload_log.warning("%s failed permanently: %s: %s", stage, exc.reason, exc.message)
        return result(outcome="failed", reason=exc.reason, message=exc.message)
    return result(outcome="succeeded", data=data)


def run_batch(
    stage: Stage,
    namespace: str,
    uploads: Mapping[str, JobUpload],
    *,
    storage: Storage,
    work: Work,
    job_name: str = "",
) -> Summary:
    summary = Summary(stage)
    written: list[results.StageResult] = []
    for name, upload in uploads.items():
        upload_log = logs.for_upload(log, namespace, name)
        try:
            result = _outcome(
                stage, namespace, name, upload, work=work, job_name=job_name, upload_log=upload_log
            )
            results.write(storage, result)
            written.append(result)
        except TemporaryError as exc:
            upload_log.warning("%s will be retried: %s: %s", stage, exc.reason, exc.message)
            summary.temporary.append((name, f"{exc.reason}: {exc.message}"))
            continue
        except Exception as exc:  # a bug or an unforeseen failure: let the Job retry
            upload_log.exception("%s crashed", stage)
            summary.temporary.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        if result.outcome == "succeeded":
            summary.succeeded.append(name)
            upload_log.info("%s succeeded", stage)
        else:
            summary.failed.append((name, f"{result.reason}: {result.message}"))
    if job_name and len(written) >= results.BUNDLE_MIN:
        _write_bundle(storage, namespace, job_name, written)
    return summary


def _write_bundle(
    storage: Storage, namespace: str, job_name: str, written: list[results.StageResult]
) -> None:
    """The batch's records as one object for the operator (one read per Job instead of
    one per upload). Best effort: without it the operator reads each upload's record."""
    try:
        results.write_bundle(storage, namespace, job_name, written)
    except Exception as exc:
        log.warning(
            "the Job's result bundle was not written (%s); the operator reads each "
            "upload's record instead",
            exc,
            extra={"namespace": namespace, "job": job_name},
        )
