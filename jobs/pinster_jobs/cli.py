"""``pinster-images job moderate|thumbnail [--namespace NS] UPLOAD...``: a Job pod's work.

What each upload is (its uid and spec) comes from ``PINSTER_UPLOADS``, which the operator
writes into the Job: the pod makes no Kubernetes call and has no credentials for one.

Exit status: 0 when every upload got a result (succeeded or failed for good), 75 when
some upload hit temporary trouble (the Job retries), 78 for a configuration error.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pinster_images import logs
from pinster_images.errors import ConfigError
from pinster_images.resource import (
    JOB_UPLOADS_ENV,
    JobUpload,
    Stage,
    decode_job_uploads,
)
from pinster_images.sniff import sniff
from pinster_images.storage import Storage
from pinster_jobs._batch import (
    EXIT_CONFIG,
    Log,
    Work,
    run_batch,
    write_termination_message,
)
from pinster_jobs._moderation import build_moderator
from pinster_jobs._publish import publish, read_source
from pinster_jobs._settings import JobSettings
from pinster_jobs._thumbnail import ThumbnailEngine

log = logging.getLogger("pinster_jobs")

STAGES = {"moderate": Stage.MODERATION, "thumbnail": Stage.THUMBNAIL}


def namespace_of(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """``--namespace``, else ``PINSTER_NAMESPACE``: results are filed under it, so a
    guess would leave them where the operator never looks."""
    if namespace := (args.namespace or env.get("PINSTER_NAMESPACE", "")).strip():
        return str(namespace)
    raise ConfigError("no namespace: give --namespace or set PINSTER_NAMESPACE")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pinster-images job",
        description="Moderate or thumbnail ImageUploads; one result per upload.",
    )
    parser.add_argument("stage", choices=sorted(STAGES), help="the work to do")
    parser.add_argument("uploads", nargs="+", metavar="UPLOAD", help="ImageUpload names")
    parser.add_argument(
        "--namespace",
        "-n",
        default=None,
        help="namespace of the uploads (default: $PINSTER_NAMESPACE)",
    )
    return parser.parse_args(argv)


def stage_work(stage: Stage, settings: JobSettings, storage: Storage) -> Work:
    """The per-upload work of a stage, with its backend built once for the batch."""
    if stage == Stage.MODERATION:
        moderator = build_moderator(settings.moderation)

        def moderate(upload: JobUpload, upload_log: Log) -> dict[str, Any]:
            data = read_source(storage, upload).data
            verdict = moderator.moderate(data, sniff(data, settings.limits))
            upload_log.info(
                "verdict %s by %s",
                verdict.decision,
                verdict.backend,
                extra={"labels": [label.name for label in verdict.labels]},
            )
            return verdict.to_dict()

        return moderate
    engine = ThumbnailEngine(settings.thumbnails, settings.limits)

    def thumbnail(upload: JobUpload, upload_log: Log) -> dict[str, Any]:
        return publish(storage, engine, upload, upload_log)

    return thumbnail


def job_uploads(names: list[str], env: Mapping[str, str]) -> dict[str, JobUpload]:
    """The named uploads as ``PINSTER_UPLOADS`` describes them, in the order named;
    ``ConfigError`` naming the variable when it is missing, malformed or incomplete."""
    text = env.get(JOB_UPLOADS_ENV, "")
    if not text.strip():
        raise ConfigError(
            f"{JOB_UPLOADS_ENV} is not set: it gives each upload's uid and spec (the "
            "operator writes it into the Jobs it creates)"
        )
    try:
        described = decode_job_uploads(text)
    except ValueError as exc:
        raise ConfigError(f"{JOB_UPLOADS_ENV}: {exc}") from exc
    if absent := [name for name in names if name not in described]:
        raise ConfigError(f"{JOB_UPLOADS_ENV} does not describe {', '.join(absent)}")
    return {name: described[name] for name in names}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stage = STAGES[args.stage]
    termination = Path(os.environ.get("TERMINATION_MESSAGE_PATH", "/dev/termination-log"))
    try:
        settings = JobSettings.from_env()
        logs.setup(settings.log_level, settings.log_format)
        storage = settings.storage.open()
        work = stage_work(stage, settings, storage)
        uploads = job_uploads(args.uploads, os.environ)
        namespace = namespace_of(args, os.environ)
    except ConfigError as exc:
        logging.basicConfig()
        log.error("configuration error: %s", exc.message)
        write_termination_message(termination, f"{exc.reason}: {exc.message}")
        return EXIT_CONFIG
    log.info(
        "job %s starting for %d upload(s)",
        stage,
        len(uploads),
        extra={"namespace": namespace, "job": settings.job_name},
    )
    summary = run_batch(
        stage,
        namespace,
        uploads,
        storage=storage,
        work=work,
        job_name=settings.job_name,
    )
    message = summary.message()
    write_termination_message(settings.termination_message_path, message)
    log.info("job %s done: %s", stage, message.splitlines()[0], extra={"exit": summary.exit_code})
    return summary.exit_code
