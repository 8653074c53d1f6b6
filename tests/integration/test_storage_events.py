"""Storage events of the devcluster's object store: a presigned POST upload under ``raw/``
of a bucket with a rule reaches a webhook (a real HTTP server on 127.0.0.1, where MinIO,
a process of this machine, reaches it) as MinIO's webhook body with the bearer token;
nothing else does. Rules restart MinIO (``DevCluster.set_storage_events``), so each test
uses a fresh bucket and clears its rule afterwards.

The tests at the top need no cluster: rule files, target names and CLI arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from pinster_devcluster import DevCluster
from pinster_devcluster._components import OBJECTSTORE, Layout
from pinster_devcluster._objectstore import (
    EventRule,
    events_file,
    events_queue_dir,
    load_event_rules,
    save_event_rules,
    target_arn,
    target_id,
    webhook_env,
)
from pinster_devcluster.paths import cluster_file

from pinster_images.errors import PermanentError
from tests.support.net import LOOPBACK, free_port
from tests.support.s3 import S3Server
from tests.support.serving import serve
from tests.support.waiting import wait_for

TOKEN = "s3cr3t-token_for.events"
#: MinIO polls each target's queue every 3 s; a retry waits as long again.
EVENT_TIMEOUT = 20.0


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinster_images.cli", "devcluster", *args],
        check=False,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


# -- without a cluster ----------------------------------------------------------------------


def test_target_ids_are_environment_names_and_distinct_per_bucket() -> None:
    buckets = ["upload-0123456789", "a-b", "a.b", "a-b-8d0b7a6b", "pinster-images-uploads"]
    ids = [target_id(b) for b in buckets]
    assert ids[0] == "upload_0123456789"
    assert len(set(ids)) == len(ids)
    for ident in ids:
        assert ident.replace("_", "").isalnum() and ident.isascii() and ident == ident.lower()
    assert target_arn("upload-x") == "arn:minio:sqs:us-east-1:upload_x:webhook"


def test_rules_are_kept_0600_and_become_minio_variables(tmp_path: Path) -> None:
    save_event_rules(
        tmp_path,
        {
            "upload-a": EventRule("http://127.0.0.1:1/v1/storage-events", TOKEN),
            "upload-b": EventRule("https://images.test/hook"),
        },
    )
    assert stat.S_IMODE(events_file(tmp_path).stat().st_mode) == 0o600
    rules = load_event_rules(tmp_path)
    assert rules["upload-a"].token == TOKEN and rules["upload-b"].token is None
    assert TOKEN not in repr(rules)  # tokens never print
    queue = str(events_queue_dir(tmp_path))
    assert webhook_env(tmp_path) == {
        "MINIO_NOTIFY_WEBHOOK_ENABLE_upload_a": "on",
        "MINIO_NOTIFY_WEBHOOK_ENDPOINT_upload_a": "http://127.0.0.1:1/v1/storage-events",
        "MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_upload_a": TOKEN,
        "MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_upload_a": queue,
        "MINIO_NOTIFY_WEBHOOK_ENABLE_upload_b": "on",
        "MINIO_NOTIFY_WEBHOOK_ENDPOINT_upload_b": "https://images.test/hook",
        "MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_upload_b": queue,
    }
    # What `up` gives MinIO: the saved rules, read again at each start.
    env = Layout(tmp_path, tmp_path, ports=None, node=True).env(OBJECTSTORE)  # type: ignore[arg-type]
    assert env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_upload_a"] == TOKEN
    assert env["MINIO_SYNC_BOOT"] == "on"


@pytest.mark.parametrize(
    ("endpoint", "token"),
    [("ftp://host/x", None), ("not a url", None), ("http://h/x", ""), ("http://h/x", "two words")],
)
def test_bad_rules_are_refused(endpoint: str, token: str | None) -> None:
    with pytest.raises(PermanentError):
        EventRule(endpoint, token)


def test_cli_wants_a_token_file_with_a_webhook_and_none_with_clear(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    done = cli("storage-events", "--state-dir", state, "--bucket", "b", "--webhook", "http://h/x")
    assert done.returncode == 1 and "--token-file" in done.stderr
    token_file = tmp_path / "token"
    token_file.write_text("")
    done = cli(
        "storage-events", "--state-dir", state, "--bucket", "b", "--webhook", "http://h/x",
        "--token-file", str(token_file),
    )  # fmt: skip
    assert done.returncode == 1 and "is empty" in done.stderr
    done = cli(
        "storage-events", "--state-dir", state, "--bucket", "b", "--clear",
        "--token-file", str(token_file),
    )  # fmt: skip
    assert done.returncode == 1 and "--token-file goes with --webhook" in done.stderr
    done = cli("storage-events", "--state-dir", state, "--bucket", "b")
    assert done.returncode == 2 and "--webhook" in done.stderr


# -- a recording webhook --------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int
    at: float

    @property
    def key(self) -> str:
        """The object key of the event, as MinIO's top-level ``Key`` spells it (decoded)."""
        return str(self.body["Key"]).partition("/")[2]


@dataclass
class Webhook:
    """An ASGI app that records every request and answers ``answers`` first (then 200)."""

    answers: list[int] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._lock:
            status = self.answers.pop(0) if self.answers else 200
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.hits.append(
                Hit(scope["path"], headers, json.loads(body), status, time.monotonic())
            )
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def received(self) -> list[Hit]:
        with self._lock:
            return list(self.hits)

    def wait_for_key(self, key: str) -> Hit:
        def arrived() -> Hit | None:
            return next((h for h in self.received() if h.key == key and h.status == 200), None)

        return wait_for(arrived, timeout=EVENT_TIMEOUT, interval=0.02, what=f"the event of {key}")


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    with serve(hook) as base:
        hook.url = f"{base}/v1/storage-events"
        yield hook


@pytest.fixture
def upload_bucket(s3_env: dict[str, str], devcluster: DevCluster) -> Iterator[str]:
    bucket = s3_env["PINSTER_S3_UPLOAD_BUCKET"]
    try:
        yield bucket
    finally:
        devcluster.set_storage_events(bucket, None)


def md5_of(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def presigned_post(s3: S3Server, bucket: str, key: str, body: bytes) -> float:
    """Upload ``body`` to ``key`` as a client of the service would: a presigned POST
    (SigV4) sent with ``requests``. Returns when the upload was answered (monotonic)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.endpoint.region,
        aws_access_key_id=s3.endpoint.access_key,
        aws_secret_access_key=s3.endpoint.secret_key,
        config=Config(signature_version="s3v4"),
    )
    form = client.generate_presigned_post(
        bucket,
        key,
        Fields={"Content-Type": "image/jpeg"},
        Conditions=[{"Content-Type": "image/jpeg"}, ["content-length-range", 1, 10_000_000]],
        ExpiresIn=300,
    )
    answer = requests.post(
        form["url"],
        data=form["fields"],
        files={"file": ("image.jpg", body, "image/jpeg")},
        timeout=30,
    )
    assert answer.status_code == 204, answer.text
    return time.monotonic()


def assert_event(hit: Hit, bucket: str, key: str) -> None:
    assert hit.path == "/v1/storage-events"
    assert hit.headers["authorization"] == f"Bearer {TOKEN}"
    assert hit.headers["content-type"] == "application/json"
    assert hit.body["EventName"] == "s3:ObjectCreated:Post"
    assert hit.body["Key"] == f"{bucket}/{key}"
    (record,) = hit.body["Records"]
    assert record["eventName"] == "s3:ObjectCreated:Post"
    assert record["s3"]["bucket"]["name"] == bucket
    # Keys in S3 event records are URL-encoded (form encoding: a space is '+').
    assert urllib.parse.unquote_plus(record["s3"]["object"]["key"]) == key


# -- against the devcluster's MinIO ---------------------------------------------------------


def test_a_presigned_post_under_raw_reaches_the_webhook_once_with_the_token(
    devcluster: DevCluster, s3_server: S3Server, upload_bucket: str, webhook: Webhook
) -> None:
    devcluster.set_storage_events(upload_bucket, webhook.url, TOKEN)
    config = s3_server.client().get_bucket_notification_configuration(Bucket=upload_bucket)
    (queue,) = config["QueueConfigurations"]
    assert queue["QueueArn"] == target_arn(upload_bucket)
    assert queue["Events"] == ["s3:ObjectCreated:Post"]
    assert queue["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "raw/"}]

    image = b"\xff\xd8\xff\xe0 a jpeg " + os.urandom(16)
    key = f"raw/{md5_of(image)}"
    presigned_post(s3_server, upload_bucket, key, image)
    assert_event(webhook.wait_for_key(key), upload_bucket, key)

    # A second upload (a key that needs decoding) arrives after it; the first came once.
    second = "raw/a key+with spaces&more"
    presigned_post(s3_server, upload_bucket, second, b"second")
    assert_event(webhook.wait_for_key(second), upload_bucket, second)
    assert [h.key for h in webhook.received()] == [key, second]


def test_puts_and_posts_outside_raw_send_nothing(
    devcluster: DevCluster, s3_server: S3Server, upload_bucket: str, webhook: Webhook
) -> None:
    devcluster.set_storage_events(upload_bucket, webhook.url, TOKEN)
    client = s3_server.client()
    client.put_object(Bucket=upload_bucket, Key=f"raw/{'a' * 32}", Body=b"put")  # :Put
    presigned_post(s3_server, upload_bucket, f"public/{'b' * 32}", b"outside raw/")
    presigned_post(s3_server, upload_bucket, f"{'c' * 32}", b"no prefix at all")
    # The positive control: one target delivers its queue in order, oldest first, so
    # anything the uploads above had sent would have come before it.
    control = f"raw/{'d' * 32}"
    presigned_post(s3_server, upload_bucket, control, b"control")
    webhook.wait_for_key(control)
    assert [h.key for h in webhook.received()] == [control]


def test_an_endpoint_that_fails_gets_the_event_again(
    devcluster: DevCluster, s3_server: S3Server, upload_bucket: str, webhook: Webhook
) -> None:
    devcluster.set_storage_events(upload_bucket, webhook.url, TOKEN)
    webhook.answers = [503, 503]
    key = f"raw/{'e' * 32}"
    presigned_post(s3_server, upload_bucket, key, b"retried")
    delivered = webhook.wait_for_key(key)
    hits = webhook.received()
    assert [h.status for h in hits] == [503, 503, 200]
    assert hits[-1] is delivered
    assert hits[0].body == hits[1].body == delivered.body  # the same event again
    assert_event(delivered, upload_bucket, key)


def test_events_wait_in_the_queue_while_the_endpoint_is_unreachable(
    devcluster: DevCluster, s3_server: S3Server, upload_bucket: str, webhook: Webhook
) -> None:
    # Nothing listens there: MinIO starts anyway, and queues the event.
    devcluster.set_storage_events(upload_bucket, f"http://{LOOPBACK}:{free_port()}/x", TOKEN)
    key = f"raw/{'f' * 32}"
    presigned_post(s3_server, upload_bucket, key, b"queued")
    queue = events_queue_dir(devcluster.state_dir) / f"minio-webhook-{target_id(upload_bucket)}"
    wait_for(lambda: any(queue.iterdir()), timeout=10, what=f"an event queued in {queue}")

    # The same bucket's target, now pointing at a live endpoint, delivers it.
    devcluster.set_storage_events(upload_bucket, webhook.url, TOKEN)
    assert_event(webhook.wait_for_key(key), upload_bucket, key)
    wait_for(lambda: not any(queue.iterdir()), timeout=10, what=f"{queue} to drain")


def test_clear_removes_the_target_while_other_buckets_keep_theirs(
    devcluster: DevCluster, s3_server: S3Server, upload_bucket: str, webhook: Webhook
) -> None:
    other = s3_server.fresh_env()["PINSTER_S3_UPLOAD_BUCKET"]
    try:
        devcluster.set_storage_events(upload_bucket, webhook.url, TOKEN)
        devcluster.set_storage_events(other, webhook.url, TOKEN)
        before = f"raw/{'1' * 32}"
        presigned_post(s3_server, upload_bucket, before, b"before")
        webhook.wait_for_key(before)

        devcluster.set_storage_events(upload_bucket, None)
        config = s3_server.client().get_bucket_notification_configuration(Bucket=upload_bucket)
        assert not config.get("QueueConfigurations")
        assert upload_bucket not in load_event_rules(devcluster.state_dir)
        # MinIO makes each target's queue directory at start: none means no target.
        queues = events_queue_dir(devcluster.state_dir)
        assert not (queues / f"minio-webhook-{target_id(upload_bucket)}").exists()
        assert (queues / f"minio-webhook-{target_id(other)}").exists()

        after = f"raw/{'2' * 32}"
        presigned_post(s3_server, upload_bucket, after, b"after")
        control = f"raw/{'3' * 32}"
        presigned_post(s3_server, other, control, b"control")
        hit = webhook.wait_for_key(control)
        assert hit.body["Key"] == f"{other}/{control}"
        assert [h.key for h in webhook.received()] == [before, control]
    finally:
        devcluster.set_storage_events(other, None)


def test_rules_survive_a_restart_of_the_object_store(
    devcluster: DevCluster, s3_server: S3Server, upload_bucket: str, webhook: Webhook
) -> None:
    devcluster.set_storage_events(upload_bucket, webhook.url, TOKEN)
    rules = events_file(devcluster.state_dir)
    assert stat.S_IMODE(rules.stat().st_mode) == 0o600  # it holds tokens
    layout = Layout.load(cluster_file(devcluster.state_dir), devcluster.state_dir, Path())
    assert layout is not None
    ident = target_id(upload_bucket)
    assert layout.env(OBJECTSTORE)[f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{ident}"] == webhook.url

    # MinIO started again as `up` starts it: the rule comes back from the state directory.
    devcluster.stop_component(OBJECTSTORE)
    devcluster.start_component(OBJECTSTORE)
    ready = f"{s3_server.endpoint_url}/minio/health/ready"
    wait_for(lambda: requests.get(ready, timeout=2).ok, timeout=60, what="MinIO to be ready")
    key = f"raw/{'4' * 32}"
    presigned_post(s3_server, upload_bucket, key, b"after a restart")
    assert_event(webhook.wait_for_key(key), upload_bucket, key)


def test_the_cli_reads_the_token_from_a_file(
    devcluster: DevCluster,
    s3_server: S3Server,
    upload_bucket: str,
    webhook: Webhook,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    state = str(devcluster.state_dir)
    done = cli(
        "storage-events", "--state-dir", state, "--bucket", upload_bucket,
        "--webhook", webhook.url, "--token-file", str(token_file),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    key = f"raw/{'5' * 32}"
    presigned_post(s3_server, upload_bucket, key, b"via the cli")
    assert_event(webhook.wait_for_key(key), upload_bucket, key)

    done = cli("storage-events", "--state-dir", state, "--bucket", upload_bucket, "--clear")
    assert done.returncode == 0, done.stderr
    config = s3_server.client().get_bucket_notification_configuration(Bucket=upload_bucket)
    assert not config.get("QueueConfigurations")


def test_a_rule_for_a_missing_bucket_is_refused(devcluster: DevCluster, webhook: Webhook) -> None:
    with pytest.raises(PermanentError, match="no bucket"):
        devcluster.set_storage_events("no-such-bucket-here", webhook.url, TOKEN)
    assert "no-such-bucket-here" not in load_event_rules(devcluster.state_dir)
