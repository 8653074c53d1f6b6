"""The operator's start-up as a process on this machine against the devcluster's API
server and object store: what retrying in place cannot heal ends the process with exit
code 1 and the reason, quickly (no retrying for ever behind a live process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.operator_cluster import operator_env


def run_operator(devcluster: Any, s3_env: dict[str, str], tmp_path: Path, **env: str) -> Any:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PINSTER_", "AWS_"))},
        "KUBECONFIG": str(devcluster.kubeconfig),
        **operator_env(
            s3_env,
            tmp_path / "keys",
            **{
                "PINSTER_OPERATOR_HOST": "127.0.0.1",
                "PINSTER_UPLOAD_NAMESPACE": "default",
                "PINSTER_HEALTH_PORT": "0",
                "PINSTER_METRICS_PORT": "0",
                "PINSTER_LOG_FORMAT": "text",
                "PINSTER_STARTUP_TIMEOUT": "5",
                **env,
            },
        ),
    }
    return subprocess.run(
        [sys.executable, "-m", "pinster_images", "operator"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_wrong_credentials_stop_it_naming_the_setting(
    s3_env: dict[str, str], devcluster: Any, tmp_path: Path
) -> None:
    done = run_operator(devcluster, s3_env, tmp_path, AWS_ACCESS_KEY_ID="nobody")
    assert done.returncode == 1
    assert "operator stopped" in done.stderr and "AWS_ACCESS_KEY_ID" in done.stderr


def test_a_metrics_port_in_use_stops_it_saying_so(
    s3_env: dict[str, str], devcluster: Any, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_operator(devcluster, s3_env, tmp_path, PINSTER_METRICS_PORT=str(port))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "operator stopped" in last and f"127.0.0.1:{port}" in last, done.stderr
    assert "PINSTER_METRICS_PORT" in last and "in use" in last


def test_an_object_store_that_never_answers_stops_it_after_the_start_up_timeout(
    s3_env: dict[str, str], devcluster: Any, tmp_path: Path
) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}"
    done = run_operator(
        devcluster, s3_env, tmp_path, PINSTER_S3_ENDPOINT_URL=nobody, PINSTER_STARTUP_TIMEOUT="2"
    )
    assert done.returncode == 1
    assert "still unreachable after 2s (PINSTER_STARTUP_TIMEOUT)" in done.stderr, done.stderr
