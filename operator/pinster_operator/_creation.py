"""Job creation: the Jobs for one batch of uploads the batcher (:mod:`._batching`) flushed.

Our Jobs of the stage in the namespace are listed first: an unfinished one that already
serves an upload (after an operator restart, or a status write that was lost) keeps it;
the rest go into new Jobs of at most ``PINSTER_BATCH_MAX`` uploads (:func:`plan`), each
built by :func:`build_job` and created. A Job whose name already exists is found, not
created again. Runs in a thread of its own (``asyncio.to_thread``), never on the loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pinster_images.resource import Stage
from pinster_operator._batching import plan
from pinster_operator._jobs import UploadRef, build_job
from pinster_operator._kube import Kube
from pinster_operator._metrics import Metrics
from pinster_operator._settings import OperatorSettings

logger = logging.getLogger("pinster_operator")


@dataclass
class JobCreator:
    settings: OperatorSettings
    kube: Kube
    metrics: Metrics

    def create_jobs(self, namespace: str, stage: Stage, group: list[UploadRef]) -> dict[str, str]:
        """Create (or find) the Jobs serving ``group``; answers upload name -> Job name."""
        existing = self.kube.list_jobs(namespace, stage)
        decided = plan(group, existing, self.settings.batch.max_size)
        assigned = dict(decided.reuse)
        for batch in decided.batches:
            manifest = build_job(self.settings.jobs, stage, batch)
            name = manifest["metadata"]["name"]
            created = self.kube.create_job(manifest)
            if created:
                self.metrics.jobs_launched.labels(stage.value).inc()
            logger.info(
                "%s %s Job %s for %d upload(s)",
                "created" if created else "found",
                stage.value,
                name,
                len(batch),
                extra={"job": f"{namespace}/{name}", "uploads": [u.name for u in batch]},
            )
            for ref in batch:
                assigned[ref.name] = name
        return assigned
