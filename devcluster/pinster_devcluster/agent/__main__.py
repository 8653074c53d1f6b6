"""``python -m pinster_devcluster.agent``: started by ``pinster-images devcluster up``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pinster_devcluster.agent._agent import Agent, install_signal_handlers
from pinster_images import logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pinster_devcluster.agent", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--node-name", default="devcluster-node")
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    args = parser.parse_args(argv)
    logs.setup("INFO", args.log_format)
    agent = Agent(args.kubeconfig, args.state_dir.resolve(), args.node_name)
    install_signal_handlers(agent)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
