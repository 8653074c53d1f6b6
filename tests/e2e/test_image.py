"""The product's image as users get it: built from the Dockerfile by BuildKit, pushed to
the node's registry, pulled and run by the kubelet. What is checked runs inside it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from tests.support.pods import RESTRICTED_CONTAINER, pod_manifest, run_to_completion

ROLES = ("ingress", "operator", "job", "upload", "keys", "devcluster")

#: Runs in the image; prints one JSON object of what it found.
SURVEY = r"""
import importlib.metadata as md, importlib.util, json, os, shutil, subprocess, sys

def run(*argv, **env):
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    return {"code": done.returncode, "out": done.stdout, "err": done.stderr}

roles = sys.argv[1:]
out = {
    "uid": os.getuid(),
    "gid": os.getgid(),
    "help": {role: run("pinster-images", role, "--help") for role in roles},
    "top": run("pinster-images", "--help"),
    "unknown": run("pinster-images", "no-such-role")["code"],
    "head": run("sh", "-c", "pinster-images --help | head -1; pinster-images upload --help | head -c 10"),
    "modules": {
        name: importlib.util.find_spec(name).origin
        for name in ("pinster_images", "pinster_ingress", "pinster_operator", "pinster_jobs")
    },
    "crd": os.path.exists(os.path.join(os.path.dirname(importlib.util.find_spec("pinster_images").origin), "crds", "imageuploads.images.pinster.io.yaml")),
    "distributions": sorted(d.metadata["Name"].lower() for d in md.distributions()),
    "tools": {t: shutil.which(t) for t in ("gcc", "cc", "make", "pip", "pip3", "git")},
    "keys": run("pinster-images", "keys", "generate", "/tmp/keys"),
    "key_files": sorted(os.listdir("/tmp/keys")) if os.path.isdir("/tmp/keys") else [],
    "operator_without_key": run(
        "pinster-images", "operator",
        PINSTER_SERVICE_URL="http://images.test", PINSTER_API_URL="http://api.test",
        PINSTER_STORAGE_BACKEND="s3", PINSTER_S3_UPLOAD_BUCKET="u", PINSTER_S3_PUBLIC_BUCKET="p",
        PINSTER_POD_NAMESPACE="pinster",  # the chart's downward API: all it has but the key
    ),
}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def survey(
    kube_api: Any, product_image: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One Pod of the image, as the chart runs it, reporting on itself."""
    namespace = f"image-survey-{product_image.digest[7:17]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        manifest = pod_manifest("survey", product_image.pinned, ["python3", "-c", SURVEY, *ROLES])
        # The image's own user, not the chart's: USER 65532 must be in the image.
        del manifest["spec"]["securityContext"]["runAsUser"]
        del manifest["spec"]["securityContext"]["runAsGroup"]
        code, logs = run_to_completion(kube_api, namespace, manifest, timeout=180)
        assert code == 0, logs
        found: dict[str, Any] = json.loads(logs.strip().splitlines()[-1])
        return found
    finally:
        core.delete_namespace(namespace)


def test_the_image_runs_as_65532_by_its_own_user(survey: dict[str, Any]) -> None:
    assert (survey["uid"], survey["gid"]) == (65532, 65532)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_answers_help(survey: dict[str, Any], role: str) -> None:
    answered = survey["help"][role]
    assert answered["code"] == 0, answered
    assert f"pinster-images {role}" in answered["out"]


def test_the_top_level_help_lists_every_role_and_pipes_cleanly(survey: dict[str, Any]) -> None:
    assert survey["top"]["code"] == 0
    for role in ROLES:
        assert f"  {role} " in survey["top"]["out"]
    assert survey["unknown"] == 2
    assert survey["head"]["out"].startswith("usage: pinster-images")
    assert "BrokenPipeError" not in survey["head"]["err"], survey["head"]["err"]


def test_the_code_comes_from_the_installed_wheel(survey: dict[str, Any]) -> None:
    for module, origin in survey["modules"].items():
        assert origin.startswith("/opt/pinster/lib/"), (module, origin)
    assert survey["crd"] is True


def test_the_final_image_has_no_build_tools(survey: dict[str, Any]) -> None:
    assert {tool: path for tool, path in survey["tools"].items() if path} == {}
    installed = set(survey["distributions"])
    assert {"pinster-images", "kopf", "kubernetes", "boto3", "pillow", "uvicorn"} <= installed
    assert not installed & {"hatchling", "build", "pip", "pytest", "moto", "ruff", "mypy"}


def test_keys_generate_works_on_the_read_only_image(survey: dict[str, Any]) -> None:
    assert survey["keys"]["code"] == 0, survey["keys"]
    assert survey["key_files"] == sorted(
        ["image-service.key", "image-service.pub", "pinster-api.key", "pinster-api.pub"]
    )


def test_the_operator_refuses_to_start_without_its_signing_key(survey: dict[str, Any]) -> None:
    refused = survey["operator_without_key"]
    assert refused["code"] != 0
    assert "PINSTER_SERVICE_PRIVATE_KEY" in refused["out"] + refused["err"]


def test_the_entrypoint_is_the_cli(kube_api: Any, namespace: str, product_image: Any) -> None:
    """`docker run IMAGE --version`: arguments go to `pinster-images`."""
    manifest = pod_manifest("version", product_image.pinned, [])
    container = manifest["spec"]["containers"][0]
    del container["command"]
    container["args"] = ["--version"]
    assert container["securityContext"] == RESTRICTED_CONTAINER
    code, logs = run_to_completion(kube_api, namespace, manifest)
    assert (code, logs.strip()) == (0, "0.1.0")
