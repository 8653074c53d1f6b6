"""Prometheus metrics: uploads by phase and time spent in each phase."""

from __future__ import annotations

from datetime import UTC, datetime

from pinster_operator._metrics import Metrics
from prometheus_client import generate_latest


def test_uploads_by_phase_follow_each_upload() -> None:
    m = Metrics()
    m.observe(("ns", "a"), "Pending")
    m.observe(("ns", "b"), "Pending")
    m.observe(("ns", "a"), "Moderating")
    m.observe(("ns", "b"), None)
    text = generate_latest(m.registry).decode()
    assert 'pinster_uploads{phase="Pending"} 0.0' in text
    assert 'pinster_uploads{phase="Moderating"} 1.0' in text


def test_time_in_phase_is_observed_when_leaving_it() -> None:
    m = Metrics()
    old = {
        "phase": "Moderating",
        "phaseHistory": [{"phase": "Moderating", "enteredAt": "2026-01-01T00:00:00Z"}],
    }
    m.transition(old, {"phase": "Thumbnailing"}, datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC))
    m.transition(old, dict(old), datetime(2026, 1, 1, 0, 0, 9, tzinfo=UTC))  # no change: nothing
    text = generate_latest(m.registry).decode()
    assert 'pinster_phase_duration_seconds_count{phase="Moderating"} 1.0' in text
    assert 'pinster_phase_duration_seconds_sum{phase="Moderating"} 3.0' in text
