"""``pinster-images job moderate|thumbnail [--namespace NS] UPLOAD...``: a Job pod's work.

Exit status: 0 when every upload got a result (succeeded or failed for good), 75 when
some upload hit temporary trouble (the Job retries), 78 for a configuration error.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from pinster_images import logs
from pinster_images.errors import ConfigError
from pinster_images.kube import ApiReader
from pinster_images.resource import ImageUploadSpec, Stage
from pinster_images.sniff import sniff
from pinster_images.storage import Storage
from pinster_jobs._batch import (
    EXIT_CONFIG,
    KubeSpecs,
    Log,
    Specs,
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
_POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_namespace() -> str:
    if value := os.environ.get("PINSTER_NAMESPACE", "").strip():
        return value
    try:
        return _POD_NAMESPACE.read_text().strip() or "default"
    except OSError:
        pass
    try:  # outside a Pod (or in the devcluster): the kubeconfig context's namespace
        from kubernetes import config

        _, active = config.list_kube_config_contexts()
        return str(active["context"].get("namespace") or "default")
    except Exception:  # no kubeconfig at all
        return "default"


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
        help="namespace of the uploads (default: $PINSTER_NAMESPACE, else the pod's)",
    )
    return parser.parse_args(argv)


def stage_work(stage: Stage, settings: JobSettings, storage: Storage) -> Work:
    """The per-upload work of a stage, with its backend built once for the batch."""
    if stage == Stage.MODERATION:
        moderator = build_moderator(settings.moderation)

        def moderate(spec: ImageUploadSpec, upload_log: Log) -> dict[str, Any]:
            data = read_source(storage, spec).data
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

    def thumbnail(spec: ImageUploadSpec, upload_log: Log) -> dict[str, Any]:
        return publish(storage, engine, spec, upload_log)

    return thumbnail


def main(argv: list[str], *, specs: Specs | None = None) -> int:
    args = parse_args(argv)
    stage = STAGES[args.stage]
    termination = Path(os.environ.get("TERMINATION_MESSAGE_PATH", "/dev/termination-log"))
    try:
        settings = JobSettings.from_env()
        logs.setup(settings.log_level, settings.log_format)
        storage = settings.storage.open()
        work = stage_work(stage, settings, storage)
        if specs is None:
            specs = KubeSpecs(ApiReader.connect())
    except ConfigError as exc:
        logging.basicConfig()
        log.error("configuration error: %s", exc.message)
        write_termination_message(termination, f"{exc.reason}: {exc.message}")
        return EXIT_CONFIG
    namespace = args.namespace or default_namespace()
    log.info(
        "job %s starting for %d upload(s)",
        stage,
        len(args.uploads),
        extra={"namespace": namespace, "job": settings.job_name},
    )
    summary = run_batch(
        stage,
        namespace,
        args.uploads,
        storage=storage,
        specs=specs,
        work=work,
        job_name=settings.job_name,
    )
    message = summary.message()
    write_termination_message(settings.termination_message_path, message)
    log.info("job %s done: %s", stage, message.splitlines()[0], extra={"exit": summary.exit_code})
    return summary.exit_code
