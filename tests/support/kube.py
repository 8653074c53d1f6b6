"""Talking to the devcluster from tests: kubectl as a subprocess, namespaces, names."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class KubectlError(AssertionError):
    """kubectl exited non-zero; the message holds its command line and stderr."""


@dataclass(frozen=True)
class Kubectl:
    """``kubectl(*args)`` against one cluster; returns stdout, raises on failure
    (``check=False`` returns the CompletedProcess instead of raising)."""

    binary: Path
    env: Mapping[str, str]
    timeout: float = 120.0

    def run(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args],
            input=input,
            check=False,
            capture_output=True,
            text=True,
            env=dict(self.env),
            timeout=self.timeout,
        )
        if check and result.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def __call__(self, *args: str, input: str | None = None) -> str:
        return self.run(*args, input=input).stdout


def unique_name(hint: str, max_length: int = 63) -> str:
    """A DNS-1123 label derived from ``hint`` (e.g. a test name) plus a random suffix."""
    base = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-") or "t"
    suffix = uuid.uuid4().hex[:6]
    return f"{base[: max_length - len(suffix) - 1].rstrip('-')}-{suffix}"
