"""IngressSettings.from_env: every variable, defaults, and errors naming the variable."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pinster_ingress import IngressSettings, TokenVerifier
from pinster_ingress._settings import default_namespace

from pinster_images.errors import ConfigError
from pinster_images.resource import DEFAULT_THUMBNAIL_SIZES
from pinster_images.sniff import ImageLimits
from tests.support import ingress as si
from tests.support.storage import STORAGE_ENV, directory_storage_for_settings

PAIR = si.key_pair()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PINSTER_SERVICE_URL": si.SERVICE_URL,
        "PINSTER_API_URL": si.API_URL,
        "PINSTER_API_PUBLIC_KEY": base64.b64encode(PAIR.public).decode(),
        **STORAGE_ENV,
        **extra,
    }


def test_defaults(tmp_path: Path) -> None:
    settings = IngressSettings.from_env(_env(tmp_path, PINSTER_NAMESPACE="images"))
    assert settings.auth.public_key == PAIR.public
    assert settings.auth.leeway == 10.0
    assert settings.limits == ImageLimits()
    assert settings.thumbnail_sizes == DEFAULT_THUMBNAIL_SIZES
    assert (settings.namespace, settings.port, settings.retry_after) == ("images", 8080, 5)
    assert (settings.workers, settings.keep_alive) == (1, 65)
    assert (settings.storage.upload_bucket, settings.storage.public_bucket) == ("uploads", "public")
    assert settings.storage.endpoint_url is None  # AWS's


def test_every_variable(tmp_path: Path) -> None:
    key_file = tmp_path / "api.pub"
    key_file.write_bytes(PAIR.public)
    env = _env(
        tmp_path,
        PINSTER_API_PUBLIC_KEY="",
        PINSTER_API_PUBLIC_KEY_FILE=str(key_file),
        PINSTER_API_JWKS="https://api.test/.well-known/jwks.json",
        PINSTER_THUMBNAIL_SIZES="400xauto, 64x64",
        PINSTER_MAX_BYTES="1000",
        PINSTER_MAX_PIXELS="2000",
        PINSTER_MAX_FRAMES="3",
        PINSTER_NAMESPACE="ns",
        PINSTER_INGRESS_HOST="127.0.0.1",
        PINSTER_INGRESS_PORT="9000",
        PINSTER_INGRESS_WORKERS="2",
        PINSTER_INGRESS_KEEP_ALIVE="120",
        PINSTER_KUBE_TIMEOUT="2.5",
        PINSTER_RETRY_AFTER="30",
        PINSTER_JWT_LEEWAY="0",
        PINSTER_LOG_FORMAT="text",
    )
    settings = IngressSettings.from_env(env)
    assert settings.auth.public_key == PAIR.public.strip()  # env_pem strips the file
    assert settings.auth.jwks == "https://api.test/.well-known/jwks.json"
    assert settings.auth.leeway == 0
    assert settings.thumbnail_sizes == ("400xauto", "64x64")
    assert settings.limits == ImageLimits(1000, 2000, 3)
    assert (settings.host, settings.port, settings.kube_timeout, settings.retry_after) == (
        "127.0.0.1",
        9000,
        2.5,
        30,
    )
    assert (settings.workers, settings.keep_alive) == (2, 120)
    assert settings.log_format == "text"


@pytest.mark.parametrize(
    ("override", "variable"),
    [
        ({"PINSTER_SERVICE_URL": ""}, "PINSTER_SERVICE_URL"),
        ({"PINSTER_API_URL": ""}, "PINSTER_API_URL"),
        ({"PINSTER_API_PUBLIC_KEY": ""}, "PINSTER_API_PUBLIC_KEY"),
        ({"PINSTER_API_PUBLIC_KEY": "bm90IGEga2V5"}, "PINSTER_API_PUBLIC_KEY"),
        ({"PINSTER_THUMBNAIL_SIZES": "big"}, "PINSTER_THUMBNAIL_SIZES"),
        ({"PINSTER_MAX_BYTES": "-1"}, "PINSTER_MAX_BYTES"),
        ({"PINSTER_INGRESS_PORT": "http"}, "PINSTER_INGRESS_PORT"),
        ({"PINSTER_INGRESS_WORKERS": "0"}, "PINSTER_INGRESS_WORKERS"),
        ({"PINSTER_INGRESS_WORKERS": "two"}, "PINSTER_INGRESS_WORKERS"),
        ({"PINSTER_INGRESS_KEEP_ALIVE": "0"}, "PINSTER_INGRESS_KEEP_ALIVE"),
        ({"PINSTER_LOG_FORMAT": "xml"}, "PINSTER_LOG_FORMAT"),
        ({"PINSTER_S3_UPLOAD_BUCKET": ""}, "PINSTER_S3_UPLOAD_BUCKET"),
        ({"PINSTER_S3_PUBLIC_BUCKET": ""}, "PINSTER_S3_PUBLIC_BUCKET"),
        # The directory backend is gone: a configuration that names it is told so.
        ({"PINSTER_STORAGE_BACKEND": "local"}, "PINSTER_STORAGE_BACKEND"),
    ],
)
def test_errors_name_the_variable(tmp_path: Path, override: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        IngressSettings.from_env(_env(tmp_path, **override))


def test_a_pem_that_is_not_a_public_key_fails_at_start(tmp_path: Path) -> None:
    broken = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    settings = IngressSettings.from_env(_env(tmp_path, PINSTER_API_PUBLIC_KEY=broken.decode()))
    with pytest.raises(ConfigError, match="PINSTER_API_PUBLIC_KEY"):
        TokenVerifier(settings.auth)


def test_namespace_from_the_service_account_file(tmp_path: Path) -> None:
    sa = tmp_path / "namespace"
    sa.write_text("pinster-system\n")
    assert default_namespace({}, sa) == "pinster-system"
    assert default_namespace({"PINSTER_NAMESPACE": "x"}, sa) == "x"
    assert default_namespace({}, tmp_path / "missing") == "default"


def test_the_cli_serves_with_the_c_parser_and_loop_and_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from pinster_ingress import cli

    directory_storage_for_settings(monkeypatch, tmp_path)
    monkeypatch.setattr("pinster_images.logs.setup", lambda *args: None)  # pytest's logging stays
    env = _env(tmp_path, PINSTER_INGRESS_WORKERS="3", PINSTER_INGRESS_KEEP_ALIVE="90")
    monkeypatch.setattr("pinster_ingress.cli.environ", lambda: env)
    served: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(options, app=app))
    assert cli.main(["--port", "9001"]) == 0
    assert served["app"] == "pinster_ingress._app:app_from_env" and served["factory"] is True
    assert (served["http"], served["loop"]) == ("httptools", "uvloop")
    assert (served["workers"], served["timeout_keep_alive"], served["port"]) == (3, 90, 9001)


def test_each_worker_builds_its_app_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pinster_ingress._app import app_from_env

    directory_storage_for_settings(monkeypatch, tmp_path)
    monkeypatch.setattr("pinster_images.logs.setup", lambda *args: None)  # pytest's logging stays
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    env = _env(tmp_path, KUBECONFIG=str(kubeconfig), PINSTER_NAMESPACE="ns")
    monkeypatch.setattr("pinster_images.config.environ", lambda: env)
    app = app_from_env()
    assert app.state.service.settings.namespace == "ns"
