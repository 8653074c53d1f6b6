"""Prometheus metrics of the operator (served on ``PINSTER_METRICS_PORT``)."""

from __future__ import annotations

import threading
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pinster_images.resource import Phase
from pinster_operator._status import Status, parse_time

PHASE_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """One registry per instance, so tests can make as many as they like."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.uploads = Gauge(
            "pinster_uploads",
            "ImageUploads known to the operator, by phase.",
            ["phase"],
            registry=self.registry,
        )
        self.phase_seconds = Histogram(
            "pinster_phase_duration_seconds",
            "Time an ImageUpload spent in a phase before leaving it.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=self.registry,
        )
        self.jobs_launched = Counter(
            "pinster_jobs_launched",
            "Jobs created, by stage.",
            ["stage"],
            registry=self.registry,
        )
        self.jobs_failed = Counter(
            "pinster_jobs_failed",
            "Jobs that failed for an upload, by stage.",
            ["stage"],
            registry=self.registry,
        )
        self.notifications = Counter(
            "pinster_notifications",
            "Notifications sent, by kind (approved, flagged, sns) and outcome (sent, failed).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.reconciles = Counter(
            "pinster_reconciles",
            "Reconciles run, by result: done, requeued (a timed look again) or error.",
            ["result"],
            registry=self.registry,
        )
        for result in ("done", "requeued", "error"):
            self.reconciles.labels(result)
        self.result_reads = Counter(
            "pinster_result_reads",
            "GETs of stage results from the object store, by source: a Job's bundle (all "
            "its uploads at once) or one upload's record.",
            ["source"],
            registry=self.registry,
        )
        for source in ("bundle", "record"):
            self.result_reads.labels(source)
        self._phases: dict[tuple[str, str], str] = {}
        self._phases_lock = threading.Lock()
        for phase in Phase:
            self.uploads.labels(phase.value).set(0)

    def observe(self, key: tuple[str, str], phase: str | None) -> None:
        """Track the phase of one upload (None: it is gone). Called from the event loop
        and from worker threads."""
        with self._phases_lock:
            old = self._phases.pop(key, None)
            if old is not None:
                self.uploads.labels(old).dec()
            if phase is not None:
                self._phases[key] = phase
                self.uploads.labels(phase).inc()

    def transition(self, old: Status, new: Status, now: datetime) -> None:
        """Record how long ``old``'s phase lasted when ``new`` left it."""
        before, after = old.get("phase"), new.get("phase")
        if not before or before == after:
            return
        history = old.get("phaseHistory") or []
        started = parse_time(history[-1].get("enteredAt")) if history else None
        if started is not None:
            self.phase_seconds.labels(before).observe(max(0.0, (now - started).total_seconds()))

    def serve(self, host: str, port: int) -> None:
        if port > 0:
            start_http_server(port, addr=host, registry=self.registry)
