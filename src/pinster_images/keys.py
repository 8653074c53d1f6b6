"""RS256 key pairs and tokens.

Two key pairs exist, as in the original service: PinsterApi's (it signs the users'
upload tokens; we verify with its public key) and the image service's own (it signs
notifications to PinsterApi). ``pinster-images keys generate DIR`` makes both for
development and tests; production keys come from Secrets.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ALGORITHM = "RS256"
#: File names inside a key directory made by ``keys generate``.
API_PRIVATE, API_PUBLIC = "pinster-api.key", "pinster-api.pub"
SERVICE_PRIVATE, SERVICE_PUBLIC = "image-service.key", "image-service.pub"


def generate_private_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_of(private_pem: bytes) -> bytes:
    return (
        load_private_key(private_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def mint(
    private_pem: bytes | rsa.RSAPrivateKey,
    *,
    issuer: str,
    audience: str,
    claims: dict[str, Any],
    ttl: float = 10.0,
    now: float | None = None,
) -> str:
    """An RS256 JWT with ``iss``, ``aud``, ``iat``, ``nbf`` now and ``exp`` after ``ttl``.

    ``private_pem`` may also be a key loaded once with :func:`load_private_key`: parsing
    and checking a PEM costs tens of milliseconds, signing with a loaded key well under one.
    """
    issued = int(now if now is not None else time.time())
    payload = {
        **claims,
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + max(1, round(ttl)),
    }
    return jwt.encode(payload, private_pem, algorithm=ALGORITHM)


def load_private_key(private_pem: bytes) -> rsa.RSAPrivateKey:
    """The RSA private key of a PEM, parsed (and checked) once for many :func:`mint` calls."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("an RS256 signing key must be an RSA private key")
    return key


def generate_dir(directory: Path, *, overwrite: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for private, public in ((API_PRIVATE, API_PUBLIC), (SERVICE_PRIVATE, SERVICE_PUBLIC)):
        if (directory / private).exists() and not overwrite:
            continue
        pem = generate_private_key()
        (directory / private).write_bytes(pem)
        (directory / private).chmod(0o600)
        (directory / public).write_bytes(public_key_of(pem))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pinster-images keys", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    gen = sub.add_parser("generate", help="write both development key pairs into DIR")
    gen.add_argument("directory", type=Path)
    gen.add_argument("--overwrite", action="store_true", help="replace existing keys")
    show = sub.add_parser("base64", help="print a PEM file base64-encoded (the env var form)")
    show.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.action == "generate":
        generate_dir(args.directory, overwrite=args.overwrite)
        for name in (API_PRIVATE, API_PUBLIC, SERVICE_PRIVATE, SERVICE_PUBLIC):
            print(args.directory / name)
        return 0
    sys.stdout.write(base64.b64encode(args.file.read_bytes()).decode() + "\n")
    return 0
