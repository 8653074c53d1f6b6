"""The distribution as the container image holds it.

No container engine exists here, so instead of `docker build` this builds the wheel and
installs it into a fresh virtual environment the way the Dockerfile's stages do (build the
wheel, `python -m venv`, `pip install <wheel>`), then runs every role from that venv: its
`--help`, and a smoke command that exercises the role's real code path without a cluster.
Nothing from the repository's source tree is importable there (PYTHONPATH is cleared and
the working directory is elsewhere), so a module missing from the wheel fails here.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from pinster_images import keys
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("ingress", "operator", "job", "upload", "keys", "devcluster")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    home: Path

    @property
    def cli(self) -> Path:
        return self.venv / "bin" / "pinster-images"

    def env(self, **extra: str) -> dict[str, str]:
        # The image's environment: the venv first on PATH, HOME=/tmp, no source tree.
        env = {
            "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.home),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(extra)
        return env

    def run(
        self, *args: str, timeout: float = 120, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.cli), *args],
            capture_output=True,
            text=True,
            env=self.env(**extra),
            cwd=self.home,
            timeout=timeout,
            check=False,
        )


def build_context(target: Path) -> Path:
    """The files the Dockerfile's build stage copies (its ``COPY <src> <dest>`` lines before
    the first ``COPY --from``), and nothing else: a path the wheel needs but the Dockerfile
    forgets fails the build here, as it would in ``docker build``."""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY --from"):
            break
        if not line.startswith("COPY "):
            continue
        *sources, dest = line.split()[1:]
        for source in sources:
            into = target / dest / Path(source).name if dest.endswith("/") else target / dest
            into.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, into, symlinks=True)
            else:
                shutil.copy2(ROOT / source, into)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("package")
    dist = base / "dist"
    context = build_context(base / "context")
    # Stage "build": a PEP 517 build of the wheel from the Dockerfile's build context.
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(context)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("pinster_images-*.whl")
    # Stage "venv": a fresh virtual environment holding only the wheel and its dependencies.
    venv = base / "opt-pinster"
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    home = base / "tmp"
    home.mkdir()
    return Installed(wheel, venv, home)


def test_the_wheel_holds_every_role_package_and_the_crd(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for package in ("pinster_images", "pinster_ingress", "pinster_operator", "pinster_jobs"):
        assert f"{package}/__init__.py" in names, package
    assert "pinster_images/crds/imageuploads.images.pinster.io.yaml" in names
    assert "pinster_images/py.typed" in names
    # Tests and repository tooling stay out of the image.
    assert not [n for n in names if n.startswith(("tests/", "charts/", "bench/"))]


def test_nothing_comes_from_the_source_tree(installed: Installed) -> None:
    probe = (
        "import pinster_images, pinster_ingress, pinster_operator, pinster_jobs;"
        "print(pinster_images.__file__, pinster_ingress.__file__,"
        " pinster_operator.__file__, pinster_jobs.__file__)"
    )
    result = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        env=installed.env(),
        cwd=installed.home,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for path in result.stdout.split():
        assert path.startswith(str(installed.venv)), path


@pytest.mark.parametrize("role", ROLES)
def test_every_role_answers_help(installed: Installed, role: str) -> None:
    result = installed.run(role, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"pinster-images {role}" in result.stdout


def test_the_top_level_help_lists_every_role(installed: Installed) -> None:
    result = installed.run("--help")
    assert result.returncode == 0
    for role in ROLES:
        assert f"  {role} " in result.stdout
    assert installed.run("--version").stdout.strip() == "0.1.0"
    assert installed.run("no-such-role").returncode == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unreachable_kubeconfig(directory: Path) -> Path:
    """A kubeconfig naming a closed local port: the roles start, the API is just down."""
    path = directory / "kubeconfig"
    server = f"https://127.0.0.1:{_free_port()}"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


@pytest.fixture
def key_dir(installed: Installed, tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    result = installed.run("keys", "generate", str(directory))
    assert result.returncode == 0, result.stderr
    return directory


def test_keys_generate_writes_both_pairs(installed: Installed, key_dir: Path) -> None:
    for name in (keys.API_PRIVATE, keys.API_PUBLIC, keys.SERVICE_PRIVATE, keys.SERVICE_PUBLIC):
        assert (key_dir / name).read_bytes().startswith(b"-----BEGIN")
    assert oct((key_dir / keys.API_PRIVATE).stat().st_mode & 0o777) == "0o600"


@pytest.fixture
def ingress_url(installed: Installed, key_dir: Path, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "ingress.log").open("w")
    process = subprocess.Popen(
        [str(installed.cli), "ingress", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=installed.env(
            PINSTER_SERVICE_URL="http://images.test",
            PINSTER_API_URL="http://api.test",
            PINSTER_API_PUBLIC_KEY=base64.b64encode(
                (key_dir / keys.API_PUBLIC).read_bytes()
            ).decode(),
            PINSTER_STORAGE_BACKEND="local",
            PINSTER_STORAGE_DIR=str(tmp_path / "storage"),
            PINSTER_NAMESPACE="default",
            PINSTER_LOG_FORMAT="json",
            KUBECONFIG=str(_unreachable_kubeconfig(tmp_path)),
        ),
        cwd=installed.home,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert process.poll() is None, (tmp_path / "ingress.log").read_text()
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200

        wait_for(healthy, 60, interval=0.2, what="the installed ingress to serve /healthz")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_ingress_serves_the_original_contract(ingress_url: str, key_dir: Path) -> None:
    # Readiness tells the truth: storage works, the API server is down.
    ready = requests.get(f"{ingress_url}/readyz", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["checks"]["storage"] == "ok"
    # No token: 401; a valid token without an image: the original 400 body.
    assert requests.post(ingress_url, json={}, timeout=10).status_code == 401
    token = keys.mint(
        (key_dir / keys.API_PRIVATE).read_bytes(),
        issuer="http://api.test",
        audience="http://images.test",
        claims={"user_id": "u", "imageable_type": "Pin", "imageable_id": "1"},
        ttl=60,
    )
    missing = requests.post(
        ingress_url, json={"data": {}}, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert missing.status_code == 400
    assert missing.json()["error"] == "Bad Request. Required fields are missing."
    assert "PINSTER_MAX_BYTES" in requests.get(f"{ingress_url}/openapi.json", timeout=10).text
    assert "# HELP" in requests.get(f"{ingress_url}/metrics", timeout=10).text


def test_operator_refuses_to_start_without_its_signing_key(
    installed: Installed, tmp_path: Path
) -> None:
    started = time.monotonic()
    result = installed.run(
        "operator",
        timeout=60,
        PINSTER_SERVICE_URL="http://images.test",
        PINSTER_API_URL="http://api.test",
        PINSTER_STORAGE_BACKEND="local",
        PINSTER_STORAGE_DIR=str(tmp_path / "storage"),
        KUBECONFIG=str(_unreachable_kubeconfig(tmp_path)),
    )
    assert result.returncode != 0
    assert "PINSTER_SERVICE_PRIVATE_KEY" in result.stdout + result.stderr
    assert time.monotonic() - started < 60


def test_a_job_with_the_api_down_asks_for_a_retry(installed: Installed, tmp_path: Path) -> None:
    """The thumbnail role loads its engine and storage, cannot read the spec, and exits
    with the temporary-failure status so the Job's backoffLimit retries it."""
    termination = tmp_path / "termination-log"
    result = installed.run(
        "job",
        "thumbnail",
        "--namespace",
        "default",
        "iu-0123456789abcdef",
        timeout=120,
        PINSTER_STORAGE_BACKEND="local",
        PINSTER_STORAGE_DIR=str(tmp_path / "storage"),
        PINSTER_MODERATION_BACKEND="none",
        TERMINATION_MESSAGE_PATH=str(termination),
        KUBECONFIG=str(_unreachable_kubeconfig(tmp_path)),
    )
    assert result.returncode == 75, result.stdout + result.stderr
    assert termination.read_text().strip()


def test_the_installed_venv_has_no_build_tools_dependency(installed: Installed) -> None:
    """The runtime needs neither hatchling nor the dev extras: the final stage has none."""
    listed = subprocess.run(
        [str(installed.venv / "bin" / "pip"), "list", "--format=json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        timeout=60,
        check=True,
    )
    names = {entry["name"].lower() for entry in json.loads(listed.stdout)}
    assert {"kopf", "kubernetes", "boto3", "pillow", "uvicorn"} <= names
    assert not names & {"hatchling", "pytest", "moto", "ruff", "mypy"}
