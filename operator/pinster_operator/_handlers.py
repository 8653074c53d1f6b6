"""The kopf side: what kopf runs for the operator and how it is configured.

kopf runs the operator: login (service account or kubeconfig), start-up and clean-up,
signals, the health endpoint, and the watches. ImageUploads, the operator's own Jobs
and their pods come through ``@kopf.on.event`` handlers that hand each event to the
controller on the event loop (:meth:`Controller.observe`, :meth:`Controller.job_event`,
:meth:`Controller.job_pod_event`: a pod that exited 0 ends its stage without waiting for
the Job's ``Complete``); the controller's queue, the pure state machine and its workers do the rest. Event handlers
keep no state in the objects: kopf adds no finalizers, annotations or ``status.kopf``
(the explicit phase in our own status is the progress record).

Start-up either succeeds or ends the process: what retrying in place cannot heal (bad
settings, a port in use, an object store still unreachable after
``PINSTER_STARTUP_TIMEOUT``) is a :class:`kopf.PermanentError`, and ``cli.main`` exits 1
with the reason, so the kubelet restarts the container and says why. kopf serves the
health endpoint only once start-up has succeeded, so until then the Pod is not Ready;
afterwards the probe fails when the scheduler has died (a watch that fails for good
ends kopf itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import kopf

from pinster_images.errors import ConfigError, TemporaryError
from pinster_images.resource import GROUP, LABEL_PART_OF, PART_OF, PLURAL, VERSION
from pinster_operator._controller import Controller
from pinster_operator._jobs import JOB_POD_SELECTOR

logger = logging.getLogger("pinster_operator")


#: An event's object as the controller reads it (kopf's RawBody is that dict, typed apart).
Body = dict[str, Any]
#: Only the Jobs this product launched, selected by the API server (not in the client).
JOB_SELECTOR = f"{LABEL_PART_OF}={PART_OF}"


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: the operator has event handlers only, and no change handler reads
    what changed. kopf's default deep-copies every event's whole body to build the
    "essence" it would compare (about a quarter of kopf's CPU per event, measured with
    py-spy) and keeps it nowhere here anyway."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> None:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings, each chosen for a reason (docs/operator.md repeats them)."""
    settings.peering.standalone = True  # one replica (Recreate): no peering objects
    settings.persistence.diffbase_storage = NoDiffBase()
    # We post our own Events (one per phase change); kopf's would only repeat logs.
    settings.posting.enabled = False
    settings.networking.request_timeout = 60
    # The CRD and the namespaces are known: no CRD or namespace watch (nor its RBAC).
    settings.scanning.disabled = True
    # ("batch", "jobs"), not "batch/jobs": kopf reads a dotless "group/plural" as a name.
    settings.watching.label_selectors["batch", "jobs"] = JOB_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = JOB_POD_SELECTOR
    # Watches end and reopen every 5 minutes (as kube-controller-manager's reflectors);
    # a connection silent for longer than that plus a margin is dead and reopened.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # At start kopf lists every upload: in small pages, each object handed at once to a
    # worker of its own (kopf's default: no limit) that ends soon after its last event
    # (our handlers return at once). A worker limit made it worse: the objects waiting
    # for a worker keep their bodies queued while the listing runs ahead (10,000
    # uploads: 212-228 MB peak with pages of 500 and 200 workers, 140 MB like this).
    settings.watching.chunk_size = 100
    settings.queueing.worker_limit = None
    settings.queueing.idle_timeout = 0.1


def build_registry(controller: Controller) -> kopf.OperatorRegistry:
    """kopf's handlers for ``controller``: the registry is all kopf needs, so the same
    operator runs under ``kopf.run`` (cli.py) or ``kopf.testing.KopfRunner`` (tests)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has none of kopf's default login handlers: same order as
        # pinster_images.kube (service account when mounted, else the kubeconfig).
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry, errors=kopf.ErrorsMode.PERMANENT)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)
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
        logging.getLogger("pinster_operator").info(
            "operator started",
            extra={
                "namespaces": list(controller.settings.namespaces) or "all",
                "batch_window": controller.settings.batch.window,
                "batch_max": controller.settings.batch.max_size,
            },
        )

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def upload_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.observe(event.get("type"), cast(Body, event["object"]))

    @kopf.on.event("batch", "v1", "jobs", registry=registry)
    async def job_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.job_event(event.get("type"), cast(Body, event["object"]))

    @kopf.on.event("v1", "pods", registry=registry)
    async def job_pod_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.job_pod_event(event.get("type"), cast(Body, event["object"]))

    @kopf.on.probe(registry=registry, id="health")
    def health(**_: Any) -> dict[str, Any]:
        return health_report(controller)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await controller.stop()

    return registry


def health_report(controller: Controller) -> dict[str, Any]:
    """Queue depth, timers and the seconds since the last event of each kind; raises
    kopf.PermanentError (kopf's health endpoint answers 500, the probe fails) when the
    scheduler has died."""
    if controller.scheduler is None or controller.scheduler.done():
        raise kopf.PermanentError(
            "the scheduler has stopped: timed retries, polls and TTLs would not run"
        )
    now = time.monotonic()
    return {
        "queue": controller.queue.depth,
        "timers": controller.queue.timers,
        "last_event": {kind: round(now - at, 1) for kind, at in controller.last_event.items()},
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
