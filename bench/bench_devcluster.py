"""devcluster start-up time and the resident memory of the idle control plane.

For each round: ``up`` into a fresh state directory (certificates generated, etcd
empty), ``down``, ``up`` again on the same state (the everyday restart), then, after the
cluster has been idle for ``--idle`` seconds, the RSS of each component (its whole
process family). Prints each figure and the median over rounds.

Run: ``.venv/bin/python bench/bench_devcluster.py [--rounds 3] [--idle 30]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pinster_devcluster import DevCluster  # noqa: E402
from pinster_devcluster._procs import family, read_record  # noqa: E402
from pinster_devcluster.paths import pid_file  # noqa: E402

from tests.support.procstat import memory_mib  # noqa: E402


def component_rss(cluster: DevCluster) -> dict[str, float]:
    """MiB per component (the component and everything it started)."""
    result = {}
    for name in cluster.components():
        record = read_record(pid_file(cluster.state_dir, name))
        if record is not None:
            result[name] = sum(memory_mib(m.pid) for m in family(record))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle before RSS")
    args = parser.parse_args()

    fresh, warm = [], []
    memory: dict[str, list[float]] = {}
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="bench-devcluster-") as tmp:
            cluster = DevCluster(Path(tmp) / "state")
            try:
                fresh.append(cluster.up().seconds)
                cluster.down()
                warm.append(cluster.up().seconds)
                time.sleep(args.idle)  # measuring idle memory: the wait is the point
                for name, mib in component_rss(cluster).items():
                    memory.setdefault(name, []).append(mib)
            finally:
                cluster.down()
        total = sum(values[-1] for values in memory.values())
        print(
            f"round {round_}: up (fresh state) {fresh[-1]:.2f}s, up (existing state) "
            f"{warm[-1]:.2f}s, idle RSS {total:.0f} MiB"
        )

    print(f"\nmedian of {args.rounds} rounds")
    print(f"  up, fresh state dir     {statistics.median(fresh):6.2f} s")
    print(f"  up, existing state dir  {statistics.median(warm):6.2f} s")
    ratio = statistics.median(warm) / statistics.median(fresh)
    print(f"  restart / fresh         {ratio:6.2f}")
    print(f"  idle RSS after {args.idle:.0f} s:")
    for name, values in memory.items():
        print(f"    {name:<24} {statistics.median(values):6.0f} MiB")
    total = statistics.median([sum(v[i] for v in memory.values()) for i in range(args.rounds)])
    print(f"    {'total':<24} {total:6.0f} MiB")


if __name__ == "__main__":
    main()
