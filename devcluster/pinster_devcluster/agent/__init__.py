"""The devcluster's node agent: a kubelet stand-in that runs each Pod's containers as
local processes (see docs/node-agent.md)."""

from pinster_devcluster.agent._agent import Agent

__all__ = ["Agent"]
