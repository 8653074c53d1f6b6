"""``pinster-images operator``: run the ImageUpload operator (all settings from env)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import kopf
import uvloop

from pinster_images import kube, logs
from pinster_images.config import environ
from pinster_images.errors import ConfigError
from pinster_operator._controller import Controller
from pinster_operator._handlers import build_registry
from pinster_operator._kube import Kube
from pinster_operator._settings import OperatorSettings


def _quiet_kopf(level: str) -> None:
    """kopf logs every handler call at INFO with its whole settings object attached;
    keep its warnings and errors, and drop the bulky extras from our structured lines."""
    if level != "DEBUG":
        logging.getLogger("kopf").setLevel(logging.WARNING)

    def strip(record: logging.LogRecord) -> bool:
        for name in ("settings", "k8s_skip"):
            record.__dict__.pop(name, None)
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(strip)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pinster-images operator",
        description="Reconcile ImageUploads: moderation and thumbnail Jobs, notifications, "
        "clean-up. Configured by PINSTER_* environment variables (see docs/operator.md).",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the settings and exit"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or $KUBECONFIG)")
    args = parser.parse_args(argv)
    try:
        settings = OperatorSettings.from_env(environ())
    except ConfigError as exc:
        print(f"pinster-images operator: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print("configuration ok")
        return 0
    logs.setup(settings.log_level, settings.log_format)
    if args.kubeconfig:
        # kopf's login reads $KUBECONFIG; keep both clients on the same cluster.
        os.environ["KUBECONFIG"] = args.kubeconfig
    api = kube.api_client(args.kubeconfig)
    # Worker threads share the client (kopf watches with its own): a connection each,
    # and a few for Job creation and the orphan sweep.
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = settings.workers + 4
    controller = Controller(settings, Kube(api, settings.namespaces), settings.storage.open())
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    liveness = f"http://{host}:{settings.health_port}/healthz" if settings.health_port else None
    _quiet_kopf(settings.log_level)
    try:
        # uvloop, as kopf's own CLI chooses when installed (kopf.run() alone would take
        # asyncio's loop): its loop, futures and thread hand-offs cost less CPU per
        # event and per reconcile.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            kopf.run(
                loop=runner.get_loop(),
                registry=build_registry(controller),
                standalone=True,
                clusterwide=not settings.namespaces,
                namespaces=settings.namespaces,
                liveness_endpoint=liveness,
            )
    except Exception as exc:
        # Exit 1 with the reason: the kubelet restarts the container, and its last log
        # line (FallbackToLogsOnError) and the Event are what `kubectl describe` shows.
        reason = _reason(exc)
        logging.getLogger("pinster_operator").error("operator stopped: %s", reason)
        _report_on_own_pod(settings, controller.kube, reason)
        return 1
    return 0


def _reason(exc: BaseException) -> str:
    """The failure as the handler said it, without kopf's wrapper around failed
    start-up handlers ("One or more handlers failed.", not exported by kopf)."""
    while exc.__cause__ is not None and type(exc).__name__ == "ActivityError":
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _report_on_own_pod(settings: OperatorSettings, kube_: Kube, reason: str) -> None:
    if not (settings.pod_name and settings.pod_namespace):
        return
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": settings.pod_name, "namespace": settings.pod_namespace},
    }
    try:
        kube_.event(pod, "Warning", "StartupFailed", reason)
    except Exception as exc:  # the API server may be what failed: the log has it
        logging.getLogger("pinster_operator").warning("could not post the Event: %s", exc)
