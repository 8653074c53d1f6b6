"""``pinster-images devcluster up | down | status | kubeconfig | env | info | website |
storage-events | build-image``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from pinster_devcluster._builds import build_and_push
from pinster_devcluster._cluster import DevCluster
from pinster_devcluster._settings import DevClusterSettings
from pinster_images import logs
from pinster_images.errors import PermanentError, PinsterError


def _parser() -> argparse.ArgumentParser:
    # --state-dir is accepted before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="state directory (default: $PINSTER_DEVCLUSTER_DIR or ~/.local/state/pinster-images/devcluster)",
    )
    parser = argparse.ArgumentParser(
        prog="pinster-images devcluster",
        description="A local Kubernetes cluster for development and tests: a control plane "
        "(etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and a real node of this "
        "machine (kubelet, kube-proxy, containerd, CoreDNS, an image registry, a MinIO object "
        "store and its public website front). "
        "Pods' logs and shells: `kubectl logs`, `kubectl exec`.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", parents=[common], help="start the cluster (idempotent)")
    up.add_argument("--timeout", type=float, help="seconds to wait for readiness")
    up.add_argument(
        "--no-node", action="store_true", help="control plane only (no root needed, no Pods run)"
    )
    down = sub.add_parser("down", parents=[common], help="stop every process of the cluster")
    down.add_argument(
        "--purge", action="store_true", help="also delete the state directory (etcd data, certs)"
    )
    sub.add_parser("status", parents=[common], help="show each component; exit 1 unless all run")
    sub.add_parser("kubeconfig", parents=[common], help="print the admin kubeconfig path")
    sub.add_parser("env", parents=[common], help="print `export` lines for KUBECONFIG and PATH")
    sub.add_parser(
        "info",
        parents=[common],
        help="print JSON: node address, registry, object store (URL, buckets, credentials)",
    )
    website = sub.add_parser(
        "website",
        parents=[common],
        help="set a bucket's redirect rule: reads of a missing key go to URL?key=KEY "
        "(the service's GET /generate, as the original's bucket rule)",
    )
    website.add_argument("--bucket", required=True, help="the public bucket")
    rule = website.add_mutually_exclusive_group(required=True)
    rule.add_argument("--redirect-missing-to", metavar="URL", help="e.g. http://SERVICE/generate")
    rule.add_argument("--clear", action="store_true", help="remove the bucket's rule")
    events = sub.add_parser(
        "storage-events",
        parents=[common],
        help="send a bucket's s3:ObjectCreated:Post events (presigned POST uploads) of keys "
        "under raw/ to a webhook with a bearer token; restarts the object store",
    )
    events.add_argument("--bucket", required=True, help="the upload bucket")
    target = events.add_mutually_exclusive_group(required=True)
    target.add_argument("--webhook", metavar="URL", help="e.g. http://SERVICE/v1/storage-events")
    target.add_argument(
        "--clear", action="store_true", help="remove the bucket's webhook and its events"
    )
    events.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="file holding the bearer token (with --webhook; `-`: standard input), so the "
        "token never shows in the process list",
    )
    image = sub.add_parser(
        "build-image",
        parents=[common],
        help="build a Dockerfile with BuildKit and push it; prints REPOSITORY:TAG@DIGEST",
    )
    image.add_argument("--context", type=Path, default=Path(), help="build context (default: .)")
    image.add_argument(
        "--registry",
        help="push to this registry (host[:port][/path]; default: the devcluster's, which "
        "must be up); credentials from the Docker config (~/.docker/config.json)",
    )
    image.add_argument(
        "--registry-ca", type=Path, help="CA bundle the registry's certificate is signed by"
    )
    image.add_argument(
        "--base-image",
        help="the Dockerfile's BASE_IMAGE (default: Debian bookworm with python3, made here "
        "and pushed beside the image; python:3.11-slim-bookworm where Docker Hub is reachable)",
    )
    image.add_argument("--repository", default="pinster-images", help="image name in the registry")
    image.add_argument("--tag", help="default: the git revision of the context (-dirty if changed)")
    image.add_argument(
        "--extras", default="", help="the image's EXTRAS build argument, e.g. nudenet"
    )
    return parser


def _cluster(args: argparse.Namespace) -> DevCluster:
    settings = DevClusterSettings.from_env()
    if getattr(args, "state_dir", None) is not None:
        settings = dataclasses.replace(settings, state_dir=args.state_dir)
    if getattr(args, "timeout", None) is not None:
        settings = dataclasses.replace(settings, start_timeout=args.timeout)
    if getattr(args, "no_node", False):
        settings = dataclasses.replace(settings, node=False)
    return DevCluster.from_settings(settings)


def _up(cluster: DevCluster) -> int:
    result = cluster.up()
    if result.already_running:
        print(f"devcluster already running in {cluster.state_dir}", file=sys.stderr)
    else:
        print(f"devcluster up in {result.seconds:.1f}s ({cluster.server})", file=sys.stderr)
    print(f"export KUBECONFIG={shlex.quote(str(result.kubeconfig))}", file=sys.stderr)
    return 0


def _storage_events(cluster: DevCluster, args: argparse.Namespace) -> int:
    if args.clear:
        if args.token_file is not None:
            raise PermanentError("--token-file goes with --webhook, not --clear")
        cluster.set_storage_events(args.bucket, None)
        print(f"storage events of bucket {args.bucket}: cleared", file=sys.stderr)
        return 0
    if args.token_file is None:
        raise PermanentError("--webhook needs --token-file FILE (the bearer token MinIO sends)")
    cluster.set_storage_events(args.bucket, args.webhook, _read_token(args.token_file))
    print(f"storage events of bucket {args.bucket} -> {args.webhook}", file=sys.stderr)
    return 0


def _read_token(path: Path) -> str:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PermanentError(f"cannot read the token file {path}: {exc}") from exc
    token = text.strip()
    if not token:
        raise PermanentError(f"the token file {path} is empty")
    return token


def _status(cluster: DevCluster) -> int:
    expected = cluster.components()
    failing = 0
    for status in cluster.status():
        pid = f"pid {status.pid}" if status.pid is not None and status.state == "running" else ""
        first, *rest = (status.detail or "").splitlines() or [""]
        print(f"{status.name:<24} {status.state:<8} {pid:<11} {first}".rstrip())
        for line in rest:
            print(f"    {line}")
        if status.name in expected and status.state != "running":
            failing += 1
    return 1 if failing else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup("INFO", "text")
    try:
        cluster = _cluster(args)
        if args.command == "up":
            return _up(cluster)
        if args.command == "down":
            stopped = cluster.down(purge=args.purge)
            print(f"devcluster down: {len(stopped)} processes stopped", file=sys.stderr)
            return 0
        if args.command == "status":
            return _status(cluster)
        if args.command == "kubeconfig":
            print(cluster.kubeconfig)
            return 0
        if args.command == "info":
            print(json.dumps(cluster.info(), indent=2))
            return 0
        if args.command == "env":
            print(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
            print(f'export PATH={shlex.quote(str(cluster.bin_dir))}:"$PATH"')
            return 0
        if args.command == "website":
            cluster.set_website_redirect(
                args.bucket, None if args.clear else args.redirect_missing_to
            )
            return 0
        if args.command == "storage-events":
            return _storage_events(cluster, args)
        if args.registry is None:
            image = cluster.build_image(
                args.context.absolute(),
                repository=args.repository,
                tag=args.tag,
                extras=args.extras,
            )
        else:
            image = build_and_push(
                cluster.bin_dir,
                cluster.cache_dir,
                args.context.absolute(),
                registry=args.registry,
                registry_ca=args.registry_ca,
                base_image=args.base_image,
                repository=args.repository,
                tag=args.tag,
                extras=args.extras,
            )
        print(image)
        return 0
    except PinsterError as exc:
        print(f"devcluster {args.command}: {exc}", file=sys.stderr)
        return 1
