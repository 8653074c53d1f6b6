"""``pinster-images devcluster up | down | status | kubeconfig | env | logs``."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from pinster_devcluster import paths
from pinster_devcluster._cluster import DevCluster
from pinster_devcluster._settings import DevClusterSettings
from pinster_images import logs
from pinster_images.errors import PinsterError


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
        description="A local Kubernetes control plane (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler, node agent) for development and tests.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", parents=[common], help="start the cluster (idempotent)")
    up.add_argument("--timeout", type=float, help="seconds to wait for readiness")
    up.add_argument("--no-agent", action="store_true", help="do not start the node agent")
    down = sub.add_parser("down", parents=[common], help="stop every process of the cluster")
    down.add_argument(
        "--purge", action="store_true", help="also delete the state directory (etcd data, certs)"
    )
    sub.add_parser("status", parents=[common], help="show each component; exit 1 unless all run")
    sub.add_parser("kubeconfig", parents=[common], help="print the admin kubeconfig path")
    sub.add_parser("env", parents=[common], help="print `export` lines for KUBECONFIG and PATH")
    logs_ = sub.add_parser("logs", parents=[common], help="print a container's output")
    logs_.add_argument("pod", metavar="POD")
    logs_.add_argument("-c", "--container", help="container name (needed if several)")
    logs_.add_argument("-n", "--namespace", default="default")
    return parser


def _cluster(args: argparse.Namespace) -> DevCluster:
    settings = DevClusterSettings.from_env()
    if getattr(args, "state_dir", None) is not None:
        settings = dataclasses.replace(settings, state_dir=args.state_dir)
    if getattr(args, "timeout", None) is not None:
        settings = dataclasses.replace(settings, start_timeout=args.timeout)
    if getattr(args, "no_agent", False):
        settings = dataclasses.replace(settings, agent=False)
    return DevCluster.from_settings(settings)


def _up(cluster: DevCluster) -> int:
    result = cluster.up()
    if result.already_running:
        print(f"devcluster already running in {cluster.state_dir}", file=sys.stderr)
    else:
        print(f"devcluster up in {result.seconds:.1f}s ({cluster.server})", file=sys.stderr)
    print(f"export KUBECONFIG={shlex.quote(str(result.kubeconfig))}", file=sys.stderr)
    return 0


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


def _logs(cluster: DevCluster, namespace: str, pod: str, container: str | None) -> int:
    try:
        directory = paths.pod_dir(cluster.state_dir, namespace, pod)
    except ValueError as exc:
        print(f"devcluster logs: {exc}", file=sys.stderr)
        return 2
    available = sorted(p.stem for p in directory.glob("*.log"))
    if container is None:
        if len(available) != 1:
            if not available:
                print(
                    f"devcluster logs: no output of pod {namespace}/{pod} in {directory}",
                    file=sys.stderr,
                )
            else:
                print(
                    f"devcluster logs: pod {namespace}/{pod} has several containers, choose one with -c: {' '.join(available)}",
                    file=sys.stderr,
                )
            return 1
        container = available[0]
    logfile = paths.container_log(cluster.state_dir, namespace, pod, container)
    try:
        data = logfile.read_bytes()
    except FileNotFoundError:
        print(
            f"devcluster logs: no output of container {container!r} of pod {namespace}/{pod} ({logfile})",
            file=sys.stderr,
        )
        return 1
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


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
        if args.command == "env":
            print(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
            print(f'export PATH={shlex.quote(str(cluster.bin_dir))}:"$PATH"')
            return 0
        return _logs(cluster, args.namespace, args.pod, args.container)
    except PinsterError as exc:
        print(f"devcluster {args.command}: {exc}", file=sys.stderr)
        return 1
