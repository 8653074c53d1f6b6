"""The kopf side: what kopf runs for the operator and how it is configured.

kopf runs the operator: login (service account or kubeconfig), start-up and clean-up,
signals, and the health endpoint. It registers no resource handlers: ImageUploads and
Jobs come through the operator's own watch streams (:mod:`._stream`, which says why),
so kopf keeps nothing in the objects (no finalizers, annotations or ``status.kopf``);
the explicit phase in our own status is the progress record.

Start-up either succeeds or ends the process: what retrying in place cannot heal (bad
settings, a port in use, an object store still unreachable after
``PINSTER_STARTUP_TIMEOUT``) is a :class:`kopf.PermanentError`, and ``cli.main`` exits 1
with the reason, so the kubelet restarts the container and says why. kopf serves the
health endpoint only once start-up has succeeded, so until then the Pod is not Ready;
afterwards the probe fails when the scheduler or a watch stream has died.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import kopf

from pinster_images.errors import ConfigError, TemporaryError
from pinster_operator._controller import Controller
from pinster_operator._stream import JOBS, UPLOADS, Stream

logger = logging.getLogger("pinster_operator")


def configure(settings: kopf.OperatorSettings) -> None:
    settings.peering.standalone = True
    # We post our own Events (one per phase change); kopf's would only repeat logs.
    settings.posting.enabled = False
    settings.networking.request_timeout = 60


def streams_of(controller: Controller) -> list[Stream]:
    """An ImageUpload and a Job stream per watched namespace (or for the cluster)."""
    api = controller.kube.api
    return [
        Stream(api, kind, namespace, functools.partial(controller.feed, handle))
        for namespace in controller.settings.namespaces or (None,)
        for kind, handle in ((UPLOADS, controller.observe), (JOBS, controller.job_event))
    ]


def build_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has none of kopf's default login handlers: same order as
        # pinster_images.kube (service account when mounted, else the kubeconfig).
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry, errors=kopf.ErrorsMode.PERMANENT)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings)
        controller: Controller = memo["controller"]
        await wait_for_storage(controller)
        host, port = controller.settings.host, controller.settings.metrics_port
        try:
            controller.metrics.serve(host, port)
        except OSError as exc:
            raise kopf.PermanentError(
                f"the metrics server cannot listen on {host}:{port} "
                f"(PINSTER_OPERATOR_HOST, PINSTER_METRICS_PORT): {exc}"
            ) from exc
        controller.start()
        memo["streams"] = streams = streams_of(controller)
        for stream in streams:
            stream.start()
        logging.getLogger("pinster_operator").info(
            "operator started",
            extra={
                "namespaces": list(controller.settings.namespaces) or "all",
                "batch_window": controller.settings.batch.window,
                "batch_max": controller.settings.batch.max_size,
            },
        )

    @kopf.on.probe(registry=registry, id="health")
    def health(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
        return health_report(memo["controller"], memo.get("streams") or [])

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        controller: Controller = memo["controller"]
        streams: list[Stream] = memo.get("streams") or []
        await asyncio.gather(*(asyncio.to_thread(stream.stop) for stream in streams))
        await controller.stop()

    return registry


def health_report(controller: Controller, streams: list[Stream]) -> dict[str, Any]:
    """Queue depth, timers and each stream's last contact; raises kopf.PermanentError
    (kopf's health endpoint answers 500, the probe fails) when the scheduler or a
    stream has died or a stream has not heard from the API server for too long."""
    problems = [p for p in (s.problem() for s in streams) if p]
    if controller.scheduler is None or controller.scheduler.done():
        problems.append("the scheduler has stopped: timed retries, polls and TTLs would not run")
    if problems:
        raise kopf.PermanentError("; ".join(problems))
    now = time.monotonic()
    return {
        "queue": controller.queue.depth,
        "timers": controller.queue.timers,
        "streams": {s.scope: round(now - (s.last_contact or now), 1) for s in streams},
    }


async def wait_for_storage(controller: Controller) -> None:
    """Check the object store, retrying what may heal (it is starting too) until
    ``startup_timeout``; refused settings fail at once."""
    deadline = time.monotonic() + controller.settings.startup_timeout
    delay = 1.0
    while True:
        try:
            await asyncio.to_thread(controller.storage.check)
            return
        except ConfigError as exc:
            raise kopf.PermanentError(str(exc)) from exc
        except TemporaryError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise kopf.PermanentError(
                    f"the object store is still unreachable after "
                    f"{controller.settings.startup_timeout:.0f}s (PINSTER_STARTUP_TIMEOUT): "
                    f"{exc.message}"
                ) from exc
            logger.warning("waiting for the object store: %s", exc.message)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 10.0)
        except Exception as exc:  # unexpected: a bug or a broken client, not a wait
            raise kopf.PermanentError(
                f"checking the object store: {type(exc).__name__}: {exc}"
            ) from exc
