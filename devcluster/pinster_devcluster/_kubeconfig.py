"""Kubeconfig files with the certificates embedded, so each file stands alone."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

CLUSTER = "devcluster"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write(
    path: Path, *, server: str, ca_cert: Path, client_cert: Path, client_key: Path, user: str
) -> None:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client_cert),
                    "client-key-data": _b64(client_key),
                },
            }
        ],
        "contexts": [
            {
                "name": CLUSTER,
                "context": {"cluster": CLUSTER, "user": user, "namespace": "default"},
            }
        ],
        "current-context": CLUSTER,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # It holds a private key: 0600 from creation; replaced atomically for running readers.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.safe_dump(document, handle, sort_keys=False)
    tmp.replace(path)
