"""What a devcluster node could leave behind on this machine, read in one snapshot.

``snapshot()`` before the node starts and after ``down``; ``differences(before, after)``
names everything that changed: processes of the node's binaries, mounts, network
interfaces, iptables chains and nftables tables, cgroups, sysctls, host directories.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path

from pinster_devcluster._host import SYSCTLS, cgroup_dirs, read_sysctls

HOST_DIRS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/run/netns",
    "/run/pinster-devcluster",
)


@dataclass(frozen=True)
class Machine:
    processes: frozenset[str]
    mounts: frozenset[str]
    links: frozenset[str]
    iptables_chains: frozenset[str]
    nft_tables: frozenset[str]
    cgroups: frozenset[str]
    sysctls: tuple[tuple[str, str], ...]
    host_dirs: frozenset[str]


def _lines(*argv: str) -> list[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return result.stdout.splitlines()


def _node_processes() -> set[str]:
    """Processes running a binary of the build cache (containerd, shims, kubelet...) or a
    container's (``/pause``, anything in a Pod)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if "pinster-images/bin/" in argv0 or argv0 in ("/pause", "/coredns"):
            found.add(f"{entry} {argv0}")
    return found


def _chains() -> set[str]:
    chains = set()
    for tool in ("iptables-save", "ip6tables-save"):
        table = ""
        for line in _lines(tool):
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chains.add(f"{tool} {table} {line[1:].split()[0]}")
    return chains


def _nft_tables() -> set[str]:
    return {line.removeprefix("table ") for line in _lines("nft", "list", "tables")}


def snapshot() -> Machine:
    return Machine(
        processes=frozenset(_node_processes()),
        mounts=frozenset(
            line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
        ),
        links=frozenset(
            link["ifname"] for link in json.loads("".join(_lines("ip", "-j", "link")) or "[]")
        ),
        iptables_chains=frozenset(_chains()),
        nft_tables=frozenset(_nft_tables()),
        cgroups=frozenset(str(d) for name in ("kubepods", "buildkit") for d in cgroup_dirs(name)),
        sysctls=tuple(sorted(read_sysctls(SYSCTLS).items())),
        host_dirs=frozenset(d for d in HOST_DIRS if Path(d).exists()),
    )


def differences(before: Machine, after: Machine) -> list[str]:
    """One line per thing that is in ``after`` but not ``before``, or changed."""
    found = []
    for field in fields(Machine):
        old, new = getattr(before, field.name), getattr(after, field.name)
        if field.name == "sysctls":
            changed = dict(new).items() - dict(old).items()
            found += [f"sysctl {k}={v} (was {dict(old).get(k)})" for k, v in sorted(changed)]
            continue
        found += [f"{field.name}: {item}" for item in sorted(set(new) - set(old))]
    return found
