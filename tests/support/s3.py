"""moto's S3 server over real HTTP on 127.0.0.1, for every suite.

Register with ``pytest_plugins = ["tests.support.s3"]`` in tests/conftest.py, then:

* ``s3_server`` (session): an :class:`S3Server` with ``endpoint_url``, the buckets
  ``upload_bucket``/``public_bucket`` already created, ``env`` (the PINSTER_* and AWS_*
  variables for StorageSettings.from_env or a subprocess) and ``client()`` (boto3).
* ``s3_env`` (per test): the same server with a fresh pair of buckets, as an env dict.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class S3Server:
    endpoint_url: str
    upload_bucket: str = "pinster-upload"
    public_bucket: str = "pinster-public"
    region: str = "us-east-1"
    _server: Any = field(default=None, repr=False)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def env_for(self, upload_bucket: str, public_bucket: str) -> dict[str, str]:
        return {
            **CREDENTIALS,
            "PINSTER_STORAGE_BACKEND": "s3",
            "PINSTER_S3_ENDPOINT_URL": self.endpoint_url,
            "PINSTER_S3_REGION": self.region,
            "PINSTER_S3_UPLOAD_BUCKET": upload_bucket,
            "PINSTER_S3_PUBLIC_BUCKET": public_bucket,
        }

    @property
    def env(self) -> dict[str, str]:
        return self.env_for(self.upload_bucket, self.public_bucket)

    def create_buckets(self, *names: str) -> None:
        client = self.client()
        for name in names:
            client.create_bucket(Bucket=name)

    def fresh_env(self) -> dict[str, str]:
        """Env naming a new, empty pair of buckets (test isolation on one server)."""
        suffix = uuid.uuid4().hex[:10]
        upload, public = f"upload-{suffix}", f"public-{suffix}"
        self.create_buckets(upload, public)
        return self.env_for(upload, public)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def start_s3_server() -> S3Server:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(endpoint_url=f"http://127.0.0.1:{port}", _server=server)
    s3.create_buckets(s3.upload_bucket, s3.public_bucket)
    return s3


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    # In-process boto3 clients (S3Storage) read credentials from the environment.
    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()
        for key, previous in saved.items():
            if previous is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = previous


@pytest.fixture
def s3_env(s3_server: S3Server) -> dict[str, str]:
    return s3_server.fresh_env()
