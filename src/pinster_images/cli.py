"""``pinster-images``: one command for every role, so one container image serves them all.

Each subcommand lives with its role and is imported only when used, so that
``pinster-images job ...`` does not pay for the operator's imports.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from typing import NoReturn

from pinster_images import __version__

#: subcommand -> (module with ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "ingress": ("pinster_ingress.cli", "run the upload service (HTTP)"),
    "operator": ("pinster_operator.cli", "run the ImageUpload operator (kopf)"),
    "job": ("pinster_jobs.cli", "run moderation or thumbnail work for uploads (Job pods)"),
    "upload": ("pinster_ingress.client", "upload image files, optionally wait until Ready"),
    "keys": ("pinster_images.keys", "generate and show development JWT key pairs"),
    "devcluster": (
        "pinster_devcluster.cli",
        "local Kubernetes cluster with a real node (dev, tests)",
    ),
}


#: Commands that end with ``os._exit`` once their output is flushed: a Job pod's
#: process otherwise spends ~0.15 s of CPU (and of its Job's latency) tearing down the
#: modules it imported, for nothing (the container ends with it).
QUICK_EXIT = frozenset({"job"})


def usage() -> str:
    lines = [f"usage: pinster-images COMMAND [ARGS...]   (version {__version__})", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'pinster-images COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        code = _dispatch(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`pinster-images --help | head -1`): stop quietly, as
        # command-line tools do on SIGPIPE; the interpreter's final flush must not fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] == "--version":
        print(__version__)
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"pinster-images: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(entry[0])
    result: int = module.main(args[1:])
    return result


def run() -> NoReturn:
    """The console script: :func:`main`, then exit (quickly for :data:`QUICK_EXIT`)."""
    code = main()
    if sys.argv[1:2] and sys.argv[1] in QUICK_EXIT:
        logging.shutdown()  # flushes every handler
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
