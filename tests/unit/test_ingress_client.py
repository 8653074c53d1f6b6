"""``pinster-images upload`` against the service served by uvicorn (fake API server only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pinster_ingress import create_app
from pinster_ingress.client import main

from pinster_images import keys
from tests.support import images
from tests.support import ingress as si
from tests.support.serving import serve


class ProgressingUploads(si.FakeUploads):
    """Each status read moves an upload one phase on, ending in ``final``."""

    final = "Ready"

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((namespace, name))
        if obj is not None:
            order = ["Pending", "Moderating", "Thumbnailing", self.final]
            current = (obj.get("status") or {}).get("phase", "Pending")
            phase = order[min(order.index(current) + 1, len(order) - 1)]
            obj["status"] = {
                "phase": phase,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if phase == "Ready" else "False",
                        "reason": phase,
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            }
            if phase == "Ready":
                obj["status"]["published"] = {
                    "original": {"key": obj["spec"]["md5"], "url": "http://cdn/o"}
                }
        return super().get(namespace, name)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Path, ProgressingUploads]]:
    keys.generate_dir(tmp_path / "keys")
    public = (tmp_path / "keys" / keys.API_PUBLIC).read_bytes()
    uploads = ProgressingUploads()
    app = create_app(si.settings(tmp_path / "store", public), uploads=uploads)
    with serve(app) as url:
        yield url, tmp_path, uploads


def _args(url: str, tmp: Path, *extra: str) -> list[str]:
    return [
        "--url",
        url,
        "--keys",
        str(tmp / "keys"),
        "--service-url",
        si.SERVICE_URL,
        "--api-url",
        si.API_URL,
        *extra,
    ]


def test_upload_prints_the_name(
    service: tuple[str, Path, ProgressingUploads], capsys: pytest.CaptureFixture[str]
) -> None:
    url, tmp, uploads = service
    image = tmp / "a.jpg"
    image.write_bytes(images.jpeg())
    assert main([str(image), *_args(url, tmp, "--name", "Client pin")]) == 0
    name = capsys.readouterr().out.strip()
    assert name.startswith("img-")
    assert uploads.objects[("uploads", name)]["spec"]["name"] == "Client pin"


def test_raw_upload_and_wait_until_ready(
    service: tuple[str, Path, ProgressingUploads], capsys: pytest.CaptureFixture[str]
) -> None:
    url, tmp, _ = service
    image = tmp / "b.png"
    image.write_bytes(images.png())
    assert main([str(image), "--raw", "--wait", "--interval", "0.01", *_args(url, tmp)]) == 0
    lines = capsys.readouterr().out.splitlines()
    phases = [line.split()[1] for line in lines[1:] if line.startswith("img-")]
    assert phases == ["Moderating", "Thumbnailing", "Ready"]
    assert "  original: http://cdn/o" in lines


def test_wait_exits_1_when_rejected(
    service: tuple[str, Path, ProgressingUploads], capsys: pytest.CaptureFixture[str]
) -> None:
    url, tmp, uploads = service
    uploads.final = "Rejected"
    image = tmp / "c.jpg"
    image.write_bytes(images.jpeg(10, 10))
    assert main([str(image), "--wait", "--interval", "0.01", *_args(url, tmp)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].endswith("Rejected (Rejected)")


def test_http_errors_exit_2_with_the_server_message(
    service: tuple[str, Path, ProgressingUploads], capsys: pytest.CaptureFixture[str]
) -> None:
    url, tmp, _ = service
    text = tmp / "notes.jpg"
    text.write_bytes(b"not an image at all")
    assert main([str(text), *_args(url, tmp)]) == 2
    assert "HTTP 415: not a supported image" in capsys.readouterr().err
    image = tmp / "d.jpg"
    image.write_bytes(images.jpeg())
    assert main([str(image), *_args(url, tmp, "--name", "ab")]) == 2
    assert "HTTP 400" in capsys.readouterr().err
    assert main([str(image), "--url", url, "--keys", str(tmp / "keys")]) == 2  # wrong aud/iss
    assert "HTTP 403" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.jpg"), "--keys", str(tmp_path / "nokeys")]) == 2
    assert "keys generate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
