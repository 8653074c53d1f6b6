"""A Debian bookworm root file system with python3, for the base image built here.

No outside image registry is reachable from these machines, so ``python:3.11-slim``
cannot be pulled. debootstrap (a Debian package) makes the same thing from Debian's own
packages: Debian's python3 (3.11 in bookworm), its venv module and the CA bundle. The
tarball is cached outside the repository, keyed by suite, packages and mirror.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pinster_devcluster._host import HostError

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def rootfs_tarball(cache_dir: Path, mirror: str = DEFAULT_MIRROR) -> Path:
    """The cached tarball, made first when missing (about a minute, needs root)."""
    key = hashlib.sha256(f"{SUITE} {' '.join(PACKAGES)} {mirror}".encode()).hexdigest()[:12]
    target = cache_dir / "rootfs" / f"debian-{SUITE}-python3-{key}.tar"
    if target.exists():
        return target
    if shutil.which("debootstrap") is None:
        raise HostError("debootstrap is not installed; run `make host-deps`")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=target.parent) as work:
        root = Path(work) / "root"
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                mirror,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise HostError(f"debootstrap of {SUITE} from {mirror} failed:\n{tail}")
        # What an image does not need: package caches and lists, logs, /dev nodes (the
        # runtime provides /dev).
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log", "dev"):
            path = root / leftover
            for child in path.glob("*"):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        partial = Path(work) / "rootfs.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], check=True
        )
        os.replace(partial, target)
    return target
