"""What each role of the chart may do, from two sides: the rules the chart renders, and
the Kubernetes calls each role's code makes (plus what kopf does for the operator).
tests/unit/test_chart_render.py compares the two; tests/integration/test_rbac.py asks
the real API server whether each role's service account may make each call."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: Kubernetes client calls in each role's code -> (resource, verb) the API server checks.
CALL = re.compile(
    r"\.(create|get|read|list|patch|replace|delete)_(?:namespaced|cluster)_"
    r"(custom_object_status|custom_object|job|pod|event)\("
)
VERB = {"read": "get", "replace": "update"}
RESOURCE = {
    "custom_object": "imageuploads",  # the only custom resource this product has
    "custom_object_status": "imageuploads/status",
    "job": "jobs",
    "pod": "pods",
    "event": "events",
}
PACKAGES = {
    "operator": "operator/pinster_operator",
    "ingress": "ingress/pinster_ingress",
    "jobs": "jobs/pinster_jobs",
}
#: Roles whose code makes no Kubernetes call: no rules, and pods without a token (a Job
#: is told its uploads in PINSTER_UPLOADS).
WITHOUT_API = {"jobs"}
#: What kopf itself does for the operator, beyond the calls in our code: its event
#: handlers list and watch ImageUploads, our Jobs and their pods. Nothing else (no progress
#: annotations to patch, no Events of its own, no CRD or namespace scanning).
KOPF = {
    ("imageuploads", "list"),
    ("imageuploads", "watch"),
    ("jobs", "list"),
    ("jobs", "watch"),
    ("pods", "list"),
    ("pods", "watch"),
}


def calls_of(role: str) -> set[tuple[str, str]]:
    """(resource, verb) of every Kubernetes call the role makes (kopf's too)."""
    used: set[tuple[str, str]] = set()
    for path in (ROOT / PACKAGES[role]).rglob("*.py"):
        for verb, thing in CALL.findall(path.read_text()):
            used.add((RESOURCE[thing], VERB.get(verb, verb)))
    return used | (KOPF if role == "operator" else set())


def granted_by(rules: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}


def role_rules(documents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rules by role name, from ClusterRoles and Roles (a Role has the same rules in each
    namespace it is made in)."""
    return {d["metadata"]["name"]: d["rules"] for d in documents if d["kind"].endswith("Role")}
