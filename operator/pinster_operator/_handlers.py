"""The kopf side: which streams the operator watches and how kopf is configured.

kopf does the watching (ImageUploads, and Jobs labelled ``part-of=pinster-images``),
the liveness endpoint, and reconnects; every decision is the controller's. Only
event-watching handlers are used: they keep nothing in the objects (no finalizers, no
``status.kopf``), and the explicit phase in our own status is the progress record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from pinster_images.resource import GROUP, LABEL_PART_OF, PART_OF, PLURAL, VERSION
from pinster_operator._controller import Controller
from pinster_operator._errors import to_kopf
from pinster_operator._jobs import is_finished, uploads_of

#: What kopf's diff-base reads of metadata: the essence keeps labels and annotations;
#: the storage key depends on the kind and ownerReferences.
_ESSENCE_METADATA = ("name", "namespace", "uid", "labels", "annotations", "ownerReferences")


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, built without deep-copying what it then drops.

    kopf builds the "essence" of the object on every watch event, even for event
    handlers only, by deep-copying the whole body (status and managedFields included)
    and then deleting the status and all metadata but labels and annotations: with
    several events per upload that was a tenth of the operator's CPU. Handing it only
    the parts it keeps gives the same essence. With field-specific handlers (extra
    fields, which may name status fields) kopf gets the whole body as before.
    """

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[kopf.FieldSpec] | None = None,
    ) -> kopf.BodyEssence:
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        light: dict[str, Any] = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        light["metadata"] = {k: meta[k] for k in _ESSENCE_METADATA if k in meta}
        return super().build(body=kopf.Body(light), extra_fields=extra_fields)  # type: ignore[arg-type]


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf keeps any state it needs in annotations of our group, never in status."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = DiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.peering.standalone = True
    # We post our own Events (one per phase change); kopf's would only repeat logs.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    # List in pages: with 10,000 uploads one unpaged list is a 40 MB response at once.
    settings.watching.chunk_size = 500
    # kopf keeps a worker per object alive this long, holding the object's last event;
    # with thousands of uploads listed at start that is most of the memory peak.
    settings.queueing.idle_timeout = 0.5
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


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
        await controller.stop()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)  # type: ignore[arg-type]
    async def upload_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        controller: Controller = memo["controller"]
        controller.observe(event.get("type"), event["object"])

    @kopf.on.event(  # type: ignore[arg-type]
        "batch", "v1", "jobs", labels={LABEL_PART_OF: PART_OF}, registry=registry
    )
    async def job_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        job = event["object"]
        if event.get("type") == "DELETED" or is_finished(job):
            controller: Controller = memo["controller"]
            controller.wake(job["metadata"]["namespace"], uploads_of(job))

    return registry
