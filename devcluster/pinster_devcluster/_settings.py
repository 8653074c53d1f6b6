"""Settings of the devcluster command, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pinster_devcluster._binaries import default_bin_dir, default_cache_dir
from pinster_images.config import Environ, env_bool, env_float, env_optional


def default_state_dir(env: Environ) -> Path:
    # Outside the repository, so a `git clean` never wipes a running cluster's etcd.
    state_home = env_optional(env, "XDG_STATE_HOME")
    base = Path(state_home).expanduser() if state_home else Path.home() / ".local" / "state"
    return base / "pinster-images" / "devcluster"


@dataclass(frozen=True)
class DevClusterSettings:
    state_dir: Path
    bin_dir: Path
    cache_dir: Path
    #: seconds ``up`` waits for readiness before giving up (and stopping what it started)
    start_timeout: float = 120.0
    #: seconds ``down`` waits after SIGTERM before SIGKILL
    stop_grace: float = 10.0
    #: run a node (kubelet, containerd, ...): one per machine, needs root
    node: bool = True

    @classmethod
    def from_env(cls, env: Environ | None = None) -> DevClusterSettings:
        env = os.environ if env is None else env
        state = env_optional(env, "PINSTER_DEVCLUSTER_DIR")
        return cls(
            state_dir=Path(state).expanduser() if state else default_state_dir(env),
            bin_dir=default_bin_dir(env),
            cache_dir=default_cache_dir(env),
            start_timeout=env_float(env, "PINSTER_DEVCLUSTER_TIMEOUT", 120.0, minimum=1.0),
            stop_grace=env_float(env, "PINSTER_DEVCLUSTER_GRACE", 10.0, minimum=0.0),
            node=env_bool(env, "PINSTER_DEVCLUSTER_NODE", True),
        )
