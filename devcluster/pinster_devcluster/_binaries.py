"""Finding the control-plane binaries that ``make binaries`` builds into the cache."""

from __future__ import annotations

from pathlib import Path

from pinster_images.config import Environ, env_optional
from pinster_images.errors import ConfigError

#: Every binary the devcluster runs or hands to its users (kubectl on PATH).
REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def default_bin_dir(env: Environ) -> Path:
    """``$PINSTER_BIN_DIR``, else ``$PINSTER_CACHE_DIR/bin/current`` (the cache defaults to
    ``~/.cache/pinster-images``), the same order scripts/build-binaries uses."""
    explicit = env_optional(env, "PINSTER_BIN_DIR")
    if explicit is not None:
        return Path(explicit).expanduser()
    cache = env_optional(env, "PINSTER_CACHE_DIR")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache" / "pinster-images"
    return base / "bin" / "current"


def check_bin_dir(bin_dir: Path) -> Path:
    """The directory, resolved, when every required binary is an executable file in it."""
    missing = [name for name in REQUIRED if not (bin_dir / name).is_file()]
    if missing:
        raise ConfigError(
            f"devcluster binaries missing in {bin_dir}: {', '.join(missing)}. "
            "Run `make binaries` (or set PINSTER_BIN_DIR to the directory that "
            "scripts/build-binaries prints)."
        )
    return bin_dir
