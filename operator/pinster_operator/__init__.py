"""The ImageUpload operator (kopf): moderation and thumbnail Jobs, notifications, clean-up.

Public surface; the modules behind it are private (``_name.py``).
"""

from pinster_operator._batching import Batcher, Plan, plan
from pinster_operator._controller import Controller
from pinster_operator._jobs import JobState, UploadRef, build_job, job_state, upload_label
from pinster_operator._machine import Action, Decision, Facts, NotifyOutcome, after_notify, decide
from pinster_operator._notify import approved_body, backoff_delay, flagged_body
from pinster_operator._settings import (
    AdoptionSettings,
    BatchSettings,
    CleanupSettings,
    JobSettings,
    NotifySettings,
    OperatorSettings,
)
from pinster_operator._sweep import SweepSummary

__all__ = [
    "Action",
    "AdoptionSettings",
    "BatchSettings",
    "Batcher",
    "CleanupSettings",
    "Controller",
    "Decision",
    "Facts",
    "JobSettings",
    "JobState",
    "NotifyOutcome",
    "NotifySettings",
    "OperatorSettings",
    "Plan",
    "SweepSummary",
    "UploadRef",
    "after_notify",
    "approved_body",
    "backoff_delay",
    "build_job",
    "decide",
    "flagged_body",
    "job_state",
    "plan",
    "upload_label",
]
