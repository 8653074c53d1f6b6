"""The devcluster on this machine: start-up, Pod start latency, image build, idle memory.

Figures, each the median over ``--rounds``:
- ``up`` into a fresh state directory (certificates, etcd, registry and images from
  nothing, until the node is Ready and CoreDNS available), ``down``, and ``up`` again on
  the same state (the everyday restart);
- Pod create -> Running on the node (the pause image, so the figure is the kubelet,
  containerd, runc and CNI, not a pull): one at a time, and ten created at once;
- the product image: build + push with BuildKit's cache warm (nothing changed), and after
  a change to one source file; its size (compressed layers, as pulled);
- idle RSS of every component after ``--idle`` seconds;
- with ``--make-run``: `make run` then `make stop` in a fresh clone of this repository
  (warm build caches), the newcomer's first command.

Ratios compare figures of the same run: restart/fresh, ten-at-once/one.
Needs root and no other devcluster node on the machine.

Run: ``.venv/bin/python bench/bench_devcluster.py [--rounds 3] [--idle 20] [--make-run]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client  # noqa: E402
from pinster_devcluster import DevCluster  # noqa: E402
from pinster_devcluster._builds import pause_name  # noqa: E402
from pinster_devcluster._images import registry_context  # noqa: E402
from pinster_devcluster._procs import family, read_record  # noqa: E402
from pinster_devcluster.paths import pid_file  # noqa: E402

from pinster_images.kube import api_client  # noqa: E402
from tests.support.procstat import memory_mib  # noqa: E402


def component_rss(cluster: DevCluster) -> dict[str, float]:
    """MiB per component (the component and everything it started)."""
    result = {}
    for name in cluster.components():
        record = read_record(pid_file(cluster.state_dir, name))
        if record is not None:
            result[name] = sum(memory_mib(m.pid) for m in family(record))
    return result


def pod_start_seconds(core: client.CoreV1Api, image: str, names: list[str]) -> float:
    """Seconds from creating ``names`` (at once) until every one is Running."""
    namespace = "default"
    started = time.monotonic()

    def create(name: str) -> None:
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": image}],
                },
            },
        )

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(create, names))
    waiting = set(names)
    while waiting:
        for pod in core.list_namespaced_pod(namespace).items:
            if pod.metadata.name in waiting and pod.status.phase == "Running":
                waiting.discard(pod.metadata.name)
        if waiting:
            time.sleep(0.02)  # polling the API server: the condition is the measurement
    elapsed = time.monotonic() - started
    for name in names:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    while {p.metadata.name for p in core.list_namespaced_pod(namespace).items} & set(names):
        time.sleep(0.1)
    return elapsed


def image_size_mb(cluster: DevCluster, image: Any) -> float:
    """Compressed size of the image's layers and config, as a node pulls it."""
    host, _, name = image.repository.partition("/")
    request = urllib.request.Request(
        f"https://{host}/v2/{name}/manifests/{image.digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(
        request, timeout=10, context=registry_context(cluster.ca_cert)
    ) as answer:
        manifest = json.load(answer)
    return (manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])) / 1e6


def timed(command: list[str], cwd: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds idle before RSS")
    parser.add_argument("--make-run", action="store_true", help="also time make run / make stop")
    args = parser.parse_args()

    figures: dict[str, list[float]] = {}
    memory: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="bench-devcluster-") as tmp:
            cluster = DevCluster(Path(tmp) / "state")
            try:
                record("up, fresh state", cluster.up().seconds)
                started = time.monotonic()
                cluster.down()
                record("down", time.monotonic() - started)
                record("up, existing state", cluster.up().seconds)
                core = client.CoreV1Api(api_client(str(cluster.kubeconfig)))
                pause = f"{cluster.registry}/{pause_name(cluster.bin_dir)}"
                for i in range(3):
                    record(
                        "pod create -> Running, one", pod_start_seconds(core, pause, [f"one-{i}"])
                    )
                record(
                    "pod create -> Running, ten at once",
                    pod_start_seconds(core, pause, [f"ten-{i}" for i in range(10)]),
                )
                if round_ == 1:
                    started = time.monotonic()
                    image = cluster.build_image(ROOT)
                    record("image build+push, first in this state", time.monotonic() - started)
                started = time.monotonic()
                image = cluster.build_image(ROOT)
                record("image build+push, unchanged (cache warm)", time.monotonic() - started)
                with tempfile.TemporaryDirectory(prefix="bench-context-") as context:
                    copy = Path(context) / "repo"
                    shutil.copytree(
                        ROOT,
                        copy,
                        ignore=shutil.ignore_patterns(".venv", ".state", ".git", "__pycache__"),
                    )
                    touched = copy / "src" / "pinster_images" / "__init__.py"
                    touched.write_text(touched.read_text() + f"\n# bench {time.time()}\n")
                    started = time.monotonic()
                    cluster.build_image(copy, tag="bench")
                    record("image build+push, one source file changed", time.monotonic() - started)
                record("image size, compressed (MB)", image_size_mb(cluster, image))
                time.sleep(args.idle)  # measuring idle memory: the wait is the point
                for name, mib in component_rss(cluster).items():
                    memory.setdefault(name, []).append(mib)
            finally:
                cluster.down()
        print(
            f"round {round_}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in figures.items()),
            flush=True,
        )

    if args.make_run:
        with tempfile.TemporaryDirectory(prefix="bench-clone-") as tmp:
            clone = Path(tmp) / "clone"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            record("make run, fresh clone, warm caches", timed(["make", "run"], clone))
            record("make stop", timed(["make", "stop"], clone))

    print(f"\nmedian of {args.rounds} rounds (seconds unless said)")
    for name, values in figures.items():
        print(f"  {name:<44} {statistics.median(values):8.2f}")
    median = {name: statistics.median(values) for name, values in figures.items()}
    print(
        f"  {'ratio restart / fresh up':<44} {median['up, existing state'] / median['up, fresh state']:8.2f}"
    )
    one, ten = median["pod create -> Running, one"], median["pod create -> Running, ten at once"]
    print(f"  {'ratio ten at once / one pod':<44} {ten / one:8.2f}")
    print(f"  idle RSS after {args.idle:.0f} s (MiB):")
    for name, values in memory.items():
        print(f"    {name:<24} {statistics.median(values):6.0f}")
    total = statistics.median([sum(v[i] for v in memory.values()) for i in range(args.rounds)])
    print(f"    {'total':<24} {total:6.0f}")


if __name__ == "__main__":
    main()
