"""The devcluster's object store (MinIO on the node address, over HTTP) for every suite
that needs S3: Pods and test processes reach the same server.

Register with ``pytest_plugins = ["tests.support.s3"]`` in tests/conftest.py, then:

* ``s3_server`` (session): an :class:`S3Server` with ``endpoint_url``, the buckets
  ``upload_bucket``/``public_bucket`` the cluster made, ``env`` (the PINSTER_* and AWS_*
  variables for StorageSettings.from_env or a subprocess) and ``client()`` (boto3).
* ``s3_env`` (per test): the same server with a fresh pair of buckets, as an env dict.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pinster_devcluster._objectstore import S3Endpoint, anonymous_read_policy


@dataclass
class S3Server:
    endpoint: S3Endpoint

    @property
    def endpoint_url(self) -> str:
        return self.endpoint.url

    @property
    def upload_bucket(self) -> str:
        return self.endpoint.upload_bucket

    @property
    def public_bucket(self) -> str:
        return self.endpoint.public_bucket

    @property
    def credentials(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.endpoint.access_key,
            "AWS_SECRET_ACCESS_KEY": self.endpoint.secret_key,
            "AWS_DEFAULT_REGION": self.endpoint.region,
        }

    def client(self) -> Any:
        return self.endpoint.client()

    def env_for(self, upload_bucket: str, public_bucket: str) -> dict[str, str]:
        return self.endpoint.env(upload_bucket, public_bucket)

    @property
    def env(self) -> dict[str, str]:
        return self.endpoint.env()

    def fresh_env(self) -> dict[str, str]:
        """Env naming a new, empty pair of buckets (test isolation on one server); the
        public one is readable anonymously, as the cluster's own."""
        suffix = uuid.uuid4().hex[:10]
        upload, public = f"upload-{suffix}", f"public-{suffix}"
        client = self.client()
        for bucket in (upload, public):
            client.create_bucket(Bucket=bucket)
        client.put_bucket_policy(Bucket=public, Policy=anonymous_read_policy(public))
        return self.env_for(upload, public)


@pytest.fixture(scope="session")
def s3_server(devcluster: Any) -> Iterator[S3Server]:
    server = S3Server(devcluster.s3)
    # In-process boto3 clients (S3Storage) read credentials from the environment.
    saved = {key: os.environ.get(key) for key in server.credentials}
    os.environ.update(server.credentials)
    try:
        yield server
    finally:
        for key, previous in saved.items():
            if previous is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = previous


@pytest.fixture
def s3_env(s3_server: S3Server) -> dict[str, str]:
    return s3_server.fresh_env()
