"""Notifications to PinsterApi (and SNS), exactly as the original service sent them.

Approved: ``POST <api>/v1/images/`` with the original body plus ``thumbnails``; Rejected:
``POST <api><flagged path>`` with the verdict, and the original SNS publish when a topic
is configured. Both are signed with an RS256 JWT (``iss`` = our URL, ``aud`` = PinsterApi,
10 s expiry) and carry ``Idempotency-Key: <upload name>`` so a retried POST is
recognisable. Building bodies and the backoff schedule are pure; :func:`post` does I/O.
Both bodies are described by ``notification.schema.json`` beside this module (it ships
in the package, for PinsterApi's developers: docs/pinster-api.md).
"""

from __future__ import annotations

import functools
import json
import os
import random
from dataclasses import dataclass
from importlib import resources
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from pinster_images import keys
from pinster_images.errors import PermanentError, TemporaryError
from pinster_images.resource import ImageUploadSpec
from pinster_operator._settings import NotifySettings

IMAGES_PATH = "/v1/images/"
SNS_SUBJECT = "Image Moderation Failure"
TOKEN_TTL = 10.0
SCHEMA_FILE = "notification.schema.json"


def notification_schema() -> dict[str, Any]:
    """The JSON Schema of the approved and flagged bodies (draft 2020-12)."""
    schema: dict[str, Any] = json.loads(
        resources.files("pinster_operator").joinpath(SCHEMA_FILE).read_text()
    )
    return schema


def approved_body(
    spec: ImageUploadSpec, original_url: str, published: dict[str, Any]
) -> dict[str, Any]:
    """The original body, field for field and in order, plus the list of thumbnails.

    ``original_url`` is ``<public url>/<md5>``, as the original computed it.
    """
    return {
        "data": {
            "imageable_id": spec.uploader.imageable_id,
            "imageable_type": spec.uploader.imageable_type,
            "base_file_name": spec.md5,
            "storage_location_uri": original_url,
            "thumbnailable": True,
            "thumbnails": [
                {
                    "size": t.get("size"),
                    "width": t.get("width"),
                    "height": t.get("height"),
                    "uri": t.get("url"),
                }
                for t in published.get("thumbnails") or []
            ],
        }
    }


def flagged_body(spec: ImageUploadSpec, upload: str, verdict: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": {
            "imageable_id": spec.uploader.imageable_id,
            "imageable_type": spec.uploader.imageable_type,
            "base_file_name": spec.md5,
            "user_id": spec.uploader.user_id,
            "upload": upload,
            "reason": "ModerationThresholdExceeded",
            "verdict": {
                "decision": verdict.get("decision"),
                "backend": verdict.get("backend"),
                "threshold": verdict.get("threshold"),
                "labels": verdict.get("labels") or [],
            },
        }
    }


def sns_message(spec: ImageUploadSpec, upload: str, verdict: dict[str, Any]) -> str:
    """The event as JSON, as the original published it."""
    return json.dumps(
        {
            "upload": upload,
            "bucket": spec.bucket,
            "key": spec.key,
            "base_file_name": spec.md5,
            "user_id": spec.uploader.user_id,
            "imageable_type": spec.uploader.imageable_type,
            "imageable_id": spec.uploader.imageable_id,
            "moderationLabels": verdict.get("labels") or [],
            "reason": "ModerationThresholdExceeded",
        },
        sort_keys=True,
    )


@functools.lru_cache(maxsize=4)
def _signing_key(private_pem: bytes) -> rsa.RSAPrivateKey:
    """Parsed once per key: loading a PEM costs ~40 ms of CPU, signing with it ~0.3 ms."""
    return keys.load_private_key(private_pem)


def token(settings: NotifySettings, spec: ImageUploadSpec, now: float | None = None) -> str:
    assert settings.private_key is not None
    return keys.mint(
        _signing_key(settings.private_key),
        issuer=settings.service_url,
        audience=settings.api_url,
        claims={
            "imageable_type": spec.uploader.imageable_type,
            "imageable_id": spec.uploader.imageable_id,
        },
        ttl=TOKEN_TTL,
        now=now,
    )


def backoff_delay(
    attempt: int, *, initial: float, maximum: float, rand: float | None = None
) -> float:
    """Exponential backoff with equal jitter: half fixed, half random.

    ``attempt`` counts failures so far (1 after the first). ``rand`` in [0, 1).
    """
    r = random.random() if rand is None else rand
    base = min(maximum, initial * 2.0 ** max(0, attempt - 1))
    return base / 2 + base / 2 * r


def classify_status(status: int) -> str:
    """``ok``, ``temporary`` or ``permanent`` for an HTTP answer."""
    if 200 <= status < 300:
        return "ok"
    if status in (408, 425, 429) or status >= 500:
        return "temporary"
    return "permanent"


def new_session(settings: NotifySettings) -> requests.Session:
    """A keep-alive session to PinsterApi that reads the environment once: proxies for
    the API's URL (``NO_PROXY`` honoured) and the CA bundle (``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE``). By default requests redoes that, and a ``.netrc`` lookup, on
    every call. Not thread-safe: one per thread."""
    session = requests.Session()
    session.trust_env = False
    proxies = requests.utils.get_environ_proxies(settings.api_url)  # {} when NO_PROXY says
    session.proxies = {scheme: url for scheme, url in proxies.items() if scheme != "no"}
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session


@dataclass(frozen=True)
class Sent:
    status: int


def post(
    settings: NotifySettings,
    path: str,
    body: dict[str, Any],
    *,
    spec: ImageUploadSpec,
    idempotency_key: str,
    session: requests.Session | None = None,
) -> Sent:
    """One signed POST. Raises TemporaryError (retry) or PermanentError (give up)."""
    url = settings.api_url + path
    headers = {
        "Authorization": f"Bearer {token(settings, spec)}",
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
    }
    http = session or requests
    try:
        response = http.post(url, data=json.dumps(body), headers=headers, timeout=settings.timeout)
    except requests.RequestException as exc:
        raise TemporaryError(
            f"POST {url} failed: {exc.__class__.__name__}", reason="NotificationUnreachable"
        ) from exc
    kind = classify_status(response.status_code)
    if kind == "ok":
        return Sent(response.status_code)
    excerpt = response.text[:200].replace("\n", " ")
    message = f"POST {url} answered {response.status_code}: {excerpt}"
    if kind == "temporary":
        raise TemporaryError(message, reason="NotificationRefused")
    raise PermanentError(message, reason="NotificationRejected")


def publish_sns(settings: NotifySettings, message: str) -> str:
    """Publish the moderation failure to SNS; returns the MessageId."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "sns", endpoint_url=settings.sns_endpoint_url, region_name=settings.sns_region
    )
    try:
        response = client.publish(
            TopicArn=settings.sns_topic_arn or "", Subject=SNS_SUBJECT, Message=message
        )
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if status >= 500 or code in ("Throttling", "ThrottlingException", "InternalError"):
            raise TemporaryError(f"SNS publish: {code}", reason="SnsUnavailable") from exc
        raise PermanentError(f"SNS publish refused: {code}", reason="SnsRejected") from exc
    except BotoCoreError as exc:
        raise TemporaryError(f"SNS publish: {exc}", reason="SnsUnavailable") from exc
    return str(response.get("MessageId", ""))
