"""The cluster's object store: MinIO (built from its Go module) on the node address.

What a user runs against their own S3: the same boto3 calls, over HTTP to
``http://<node address>:<port>``, with static credentials (generated once per state
directory) and two buckets made at start, the public one readable anonymously, so every
URL the service hands out can be fetched as it is.

Storage events: a bucket may send ``s3:ObjectCreated:Post`` events (presigned POST
uploads) of keys under ``raw/`` to a webhook, as a user's own MinIO does with
``notify_webhook`` and ``mc event add``. MinIO reads webhook targets only at start
(``notify_webhook`` is not a dynamic subsystem), so the rules (bucket -> endpoint and
bearer token) are kept in ``<state>/node/objectstore/storage-events.json`` (0600: it
holds tokens) and become ``MINIO_NOTIFY_WEBHOOK_*_<ID>`` variables of the process; each
target queues its events in ``<state>/node/objectstore/events-queue/`` so they survive an
unreachable endpoint. ``DevCluster.set_storage_events`` restarts MinIO to apply them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pinster_devcluster import paths
from pinster_images.errors import PermanentError

log = logging.getLogger(__name__)

UPLOAD_BUCKET = "pinster-images-uploads"
PUBLIC_BUCKET = "pinster-images-public"
REGION = "us-east-1"
#: What a storage-event rule sends: presigned POST uploads of the upload area.
EVENT_PREFIX = "raw/"
EVENTS = ("s3:ObjectCreated:Post",)
#: Prefix of the webhook target variables (``<prefix>_<ID>``), as MinIO reads them.
_WEBHOOK_ENV = "MINIO_NOTIFY_WEBHOOK_"
#: MinIO names a target's queue ``<queue_dir>/minio-webhook-<ID>`` (internal/event/target).
_QUEUE_PREFIX = "minio-webhook-"


@dataclass(frozen=True)
class S3Endpoint:
    """How to reach the object store, as boto3 and the product's settings spell it."""

    url: str
    access_key: str
    secret_key: str
    #: the public front (``_website``): where anonymous clients read published objects
    website_url: str
    region: str = REGION
    upload_bucket: str = UPLOAD_BUCKET
    public_bucket: str = PUBLIC_BUCKET

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def env(
        self, upload_bucket: str | None = None, public_bucket: str | None = None
    ) -> dict[str, str]:
        """The PINSTER_* and AWS_* variables of a process that stores images here (and
        hands out URLs of the website front)."""
        public = public_bucket or self.public_bucket
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "PINSTER_STORAGE_BACKEND": "s3",
            "PINSTER_S3_ENDPOINT_URL": self.url,
            "PINSTER_S3_REGION": self.region,
            "PINSTER_S3_UPLOAD_BUCKET": upload_bucket or self.upload_bucket,
            "PINSTER_S3_PUBLIC_BUCKET": public,
            "PINSTER_PUBLIC_URL": self.public_url(public),
        }

    def public_url(self, bucket: str | None = None) -> str:
        """Where anonymous clients read the public bucket: its website front, path-style."""
        return f"{self.website_url}/{bucket or self.public_bucket}"


def credentials(state_dir: Path) -> tuple[str, str]:
    """The root credentials, made once and kept 0600 in the state directory."""
    path = paths.node_dir(state_dir) / "objectstore" / "credentials.json"
    try:
        data = json.loads(path.read_text())
        return str(data["access_key"]), str(data["secret_key"])
    except (FileNotFoundError, ValueError, KeyError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    access, secret = f"devcluster-{secrets.token_hex(4)}", secrets.token_urlsafe(30)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"access_key": access, "secret_key": secret}, handle)
    return access, secret


def anonymous_read_policy(bucket: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": ["*"]},
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{bucket}/*"],
                }
            ],
        }
    )


def create_buckets(endpoint: S3Endpoint, upload: str, public: str) -> None:
    """Both buckets (if missing); the public one readable by anyone, as a CDN origin."""
    client = endpoint.client()
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in (upload, public):
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
    client.put_bucket_policy(Bucket=public, Policy=anonymous_read_policy(public))


# -- storage events -----------------------------------------------------------------------


@dataclass(frozen=True)
class EventRule:
    """Where a bucket's storage events go: ``endpoint`` (http or https), and the token
    MinIO sends as ``Authorization: Bearer <token>`` (``None``: no header)."""

    endpoint: str
    token: str | None = None

    def __post_init__(self) -> None:
        url = urllib.parse.urlsplit(self.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise PermanentError(
                f"storage events endpoint {self.endpoint!r}: want an http:// or https:// URL"
            )
        # MinIO sends a one-word token as "Bearer <token>", a two-word one as it is, and
        # anything else not at all: a token is one word.
        if self.token is not None and (not self.token or len(self.token.split()) != 1):
            raise PermanentError("a storage events token is one non-empty word (no spaces)")

    def __repr__(self) -> str:  # the token never prints
        token = "None" if self.token is None else "'***'"
        return f"EventRule(endpoint={self.endpoint!r}, token={token})"


def events_file(state_dir: Path) -> Path:
    return paths.node_dir(state_dir) / "objectstore" / "storage-events.json"


def events_queue_dir(state_dir: Path) -> Path:
    """Where MinIO keeps each target's undelivered events (one directory per target)."""
    return paths.node_dir(state_dir) / "objectstore" / "events-queue"


def load_event_rules(state_dir: Path) -> dict[str, EventRule]:
    """The storage-event rules: bucket -> :class:`EventRule`. A missing or torn file
    holds none; a rule that no longer validates is skipped with a warning."""
    try:
        data = json.loads(events_file(state_dir).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    rules: dict[str, EventRule] = {}
    for bucket, rule in data.items() if isinstance(data, dict) else ():
        try:
            token = rule.get("token")
            rules[str(bucket)] = EventRule(
                str(rule["endpoint"]), None if token is None else str(token)
            )
        except (AttributeError, KeyError, PermanentError) as exc:
            log.warning("ignoring the storage events rule of bucket %s: %s", bucket, exc)
    return rules


def save_event_rules(state_dir: Path, rules: Mapping[str, EventRule]) -> None:
    """Write the rules 0600 (they hold tokens), atomically."""
    path = events_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        bucket: {"endpoint": rule.endpoint, "token": rule.token}
        for bucket, rule in sorted(rules.items())
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # also when a stale tmp file had other bits
        json.dump(data, handle, indent=2)
    tmp.replace(path)


def target_id(bucket: str) -> str:
    """The MinIO webhook target ID of ``bucket``'s rule: usable in environment variable
    names (``[a-z0-9_]``) and distinct for distinct buckets (bucket names have no ``_``;
    one with other characters than ``[a-z0-9-]`` gets a hash of its name)."""
    plain = bucket.replace("-", "_")
    if re.fullmatch(r"[a-z0-9_]+", plain):
        return plain
    digest = hashlib.sha256(bucket.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^a-z0-9]', '_', bucket.lower())}_{digest}"


def target_arn(bucket: str, region: str = REGION) -> str:
    """The ARN MinIO gives ``bucket``'s target (the region is the server's, MINIO_REGION;
    MinIO also accepts it empty, ``arn:minio:sqs::<ID>:webhook``)."""
    return f"arn:minio:sqs:{region}:{target_id(bucket)}:webhook"


def webhook_env(state_dir: Path, rules: Mapping[str, EventRule] | None = None) -> dict[str, str]:
    """MinIO's ``MINIO_NOTIFY_WEBHOOK_*_<ID>`` variables for ``rules`` (default: the
    saved ones), each target with its queue in the state directory."""
    if rules is None:
        rules = load_event_rules(state_dir)
    queue = str(events_queue_dir(state_dir))
    env: dict[str, str] = {}
    for bucket, rule in sorted(rules.items()):
        ident = target_id(bucket)
        env[f"{_WEBHOOK_ENV}ENABLE_{ident}"] = "on"
        env[f"{_WEBHOOK_ENV}ENDPOINT_{ident}"] = rule.endpoint
        env[f"{_WEBHOOK_ENV}QUEUE_DIR_{ident}"] = queue
        if rule.token is not None:
            env[f"{_WEBHOOK_ENV}AUTH_TOKEN_{ident}"] = rule.token
    return env


def is_webhook_variable(name: str) -> bool:
    return name.startswith(_WEBHOOK_ENV)


def drop_queue(state_dir: Path, bucket: str) -> None:
    """Forget the undelivered events of ``bucket``'s target (MinIO must not be running:
    a target added again later would otherwise receive them)."""
    shutil.rmtree(events_queue_dir(state_dir) / f"{_QUEUE_PREFIX}{target_id(bucket)}", True)


def put_event_config(endpoint: S3Endpoint, bucket: str) -> None:
    """Make ``bucket`` send its events to its webhook target (which must exist: MinIO
    refuses an ARN it has no target for). Replaces the bucket's notification
    configuration: the devcluster owns it."""
    _put_notification_config(
        endpoint,
        bucket,
        {
            "QueueConfigurations": [
                {
                    "Id": "pinster-storage-events",
                    "QueueArn": target_arn(bucket, endpoint.region),
                    "Events": list(EVENTS),
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": EVENT_PREFIX}]}},
                }
            ]
        },
    )


def delete_event_config(endpoint: S3Endpoint, bucket: str) -> None:
    """Remove ``bucket``'s notification configuration (a missing bucket has none)."""
    _put_notification_config(endpoint, bucket, {}, missing_ok=True)


def _put_notification_config(
    endpoint: S3Endpoint, bucket: str, document: dict[str, Any], *, missing_ok: bool = False
) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        endpoint.client().put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration=document
        )
    except ClientError as exc:
        if missing_ok and exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return
        raise PermanentError(
            f"the object store refused the notification configuration of bucket {bucket}: {exc}"
        ) from exc
    except BotoCoreError as exc:
        raise PermanentError(f"the object store at {endpoint.url} is unreachable: {exc}") from exc


def bucket_exists(endpoint: S3Endpoint, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        endpoint.client().head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
            return False
        raise
    return True
