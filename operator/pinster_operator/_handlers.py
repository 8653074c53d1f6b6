"""The kopf side: what kopf runs for the operator and how it is configured.

kopf runs the operator: login (service account or kubeconfig), start-up and clean-up,
signals, and the liveness endpoint. It registers no resource handlers: ImageUploads and
Jobs come through the operator's own watch streams (:mod:`._stream`, which says why),
so kopf keeps nothing in the objects (no finalizers, annotations or ``status.kopf``);
the explicit phase in our own status is the progress record.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import kopf

from pinster_operator._controller import Controller
from pinster_operator._errors import to_kopf
from pinster_operator._stream import JOBS, UPLOADS, Stream


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

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings)
        controller: Controller = memo["controller"]
        try:
            controller.storage.check()
        except Exception as exc:
            raise to_kopf(exc) from exc
        controller.metrics.serve(controller.settings.host, controller.settings.metrics_port)
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

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        controller: Controller = memo["controller"]
        streams: list[Stream] = memo.get("streams") or []
        await asyncio.gather(*(asyncio.to_thread(stream.stop) for stream in streams))
        await controller.stop()

    return registry
