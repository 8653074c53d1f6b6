"""The chart, checked without a cluster: lint, render every values file, schema, CRD source,
pod security, and that the settings it sets are the ones the code reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pinster_images import keys
from tests.support.helm import CHART, ROOT, helm, render
from tests.support.operator_units import spec as upload_spec
from tests.support.rbac import PACKAGES, WITHOUT_API, calls_of, granted_by, role_rules

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def pod_specs(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = []
    for doc in documents:
        if doc["kind"] in ("Deployment", "Job"):
            specs.append(doc["spec"]["template"]["spec"])
        elif doc["kind"] == "Pod":
            specs.append(doc["spec"])
    return specs


def test_lint_strict_passes_with_defaults_and_every_ci_values_file() -> None:
    helm("lint", "--strict", str(CHART))
    for values in CI_VALUES:
        helm("lint", "--strict", str(CHART), "-f", str(values))


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_every_pod_runs_restricted_with_an_explicit_command(values: Path | None) -> None:
    documents = render(*(["-f", str(values)] if values else []))
    specs = pod_specs(documents)
    assert specs, "no pod rendered"
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            # The devcluster node runs commands, not images' entrypoints.
            assert container["command"], container["name"]


def test_schema_rejects_unknown_keys_at_every_level() -> None:
    for setting in ("unknown=1", "ingress.unknown=1", "storage.s3.bucket=x"):
        result = helm("template", "t", str(CHART), "--set", setting, check=False)
        assert result.returncode != 0
        assert "additional properties" in result.stderr


def test_schema_rejects_a_bad_thumbnail_size_and_backend() -> None:
    for setting in ("config.thumbnailSizes={0x10}", "moderation.backend=magic"):
        assert helm("template", "t", str(CHART), "--set", setting, check=False).returncode != 0


def test_the_crd_is_the_one_in_crds_and_is_kept_on_uninstall() -> None:
    source = yaml.safe_load((ROOT / "crds" / "imageuploads.images.pinster.io.yaml").read_text())
    (crd,) = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not [
        d for d in render("--set", "crds.enabled=false") if d["kind"] == "CustomResourceDefinition"
    ]


def test_the_operator_is_a_single_replica_recreated_never_doubled() -> None:
    (operator,) = [
        d
        for d in render()
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    ]
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"]["type"] == "Recreate"
    probe = operator["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    assert probe["httpGet"]["port"] == "health"


def _settings_read_by_code() -> set[str]:
    names: set[str] = set()
    for folder in ("src", "ingress", "operator", "jobs"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(re.findall(r'"(PINSTER_[A-Z0-9_]+)"', path.read_text()))
    return names


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_every_setting_the_chart_sets_is_read_by_the_code(values: Path | None) -> None:
    documents = render(*(["-f", str(values)] if values else []))
    known = _settings_read_by_code()
    set_by_chart: set[str] = set()
    for doc in documents:
        if doc["kind"] == "ConfigMap":
            set_by_chart.update(k for k in doc["data"] if k.startswith("PINSTER_"))
    for spec in pod_specs(documents):
        for container in spec["containers"]:
            set_by_chart.update(
                e["name"] for e in container.get("env", []) if e["name"].startswith("PINSTER_")
            )
    # The helm test pod's signing key is read by the upload client.
    assert set_by_chart - known == set()
    assert {"PINSTER_SERVICE_URL", "PINSTER_API_URL", "PINSTER_STORAGE_BACKEND"} <= set_by_chart


def test_only_an_operator_of_every_namespace_is_cluster_wide() -> None:
    def scopes(*args: str) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for d in render("--namespace", "rel", *args):
            if d["kind"] in ("Role", "ClusterRole"):
                name = d["metadata"]["name"].removeprefix("t-pinster-images-")
                found.setdefault(name, set()).add(d["metadata"].get("namespace", "*cluster*"))
        return found

    assert scopes() == {"operator": {"*cluster*"}, "ingress": {"rel"}}
    listed = scopes("--set", "operator.watchNamespaces={rel,b}")
    assert listed == {"operator": {"rel", "b"}, "ingress": {"rel"}}


def test_rbac_grants_each_role_only_what_it_uses() -> None:
    roles = role_rules(render())
    ingress = roles["t-pinster-images-ingress"]
    assert ingress == [
        {
            "apiGroups": ["images.pinster.io"],
            "resources": ["imageuploads"],
            "verbs": ["get", "create"],
        },
        # Rejections of directly stored objects: reported, and read back for status.
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]},
    ]
    # The Job pods: no role, and no token in them (their uploads come in the Job).
    assert "t-pinster-images-jobs" not in roles
    (jobs,) = [
        d
        for d in render()
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "t-pinster-images-jobs"
    ]
    assert jobs["automountServiceAccountToken"] is False
    operator = roles["t-pinster-images-operator"]
    assert any(r["resources"] == ["imageuploads/status"] for r in operator)


@pytest.mark.parametrize("role", sorted(PACKAGES))
def test_rbac_grants_exactly_the_calls_each_role_makes(role: str) -> None:
    """A call added to a role without its rule fails here (and on the devcluster, where
    the pods run under these service accounts); a rule nothing uses fails here too."""
    granted = granted_by(role_rules(render()).get(f"t-pinster-images-{role}", []))
    used = calls_of(role)
    if role not in WITHOUT_API:
        assert used, f"no Kubernetes calls found in {PACKAGES[role]}: is the pattern stale?"
    assert used - granted == set(), "used but not granted"
    assert granted - used == set(), "granted but never used"


def test_nothing_cluster_wide_when_namespaces_are_listed() -> None:
    """kopf scans nothing (settings.scanning.disabled): no CRD or namespace watch, so a
    release that watches listed namespaces has no ClusterRole at all."""
    listed = render("--set", "operator.watchNamespaces={default,b}")
    assert [d["metadata"]["name"] for d in listed if d["kind"].startswith("Cluster")] == []
    assert [d["metadata"]["name"] for d in render() if d["kind"].startswith("Cluster")] == [
        "t-pinster-images-operator",
        "t-pinster-images-operator",
    ]  # the ClusterRole and its binding, for an operator of every namespace
    everywhere = render()
    rules = [r for d in everywhere if d["kind"] == "ClusterRole" for r in d["rules"]]
    assert not {"customresourcedefinitions", "namespaces"} & {
        resource for rule in rules for resource in rule["resources"]
    }


# -- the rendered environment satisfies each role's settings --------------------------

_PRIVATE_PEM = keys.generate_private_key().decode()
_PUBLIC_PEM = keys.public_key_of(_PRIVATE_PEM.encode()).decode()
#: Values that name the Secrets a real install would have (the defaults name none).
_WITH_SECRETS = (
    "--set", "auth.apiPublicKey.secretName=api-key",
    "--set", "auth.servicePrivateKey.secretName=signing-key",
    "--set", "tests.enabled=true",
    "--set", "tests.signingKey.secretName=test-key",
)  # fmt: skip


def _resolve(container: dict[str, Any], configmaps: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment the kubelet would give ``container``: envFrom ConfigMaps, then env
    with fieldRefs, Secret keys (a PEM of the right kind) and ``$(VAR)`` expansion."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
        elif "fieldRef" in item["valueFrom"]:
            value = {
                "metadata.name": "pod-0",
                "metadata.namespace": "default",  # `helm template`'s release namespace
                "status.podIP": "127.1.0.9",
            }[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            key = item["valueFrom"]["secretKeyRef"]["key"]
            value = _PUBLIC_PEM if key.endswith(".pub") else _PRIVATE_PEM
        env[item["name"]] = value
    return env


def _containers(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for spec in pod_specs(documents):
        for container in spec["containers"]:
            found[container["name"]] = container
    return found


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_each_role_starts_from_the_environment_the_chart_gives_it(
    values: Path | None, tmp_path: Path
) -> None:
    """Every role's settings object is built from the rendered env, as at start-up: a
    required variable the chart forgets, or a malformed one, raises ConfigError here.
    The Job pods' env is followed through the operator's own Job builder."""
    from pinster_ingress import IngressSettings
    from pinster_jobs._settings import JobSettings as JobPodSettings
    from pinster_operator import OperatorSettings, UploadRef, build_job

    from pinster_images.resource import Stage

    args = [*(["-f", str(values)] if values else []), *_WITH_SECRETS]
    documents = render(*args)
    configmaps = {d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "ConfigMap"}
    containers = _containers(documents)
    assert {"operator", "ingress", "upload"} <= set(containers)

    ingress = IngressSettings.from_env(_resolve(containers["ingress"], configmaps))
    assert ingress.auth.public_key or ingress.auth.jwks

    operator_env = _resolve(containers["operator"], configmaps)
    operator = OperatorSettings.from_env(operator_env)
    assert operator.notify.private_key
    job = build_job(
        operator.jobs, Stage.THUMBNAIL, [UploadRef("default", "img-1", "uid-1", upload_spec())]
    )
    (job_container,) = job["spec"]["template"]["spec"]["containers"]
    assert job_container["command"][0] == "pinster-images"
    job_env = _resolve(job_container, configmaps)
    # The Job pod sees the operator's storage and moderation settings, never its key.
    pod_settings = JobPodSettings.from_env(job_env)
    assert pod_settings.storage == operator.storage
    assert "PINSTER_SERVICE_PRIVATE_KEY" not in job_env
    assert job["spec"]["template"]["spec"]["serviceAccountName"].endswith("-jobs")


# -- schema and documentation cover every value -----------------------------------------

#: Values whose content is a Kubernetes object or map passed through as is.
_OPAQUE = ("resources", "volume", "nodeSelector", "affinity", "labels", "SecurityContext")


def _value_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node and not prefix.endswith(_OPAQUE):
        return [p for k, v in node.items() for p in _value_paths(v, f"{prefix}.{k}".lstrip("."))]
    return [prefix]


def test_the_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path or "/")
            for key, child in node.items():
                walk(child, f"{path}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{path}/{index}")

    walk(schema, "")
    assert open_objects == []


def test_every_value_is_in_the_schema_and_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    doc = (ROOT / "docs" / "chart.md").read_text()
    undocumented, unschema = [], []
    for path in _value_paths(values):
        node = schema
        for part in path.split("."):
            node = node.get("properties", {}).get(part)
            if node is None:
                unschema.append(path)
                break
        prefix, _, last = path.rpartition(".")
        combined = any(f"`{prefix}." in line and f"`.{last}`" in line for line in doc.splitlines())
        if f"`{path}`" not in doc and not combined:
            undocumented.append(path)
    assert unschema == []
    assert undocumented == [], "add these to docs/chart.md"


def _ingress_env(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [
        d
        for d in documents
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ingress")
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_direct_uploads_are_off_by_default() -> None:
    documents = render()
    assert "PINSTER_DIRECT_UPLOADS" not in _ingress_env(documents)
    assert not [d for d in documents if d["kind"] == "Secret"]


def test_direct_uploads_get_a_token_secret_of_their_own_or_the_users() -> None:
    documents = render(
        "--set", "directUploads.enabled=true", "--set", "directUploads.clientUrl=https://s3.example"
    )
    env = _ingress_env(documents)
    assert env["PINSTER_DIRECT_UPLOADS"] == "true"
    assert env["PINSTER_DIRECT_UPLOAD_EXPIRES"] == "300"
    assert env["PINSTER_S3_DIRECT_URL"] == "https://s3.example"
    ref = env["PINSTER_STORAGE_EVENTS_TOKEN"]["secretKeyRef"]
    (secret,) = [d for d in documents if d["kind"] == "Secret"]
    assert ref == {"name": secret["metadata"]["name"], "key": "token"}
    assert len(secret["data"]["token"]) >= 40
    own = render(
        "--set", "directUploads.enabled=true",
        "--set", "directUploads.eventsToken.secretName=mine",
        "--set", "directUploads.eventsToken.key=t",
    )  # fmt: skip
    assert _ingress_env(own)["PINSTER_STORAGE_EVENTS_TOKEN"]["secretKeyRef"] == {
        "name": "mine",
        "key": "t",
    }
    assert not [d for d in own if d["kind"] == "Secret"]


def test_watched_namespaces_must_hold_the_release_namespace() -> None:
    """The upload service creates ImageUploads in the release namespace: an operator
    that does not watch it would never process them."""
    result = helm(
        "template", "t", str(CHART), "--namespace", "pinster",
        "--set", "operator.watchNamespaces={a,b}",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "operator.watchNamespaces" in result.stderr and "pinster" in result.stderr
