"""Finding the control-plane binaries that ``make binaries`` builds into the cache."""

from __future__ import annotations

from pathlib import Path

from pinster_images.config import Environ, env_optional
from pinster_images.errors import ConfigError

#: Every binary the control plane runs or hands to its users (kubectl on PATH).
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
#: ... and what the node runs, and builds its images with.
NODE = (
    "kubelet",
    "kube-proxy",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "registry",
    "minio",
    "caddy",
    "coredns",
    "pause",
    "buildkitd",
    "buildctl",
    "cni/bridge",
    "cni/host-local",
    "cni/loopback",
    "cni/portmap",
)


def default_cache_dir(env: Environ) -> Path:
    """``$PINSTER_CACHE_DIR``, else ``~/.cache/pinster-images`` (builds, images, rootfs)."""
    cache = env_optional(env, "PINSTER_CACHE_DIR")
    return Path(cache).expanduser() if cache else Path.home() / ".cache" / "pinster-images"


def default_bin_dir(env: Environ) -> Path:
    """``$PINSTER_BIN_DIR``, else ``$PINSTER_CACHE_DIR/bin/current`` (the cache defaults to
    ``~/.cache/pinster-images``), the same order scripts/build-binaries uses."""
    explicit = env_optional(env, "PINSTER_BIN_DIR")
    if explicit is not None:
        return Path(explicit).expanduser()
    return default_cache_dir(env) / "bin" / "current"


def check_bin_dir(bin_dir: Path, *, node: bool = True) -> Path:
    """The directory, when every binary the cluster needs is a file in it."""
    required = CONTROL_PLANE + NODE if node else CONTROL_PLANE
    missing = [name for name in required if not (bin_dir / name).is_file()]
    if missing:
        raise ConfigError(
            f"devcluster binaries missing in {bin_dir}: {', '.join(missing)}. "
            "Run `make binaries` (or set PINSTER_BIN_DIR to the directory that "
            "scripts/build-binaries prints)."
        )
    return bin_dir
