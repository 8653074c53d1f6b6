"""``pinster-images upload FILE... [--wait]``: upload images as PinsterApi's clients do.

Mints the upload token itself from a development key directory (``pinster-images keys
generate DIR`` writes ``pinster-api.key``), posts each file (JSON data URI, or the raw
form with ``--raw``; or straight to the object store with ``--direct``: a presigned POST
from ``POST /v1/uploads``) and prints the ImageUpload name. With ``--wait`` it follows each
upload's phase until it is terminal. Exit status: 0 when every upload is Ready, 1 when
one was Rejected or Failed, 2 for usage and HTTP errors (the server's message is shown).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import mimetypes
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import requests

from pinster_images import keys
from pinster_images.config import env_pem
from pinster_images.resource import Phase
from pinster_images.sniff import detect

TERMINAL = {phase.value for phase in Phase if phase.terminal}
USAGE, FAILED = 2, 1


class ClientError(Exception):
    """An HTTP or usage problem: exit status 2."""


def _parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="pinster-images upload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--wait", action="store_true", help="follow each upload until terminal")
    parser.add_argument(
        "--url",
        default=env.get("PINSTER_INGRESS_URL", "http://127.0.0.1:8080"),
        help="upload service base URL (env PINSTER_INGRESS_URL)",
    )
    parser.add_argument(
        "--keys",
        type=Path,
        default=Path(env.get("PINSTER_KEYS_DIR", "keys")),
        help="key directory with pinster-api.key (env PINSTER_KEYS_DIR)",
    )
    parser.add_argument(
        "--service-url",
        default=env.get("PINSTER_SERVICE_URL"),
        help="token aud: the service's PINSTER_SERVICE_URL (default: --url)",
    )
    parser.add_argument(
        "--api-url",
        default=env.get("PINSTER_API_URL", "http://pinster-api"),
        help="token iss: the service's PINSTER_API_URL",
    )
    parser.add_argument("--user-id", default="dev-user")
    parser.add_argument("--imageable-type", default="Pin")
    parser.add_argument("--imageable-id", default="1")
    parser.add_argument("--name", help="optional image name (4-139 characters)")
    parser.add_argument("--description", help="optional description (4-139 characters)")
    parser.add_argument("--featured", help="optional ISO 8601 timestamp")
    form = parser.add_mutually_exclusive_group()
    form.add_argument(
        "--raw",
        action="store_true",
        help="send the bytes with Content-Type image/* instead of a JSON data URI",
    )
    form.add_argument(
        "--direct",
        action="store_true",
        help="store the bytes in the object store with a presigned POST (POST /v1/uploads)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="--wait gives up after this")
    parser.add_argument("--interval", type=float, default=1.0, help="--wait polling interval")
    return parser


class Uploader:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = args.url.rstrip("/")
        key_file = args.keys / keys.API_PRIVATE
        try:
            # A signing key in the environment (the chart's `helm test` Pod) wins over the
            # development key directory.
            from_env = env_pem(os.environ, "PINSTER_UPLOAD_SIGNING_KEY")
            self.private = from_env if from_env is not None else key_file.read_bytes()
        except OSError as exc:
            raise ClientError(
                f"cannot read {key_file}: {exc.strerror} "
                f"(make one with: pinster-images keys generate {args.keys})"
            ) from None
        self.session = requests.Session()

    def headers(self) -> dict[str, str]:
        token = keys.mint(
            self.private,
            issuer=self.args.api_url,
            audience=self.args.service_url or self.base,
            claims={
                "user_id": self.args.user_id,
                "imageable_type": self.args.imageable_type,
                "imageable_id": self.args.imageable_id,
            },
            ttl=60,
        )
        return {"Authorization": f"Bearer {token}"}

    def _fields(self) -> dict[str, str]:
        names = ("name", "description", "featured")
        return {key: getattr(self.args, key) for key in names if getattr(self.args, key)}

    def upload(self, path: Path) -> dict[str, Any]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ClientError(f"{path}: {exc.strerror}") from None
        content_type = detect(data) or mimetypes.guess_type(path.name)[0] or "image/jpeg"
        if self.args.direct:
            return self._direct(path, data, content_type)
        if self.args.raw:
            response = self.session.post(
                f"{self.base}/v1/images",
                data=data,
                params=self._fields(),
                headers={**self.headers(), "Content-Type": content_type},
                timeout=120,
            )
        else:
            uri = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
            response = self.session.post(
                f"{self.base}/v1/images",
                json={"data": {"image": uri, **self._fields()}},
                headers=self.headers(),
                timeout=120,
            )
        return self._json(response, str(path), (200, 202))

    def _direct(self, path: Path, data: bytes, content_type: str) -> dict[str, Any]:
        described = {
            "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            "content_type": content_type,
            "size": len(data),
            **self._fields(),
        }
        response = self.session.post(
            f"{self.base}/v1/uploads",
            json={"data": described},
            headers=self.headers(),
            timeout=30,
        )
        permit = self._json(response, str(path), (201,))["data"]
        # The form's fields as given, the file last (S3 ignores fields after it).
        stored = self.session.post(
            permit["url"],
            data=permit["fields"],
            files={"file": (path.name, data, content_type)},
            timeout=300,
        )
        if stored.status_code not in (200, 201, 204):
            raise ClientError(f"{path}: the object store refused it: {s3_error(stored)}")
        return {"name": permit["name"], "status_url": permit["status_url"]}

    def status(self, status_url: str) -> dict[str, Any] | None:
        """The upload's status; None while it does not exist yet (a direct upload before
        the object store has reported the object)."""
        response = self.session.get(f"{self.base}{status_url}", headers=self.headers(), timeout=30)
        if response.status_code == 404 and self.args.direct:
            return None
        return self._json(response, status_url, (200,))

    @staticmethod
    def _json(response: requests.Response, what: str, ok: tuple[int, ...]) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        if response.status_code not in ok:
            message = body.get("error") if isinstance(body, dict) else None
            if isinstance(body, dict) and "errors" in body:
                message = json.dumps(body["errors"])
            raise ClientError(f"{what}: HTTP {response.status_code}: {message or body}")
        if not isinstance(body, dict):
            raise ClientError(f"{what}: unexpected answer {body!r}")
        return body


def s3_error(response: requests.Response) -> str:
    """``HTTP 403 AccessDenied: Invalid according to Policy: Policy expired`` from S3's
    XML error body."""
    # Two elements of a small document we do not otherwise need: no XML parser for them.
    code, message = (
        match.group(1) if (match := re.search(f"<{tag}>([^<]*)</{tag}>", response.text)) else ""
        for tag in ("Code", "Message")
    )
    if not code and not message:
        message = response.text[:300]
    return f"HTTP {response.status_code} {code}: {message}".replace(" :", ":")


def _wait(
    uploader: Uploader, accepted: list[dict[str, Any]], timeout: float, interval: float
) -> int:
    last: dict[str, str] = {}
    pending = {item["name"]: item["status_url"] for item in accepted}
    deadline = time.monotonic() + timeout
    final: dict[str, str] = {}
    while pending:
        for name, url in list(pending.items()):
            try:
                status = uploader.status(url)
            except requests.RequestException as exc:
                print(f"{name}: {exc} (still waiting)", file=sys.stderr)
                continue
            if status is None:
                status = {"phase": "Stored"}  # until the object store reports it
            phase = str(status.get("phase"))
            if last.get(name) != phase:
                last[name] = phase
                reason = next(
                    (
                        c.get("reason")
                        for c in status.get("conditions") or []
                        if c.get("type") == "Ready"
                    ),
                    None,
                )
                print(f"{name} {phase}" + (f" ({reason})" if reason else ""), flush=True)
            if phase in TERMINAL:
                final[name] = phase
                del pending[name]
                if phase == Phase.READY:
                    for size, url_ in (status.get("urls") or {}).items():
                        print(f"  {size}: {url_}")
        if pending:
            if time.monotonic() > deadline:
                raise ClientError(
                    f"timed out after {timeout:.0f}s waiting for {', '.join(pending)}"
                )
            time.sleep(interval)
    return 0 if all(phase == Phase.READY for phase in final.values()) else FAILED


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        uploader = Uploader(args)
        accepted = []
        for path in args.files:
            answer = uploader.upload(path)
            print(answer["name"], flush=True)
            accepted.append(answer)
        if not args.wait:
            return 0
        return _wait(uploader, accepted, args.timeout, args.interval)
    except ClientError as exc:
        print(f"pinster-images upload: {exc}", file=sys.stderr)
        return USAGE
    except requests.RequestException as exc:
        print(f"pinster-images upload: {args.url}: {exc}", file=sys.stderr)
        return USAGE
