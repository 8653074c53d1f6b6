"""A development PinsterApi for `make run`: receives the image service's notifications.

The operator's last step is a signed POST to PinsterApi; without one, uploads would wait in
Notifying. This serves the same stand-in the tests use (tests/support/pinster_api.py: it
verifies the RS256 JWT with the image service's public key, `iss`, `aud`, `exp`, `nbf`,
and answers 400 to a body that does not match the operator's notification.schema.json)
on --host (the devcluster's node address, so that the operator's Pod reaches it), writes
its URL to --url-file once listening, and prints one JSON line per request received
(with what was wrong, if anything). Runs until SIGTERM or SIGINT.

    python scripts/dev_pinster_api.py --host 10.253.0.1 --public-key KEYS/image-service.pub \
        --service-url http://pinster-images --url-file STATE/pinster-api.url
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.pinster_api import PinsterApi  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--public-key", type=Path, required=True, help="image-service.pub")
    parser.add_argument("--service-url", required=True, help="the service's PINSTER_SERVICE_URL")
    parser.add_argument("--url-file", type=Path, required=True, help="where to write our URL")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    api = PinsterApi(public_key=args.public_key.read_bytes(), service_url=args.service_url)
    api.start(host=args.host)
    args.url_file.write_text(api.url + "\n")
    print(f"dev PinsterApi listening on {api.url}", flush=True)
    seen = 0
    try:
        while not stop.wait(0.5):
            received = api.all()
            for request in received[seen:]:
                data = request.body.get("data", {}) if isinstance(request.body, dict) else {}
                line = {
                    "path": request.path,
                    "status": request.status,
                    "error": request.error,
                    "imageable": f"{data.get('imageable_type')}/{data.get('imageable_id')}",
                    "uri": data.get("storage_location_uri"),
                }
                print(json.dumps(line), flush=True)
            seen = len(received)
    finally:
        api.stop()
        args.url_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
