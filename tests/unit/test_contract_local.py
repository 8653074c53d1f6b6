"""The OpenAPI document and the service agree: schemathesis (every check, positive and
negative cases, stateful links, two imageables) against the upload service served by
uvicorn on 127.0.0.1, with a directory storage and an in-memory API server."""

from __future__ import annotations

from pathlib import Path

from pinster_ingress import Metrics, create_app
from pinster_ingress._settings import DirectUploadSettings

from pinster_images.config import Secret
from pinster_images.sniff import ImageLimits
from tests.support import ingress as si
from tests.support.contract import run_contract
from tests.support.serving import serve

SEED = 20261201
#: Small, so that schemathesis reaches the byte limit (413) too.
LIMITS = ImageLimits(max_bytes=64 * 1024)


def test_the_service_keeps_its_documented_contract(tmp_path: Path) -> None:
    pair = si.key_pair()
    metrics = Metrics()
    direct = DirectUploadSettings(events_token=Secret("contract-events-token"))
    settings = si.settings(tmp_path / "store", pair.public, limits=LIMITS, direct=direct)
    app = create_app(settings, uploads=si.FakeUploads(), metrics=metrics)
    with serve(app) as url:
        # Tokens outlive the run; the second speaks for another imageable.
        owner, other = si.token(pair, ttl=3600), si.token(pair, ttl=3600, imageable_id="43")
        run_contract(url, owner, other, seed=SEED, max_examples=100)

    def answered(route: str, method: str, status: int) -> float:
        labels = {"route": route, "method": method, "status": str(status)}
        samples = [
            s.value
            for metric in metrics.registry.collect()
            if metric.name == "pinster_ingress_requests"
            for s in metric.samples
            if s.name.endswith("_total") and labels.items() <= s.labels.items()
        ]
        return sum(samples)

    # It reached what matters: uploads stored, their status read back (the link) and
    # refused to the other imageable, refusals of each kind, and the HTTP method rules.
    assert answered("upload", "POST", 202) > 0
    assert answered("status", "GET", 200) > 0
    assert answered("status", "GET", 404) > 0
    for status in (400, 401, 403, 413, 415):
        assert answered("upload", "POST", status) > 0, status
    assert answered("upload", "OPTIONS", 204) > 0
    assert answered("direct_upload", "POST", 201) > 0
    for status in (400, 401, 413):
        assert answered("direct_upload", "POST", status) > 0, status
    assert answered("storage_events", "POST", 403) > 0
    assert answered("healthz", "TRACE", 405) > 0
