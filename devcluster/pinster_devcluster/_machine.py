"""One devcluster node per machine.

A node's kubelet, kube-proxy and containerd work on machine-wide things: iptables chains
named by kube-proxy (``KUBE-SERVICES`` is one chain, not one per cluster), the
``kubepods`` cgroups, the node's bridges and addresses. Two nodes on one machine would
rewrite each other's rules, so the second ``up`` refuses and says which cluster holds the
machine. Control-plane-only clusters (``--no-node``) listen on loopback ports of their
own and may run beside it.

The claim is a small file naming the state directory of the cluster that holds the node.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from pinster_devcluster._host import HostError, exclusive

#: where the claim lives
CLAIM = Path("/run/pinster-devcluster/node.json")


def locked() -> contextlib.AbstractContextManager[None]:
    """Held while a node starts, so that two `up`s at once cannot both claim the machine."""
    return exclusive(CLAIM.parent / ".lock")


def holder() -> Path | None:
    """The state directory of the cluster that claimed this machine's node, if any."""
    try:
        return Path(json.loads(CLAIM.read_text())["state_dir"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def claim(state_dir: Path) -> None:
    CLAIM.parent.mkdir(parents=True, exist_ok=True)
    tmp = CLAIM.with_suffix(".tmp")
    tmp.write_text(json.dumps({"state_dir": str(state_dir), "pid": os.getpid()}))
    tmp.replace(CLAIM)


def release(state_dir: Path) -> None:
    if holder() == state_dir:
        CLAIM.unlink(missing_ok=True)
        (CLAIM.parent / ".lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            CLAIM.parent.rmdir()


def refuse(other: Path) -> HostError:
    return HostError(
        f"another devcluster runs the node of this machine (state directory {other}); "
        "one node per machine, since kube-proxy's iptables chains and the kubepods cgroups "
        "are machine-wide. Stop it first: `pinster-images devcluster down --state-dir "
        f"{other}` (for `make run`'s cluster: `make stop`), or start this one with --no-node."
    )
