"""The cluster's object store: MinIO (built from its Go module) on the node address.

What a user runs against their own S3: the same boto3 calls, over HTTP to
``http://<node address>:<port>``, with static credentials (generated once per state
directory) and two buckets made at start, the public one readable anonymously, so every
URL the service hands out can be fetched as it is.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pinster_devcluster import paths

UPLOAD_BUCKET = "pinster-images-uploads"
PUBLIC_BUCKET = "pinster-images-public"
REGION = "us-east-1"


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
