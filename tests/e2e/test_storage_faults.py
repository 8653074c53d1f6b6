"""The object store goes away mid-pipeline and comes back: nothing is lost, and every
part says why it waits. On the devcluster's node, with its MinIO stopped and started."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pinster_images.resource import LABEL_MD5
from tests.support.images import jpeg
from tests.support.stack import Stack
from tests.support.waiting import wait_for


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next(
        c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"
    )


def test_an_object_store_outage_mid_pipeline_loses_nothing(stack: Stack, devcluster: Any) -> None:
    # One try per Job (no pod retries), so the outage fails the first Job quickly.
    stack.start(jobs={"backoffLimit": 0, "attempts": 2})
    first = stack.upload(jpeg(640, 480), imageable_id="1")
    wait_for(
        lambda: (stack.get(first["name"]).get("status") or {}).get("phase") == "Moderating",
        60,
        what="the first upload in Moderating",
    )
    devcluster.stop_component("objectstore")
    try:
        # New uploads are refused as retryable, and nothing of them is left behind.
        second_image = jpeg(500, 400)
        refused = stack.post(second_image, imageable_id="2")
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        md5 = hashlib.md5(second_image).hexdigest()
        listed = stack.kubectl(
            "get", "iu", "-n", stack.namespace, "-l", f"{LABEL_MD5}={md5}", "-o", "name"
        )
        assert listed.strip() == ""
        # The first upload waits, and says why: its condition and an Event.
        waiting = wait_for(
            lambda: (
                _ready(stack.get(first["name"])).get("reason", "").startswith("Storage")
                and stack.get(first["name"])
            ),
            120,
            what="the first upload to say it waits for the object store",
        )
        assert waiting["status"]["phase"] in ("Moderating", "Thumbnailing")
        assert "object store" in _ready(waiting)["message"]
        events = json.loads(stack.kubectl("get", "events", "-n", stack.namespace, "-o", "json"))[
            "items"
        ]
        assert any(e["reason"].startswith("Storage") and e["type"] == "Warning" for e in events)
    finally:
        devcluster.start_component("objectstore")

    done = stack.wait_terminal(first["name"], timeout=240)
    assert done["status"]["phase"] == "Ready", _ready(done)["message"]
    second = stack.upload(second_image, imageable_id="2")  # the client's retry
    assert stack.wait_terminal(second["name"], timeout=120)["status"]["phase"] == "Ready"
    keys_seen = sorted(r.headers["idempotency-key"] for r in stack.api.accepted("/v1/images/"))
    assert keys_seen == sorted([first["name"], second["name"]])
