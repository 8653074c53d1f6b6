"""Running the helm binary that `make binaries` builds, on the chart in this repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from pinster_devcluster._binaries import default_bin_dir

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pinster-images"


def helm_binary() -> Path:
    binary = default_bin_dir(os.environ) / "helm"
    if not binary.is_file():
        raise AssertionError(f"helm not found at {binary}: run `make binaries`")
    return binary


def helm(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        )
    return result


def render(*args: str) -> list[dict[str, Any]]:
    """The documents `helm template` renders, parsed."""
    output = helm("template", "t", str(CHART), *args).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]
