"""The object store's public front: Caddy (built from its Go module) on the node address.

It does for the devcluster what S3 static website hosting did for the original service:
anonymous ``GET``/``HEAD`` of any bucket, path-style (``/<bucket>/<key>``, the URLs the
service hands out), and, for a bucket given a redirect rule, a missing key answered with
a redirect to the service's ``GET /generate?key=<key>`` (the original's bucket rule that
renders a thumbnail on first request). MinIO has no website rules, so this front is the
part a MinIO or Ceph user would run too (docs/devcluster.md has the equivalent for nginx).

Rules are kept in ``<state>/node/website/rules.json`` (bucket -> generate URL) and
applied to the running front through Caddy's admin API (loopback), so setting one does
not restart anything.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pinster_devcluster import paths
from pinster_images.errors import PermanentError

#: Keys the redirect applies to: one path segment of the characters object keys of this
#: product use (``<md5>``, ``<md5>_<W>x<H>``); anything else is passed through as is.
_KEY_PATTERN = "[0-9A-Za-z_.-]+"
#: Missing objects: S3 answers 403 to an anonymous reader that may not list the bucket,
#: 404 to one that may.
_MISSING = [403, 404]


def rules_file(state_dir: Path) -> Path:
    return paths.node_dir(state_dir) / "website" / "rules.json"


def load_rules(state_dir: Path) -> dict[str, str]:
    """The redirect rules: bucket -> the ``/generate`` URL missing keys are sent to."""
    try:
        data = json.loads(rules_file(state_dir).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(bucket): str(url) for bucket, url in data.items()}


def save_rules(state_dir: Path, rules: dict[str, str]) -> None:
    path = rules_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rules, indent=2, sort_keys=True))


def config(
    listen: str, admin: str, objectstore: str, data_dir: Path, rules: dict[str, str]
) -> dict[str, Any]:
    """Caddy's JSON configuration: ``listen`` (``host:port``) proxies reads to
    ``objectstore`` (``host:port``); ``admin`` (``host:port``) is the admin API."""
    routes: list[dict[str, Any]] = [
        {
            # A read-only front: what S3 website endpoints allow.
            "match": [{"not": [{"method": ["GET", "HEAD"]}]}],
            "handle": [
                {
                    "handler": "static_response",
                    "status_code": 405,
                    "headers": {"Allow": ["GET, HEAD"]},
                }
            ],
            "terminal": True,
        }
    ]
    for bucket, generate_url in sorted(rules.items()):
        routes.append(
            {
                "match": [{"path_regexp": {"pattern": f"^/{re.escape(bucket)}/{_KEY_PATTERN}$"}}],
                "handle": [_proxy(objectstore, redirect_missing_to=generate_url)],
                "terminal": True,
            }
        )
    routes.append({"handle": [_proxy(objectstore)]})
    return {
        "admin": {"listen": admin, "config": {"persist": False}},
        # Certificates and locks Caddy keeps go to the state directory, not ~/.local.
        "storage": {"module": "file_system", "root": str(data_dir)},
        "apps": {
            "http": {
                "servers": {
                    "website": {
                        "listen": [listen],
                        "automatic_https": {"disable": True},
                        "routes": routes,
                    }
                }
            }
        },
    }


def _proxy(objectstore: str, redirect_missing_to: str | None = None) -> dict[str, Any]:
    handler: dict[str, Any] = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": objectstore}],
        # Only what a browser or CDN would send: no forwarded credentials or cookies.
        "headers": {"request": {"delete": ["Authorization", "Cookie"]}},
    }
    if redirect_missing_to is not None:
        separator = "&" if "?" in redirect_missing_to else "?"
        handler["handle_response"] = [
            {
                "match": {"status_code": _MISSING},
                "routes": [
                    {
                        "handle": [
                            {
                                "handler": "static_response",
                                # 307, not S3's default 301: a cached permanent redirect
                                # from a URL that exists a moment later loops for ever.
                                "status_code": 307,
                                "headers": {
                                    "Location": [
                                        f"{redirect_missing_to}{separator}key={{http.request.uri.path.file}}"
                                    ],
                                    "Cache-Control": ["no-store"],
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    return handler


def apply(admin: str, document: dict[str, Any]) -> None:
    """Load ``document`` into the running front (Caddy's ``POST /load``)."""
    request = urllib.request.Request(
        f"http://{admin}/load",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http:// built here)
            response.read()
    except urllib.error.HTTPError as exc:
        raise PermanentError(
            f"the website front refused its configuration: {exc.read().decode()[:500]}"
        ) from exc
    except OSError as exc:
        raise PermanentError(
            f"the website front's admin API at {admin} is unreachable: {exc}"
        ) from exc
