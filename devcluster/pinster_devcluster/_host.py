"""What a node changes on this machine, and how ``down`` takes it back.

A kubelet, containerd and kube-proxy running as root leave marks outside their state
directory: sysctls (the kubelet's "kernel defaults"), cgroups, mounts, iptables chains,
a few well-known directories. Everything here is read before the node starts and put
back, or removed, when it stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pinster_images.errors import PermanentError


class HostError(PermanentError):
    """This machine cannot run the node (not root, a tool missing, a name taken)."""

    reason = "HostNotReady"


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (made if missing) for the block."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(
    argv: Sequence[str], *, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError as exc:
        raise HostError(
            f"{argv[0]} is not installed; run `make host-deps` (installs the Debian packages "
            "the node needs)"
        ) from exc
    if check and result.returncode != 0:
        raise HostError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


#: What the kubelet sets unless told to fail instead (its "protect kernel defaults"), and
#: what the node's networking may touch.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls(names: Iterable[str] = SYSCTLS) -> dict[str, str]:
    values = {}
    for name in names:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def save(path: Path, directories: Iterable[Path]) -> None:
    """Remember the machine as it is (sysctl values, which of ``directories`` exist),
    once: a restarted node must not record its own changes as the machine's."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "sysctls": read_sysctls(),
        "existing": [str(d) for d in directories if d.exists()],
        "nft_tables": sorted(nft_tables()),
    }
    path.write_text(json.dumps(record, indent=2))


def restore(path: Path, directories: Iterable[Path]) -> list[str]:
    """Put back every sysctl that differs from what was saved, remove those of
    ``directories`` that did not exist then; forget the record. Returns what changed."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    saved: dict[str, str] = record["sysctls"]
    existing = set(record["existing"])
    changed = []
    current = read_sysctls(saved)
    for name, value in saved.items():
        if current.get(name) != value:
            with contextlib.suppress(OSError):
                _sysctl_path(name).write_text(value)
                changed.append(f"{name}={value}")
    for directory in directories:
        if str(directory) not in existing and directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
            changed.append(f"removed {directory}")
    # iptables-nft made these tables for kube-proxy and the kubelet; once their chains
    # are gone (remove_iptables_chains) they are empty shells.
    before = set(record.get("nft_tables", []))
    for table, rules in nft_tables().items():
        if table not in before and rules == 0:
            run(["nft", "delete", "table", *table.split()], check=False)
            changed.append(f"removed nft table {table}")
    path.unlink()
    return changed


def nft_tables() -> dict[str, int]:
    """``family name`` of every nftables table -> how many rules it holds."""
    result = run(["nft", "-j", "list", "ruleset"], check=False)
    if result.returncode != 0:
        return {}
    tables: dict[str, int] = {}
    for item in json.loads(result.stdout or "{}").get("nftables", []):
        if "table" in item:
            tables.setdefault(f"{item['table']['family']} {item['table']['name']}", 0)
        elif "rule" in item:
            key = f"{item['rule']['family']} {item['rule']['table']}"
            tables[key] = tables.get(key, 0) + 1
    return tables


# -- processes and cgroups -----------------------------------------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_dirs(name: str) -> list[Path]:
    """``name`` (e.g. ``kubepods``) under every mounted cgroup hierarchy (v1 or v2)."""
    found = []
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # unified (v2)
        candidate = CGROUP_ROOT / name
        return [candidate] if candidate.is_dir() else []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        candidate = hierarchy / name
        if candidate.is_dir() and not hierarchy.is_symlink():
            found.append(candidate)
    return found


def _pids_in(tree: Path) -> set[int]:
    pids: set[int] = set()
    for directory, _, files in os.walk(tree):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in Path(directory, "cgroup.procs").read_text().split())
    return pids


def kill_cgroup_trees(names: Iterable[str], timeout: float = 10.0) -> int:
    """SIGKILL every process in these cgroups (the Pods' containers) until none is left,
    then remove the cgroups, deepest first. Returns how many processes were killed."""
    trees = [tree for name in names for tree in cgroup_dirs(name)]
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = set().union(*(_pids_in(t) for t in trees)) if trees else set()
        if not pids:
            break
        if time.monotonic() > deadline:
            raise HostError(
                f"processes survived SIGKILL in {[str(t) for t in trees]}: {sorted(pids)}"
            )
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed |= pids
        time.sleep(0.05)
    for tree in trees:
        # Bottom-up; the runtime may remove some of them at the same moment.
        for directory, _, _ in os.walk(tree, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
    return len(killed)


def processes_with(needle: str) -> list[int]:
    """Processes whose command line contains ``needle`` (a socket path of ours)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            if needle.encode() in cmdline:
                found.append(int(entry))
    return found


def kill_all(pids: Iterable[int], timeout: float = 5.0) -> None:
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        if time.monotonic() > deadline:
            raise HostError(f"processes survived SIGKILL: {pids}")
        for pid in pids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


# -- mounts ----------------------------------------------------------------------------------


def mounts_under(directories: Iterable[Path]) -> list[Path]:
    """Mount points at or below any of ``directories``, deepest first."""
    roots = [str(d) for d in directories]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == r or point.startswith(r.rstrip("/") + "/") for r in roots):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_under(directories: Iterable[Path]) -> list[Path]:
    """Lazily unmount everything below ``directories`` (container roots, volume tmpfs,
    network-namespace files); returns what was unmounted."""
    directories = list(directories)
    done: list[Path] = []
    for _ in range(5):  # a mount can hide others below it: go again until none is left
        points = mounts_under(directories)
        if not points:
            return done
        for point in points:
            if run(["umount", "-l", str(point)], check=False).returncode == 0:
                done.append(point)
    left = mounts_under(directories)
    if left:
        raise HostError(f"could not unmount: {[str(p) for p in left]}")
    return done


# -- iptables --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainRemoval:
    """What to delete from one iptables-save dump: the rules of other chains that jump
    into ours (table, rule argv after ``-A``), then our chains (table, chain)."""

    jumps: list[tuple[str, list[str]]]
    chains: list[tuple[str, str]]


def chains_to_remove(dump: str, prefixes: Sequence[str]) -> ChainRemoval:
    """Read an ``iptables-save`` dump: every chain named with one of ``prefixes``, and
    every rule elsewhere (a built-in chain's) that jumps to one of them."""
    table = ""
    jumps: list[tuple[str, list[str]]] = []
    chains: list[tuple[str, str]] = []
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chain = line[1:].split()[0]
            if chain.startswith(tuple(prefixes)):
                chains.append((table, chain))
        elif line.startswith("-A "):
            # iptables-save quotes comments as a shell would.
            argv = shlex.split(line)[1:]
            target = argv[argv.index("-j") + 1] if "-j" in argv else ""
            if not argv[0].startswith(tuple(prefixes)) and target.startswith(tuple(prefixes)):
                jumps.append((table, argv))
    return ChainRemoval(jumps, chains)


def remove_iptables_chains(prefixes: Sequence[str]) -> list[str]:
    """Delete every chain whose name starts with one of ``prefixes`` and every rule that
    jumps to one, in each table of iptables and ip6tables. Returns what was removed."""
    removed = []
    for tool in ("iptables", "ip6tables"):
        plan = chains_to_remove(run([f"{tool}-save"], check=False).stdout, prefixes)
        for table, rule in plan.jumps:
            run([tool, "-t", table, "-D", *rule], check=False)
            removed.append(f"{tool} -t {table} -D {' '.join(rule)}")
        for table, chain in plan.chains:  # flushed first: ours may jump to each other
            run([tool, "-t", table, "-F", chain], check=False)
        for table, chain in plan.chains:
            if run([tool, "-t", table, "-X", chain], check=False).returncode == 0:
                removed.append(f"{tool} -t {table} -X {chain}")
    return removed
