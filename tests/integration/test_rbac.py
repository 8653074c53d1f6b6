"""Each role's RBAC as the devcluster's API server enforces it: the chart's service
accounts, Roles and bindings applied to a namespace, then a SubjectAccessReview per call
the role's code makes (and kopf makes for the operator). A verb taken out of the chart
fails the role's test here, naming it; a few calls no role should make are refused."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.support.helm import CHART, helm
from tests.support.rbac import PACKAGES, WITHOUT_API, calls_of

RELEASE = "rbac"
#: Calls each role must not be able to make (least privilege, on the API server).
REFUSED = {
    "ingress": {("imageuploads", "delete"), ("imageuploads/status", "update"), ("jobs", "create")},
    "jobs": {("imageuploads", "get"), ("imageuploads", "list"), ("jobs", "create")},
    "operator": {("jobs", "delete"), ("pods", "delete")},
}


@pytest.fixture
def applied(namespace: str, kube_api: Any, kubectl: Any) -> str:
    """The chart's ServiceAccounts, Roles and RoleBindings in ``namespace`` (the
    operator watching it, so every role is namespaced)."""
    rendered = helm(
        "template", RELEASE, str(CHART), "--namespace", namespace,
        "--set", f"operator.watchNamespaces={{{namespace}}}",
    ).stdout  # fmt: skip
    kinds = {"ServiceAccount", "Role", "RoleBinding"}
    wanted = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in kinds]
    assert {d["kind"] for d in wanted} == kinds
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(wanted))
    return namespace


def allowed(kube_api: Any, namespace: str, role: str, resource: str, verb: str) -> bool:
    group = {"imageuploads": "images.pinster.io", "jobs": "batch"}.get(
        resource.split("/", maxsplit=1)[0], ""
    )
    plural, _, subresource = resource.partition("/")
    review = client.AuthorizationV1Api(kube_api).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": f"system:serviceaccount:{namespace}:{RELEASE}-pinster-images-{role}",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                "resourceAttributes": {
                    "namespace": namespace,
                    "group": group,
                    "resource": plural,
                    "subresource": subresource,
                    "verb": verb,
                },
            },
        }
    )
    return bool(review.status.allowed)


@pytest.mark.parametrize("role", sorted(PACKAGES))
def test_each_role_may_make_every_call_its_code_makes_and_no_other(
    role: str, applied: str, kube_api: Any
) -> None:
    used = calls_of(role)
    assert bool(used) != (role in WITHOUT_API), f"calls found for {role}: {sorted(used)}"
    refused = sorted(c for c in used if not allowed(kube_api, applied, role, *c))
    assert refused == [], f"the API server refuses the {role} role: {refused}"
    granted_beyond = sorted(c for c in REFUSED[role] if allowed(kube_api, applied, role, *c))
    assert granted_beyond == [], f"the {role} role may also: {granted_beyond}"
