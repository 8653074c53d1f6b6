"""How a Job pod reads its uploads' specs: plain GETs (no kubernetes client import), the
answers mapped to a spec, "gone" or a retry. A local HTTP server stands in for the API
server's one route; the Job pods on the devcluster's node read from the real one."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import urllib3
from pinster_jobs import KubeSpecs, Upload

from pinster_images import kube
from pinster_images.errors import TemporaryError
from pinster_images.resource import GROUP, PLURAL, VERSION, ImageUploadSpec, Uploader

SPEC = ImageUploadSpec(
    md5="0" * 32,
    bucket="uploads",
    key="raw/" + "0" * 32,
    content_type="image/png",
    byte_size=10,
    width=1,
    height=1,
    uploader=Uploader("7", "Pin", "1"),
)
BODY = json.dumps({"metadata": {"uid": "u-1"}, "spec": SPEC.to_dict()}).encode()
PATH = f"/apis/{GROUP}/{VERSION}/namespaces/team/{PLURAL}/"


@dataclass
class ApiRoute:
    """Answers GET ``PATH + name`` from ``answers`` (name -> status, body) and records
    the Authorization header of each request."""

    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def route() -> Iterator[ApiRoute]:
    state = ApiRoute()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append((self.path, self.headers.get("Authorization")))
            status, body = state.answers.get(self.path.removeprefix(PATH), (404, b"{}"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def reader(url: str, token: str | None = "t0k3n") -> kube.ApiReader:
    return kube.ApiReader(url, urllib3.PoolManager(retries=False), lambda: token)


def test_a_spec_is_read_with_the_token(route: ApiRoute) -> None:
    route.answers["one"] = (200, BODY)
    assert KubeSpecs(reader(route.url)).get("team", "one") == Upload("u-1", SPEC)
    assert route.seen == [(PATH + "one", "Bearer t0k3n")]


def test_no_token_sends_no_authorization(route: ApiRoute) -> None:
    route.answers["one"] = (200, BODY)
    KubeSpecs(reader(route.url, token=None)).get("team", "one")
    assert route.seen == [(PATH + "one", None)]


def test_a_deleted_upload_is_gone(route: ApiRoute) -> None:
    assert KubeSpecs(reader(route.url)).get("team", "deleted") is None


@pytest.mark.parametrize("status", [403, 500, 503])
def test_other_answers_are_retried_with_the_status(route: ApiRoute, status: int) -> None:
    route.answers["one"] = (status, b"{}")
    with pytest.raises(TemporaryError) as raised:
        KubeSpecs(reader(route.url)).get("team", "one")
    assert raised.value.reason == "ApiUnavailable"
    assert f"reading ImageUpload team/one: API server answered {status}" in raised.value.message


def test_an_unreachable_api_server_is_retried() -> None:
    with pytest.raises(TemporaryError) as raised:
        KubeSpecs(reader("http://127.0.0.1:9")).get("team", "one")
    assert raised.value.reason == "ApiUnavailable"


def test_the_kubeconfig_token_is_sent_without_its_scheme(tmp_path: Path, route: ApiRoute) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": route.url}}],
        "users": [{"name": "u", "user": {"token": "from-kubeconfig"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    route.answers["one"] = (200, BODY)
    assert KubeSpecs(kube.ApiReader.connect(str(path))).get("team", "one") == Upload("u-1", SPEC)
    assert route.seen == [(PATH + "one", "Bearer from-kubeconfig")]


def test_a_job_process_never_imports_the_kubernetes_client() -> None:
    probe = (
        "import sys; from pinster_jobs import cli; from pinster_images.cli import COMMANDS; "
        "print('kubernetes' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
