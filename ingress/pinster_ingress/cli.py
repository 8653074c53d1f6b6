"""``pinster-images ingress``: serve the upload service with uvicorn."""

from __future__ import annotations

import argparse
import logging

from pinster_images import logs
from pinster_images.config import environ
from pinster_images.errors import ConfigError, TemporaryError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pinster-images ingress",
        description="Serve the upload service. Settings come from PINSTER_* variables "
        "(docs/ingress.md); --host/--port override PINSTER_INGRESS_HOST/PORT.",
    )
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)

    import uvicorn

    from pinster_ingress._settings import IngressSettings

    try:
        settings = IngressSettings.from_env(environ())
        logs.setup(settings.log_level, settings.log_format)
        # Settings that cannot work (credentials S3 refuses, no such bucket) stop the
        # service now; a store that is only down keeps it unready (503s) until it is back.
        settings.storage.open().check()
    except ConfigError as exc:
        print(f"pinster-images ingress: {exc}")
        return 2
    except TemporaryError as exc:
        logging.getLogger("pinster_ingress").warning(
            "storage unreachable at start (%s); /readyz and uploads answer 503 until it is back",
            exc,
        )
    uvicorn.run(
        "pinster_ingress._app:app_from_env",
        factory=True,  # a string, so that each worker process builds its own app
        workers=settings.workers,
        # The C parser and loop, named so that a missing one fails instead of falling
        # back to h11 and asyncio's loop (about a tenth more CPU per upload and a longer
        # tail: docs/ingress.md "Benchmark").
        http="httptools",
        loop="uvloop",
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
        timeout_keep_alive=settings.keep_alive,
        log_config=None,  # keep our structured logging
        access_log=False,  # /metrics counts requests
        timeout_graceful_shutdown=20,
    )
    return 0
