"""A container as a local process: start errors, process-group stop, stale clean-up.

Real processes (sh, sleep); no cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pinster_devcluster.agent._process import Process, StartError, kill_stale

from tests.support.procstat import alive
from tests.support.waiting import wait_for

ENV = {"PATH": os.environ.get("PATH", os.defpath)}


def test_a_missing_executable_says_that_commands_run_locally(tmp_path: Path) -> None:
    with pytest.raises(StartError) as error:
        Process(["no-such-tool-xyz"], ENV, None, tmp_path / "log", tmp_path / "pid")
    assert "'no-such-tool-xyz' not found on PATH" in str(error.value)
    assert "devcluster node runs the container's command as a local process" in str(error.value)
    assert not (tmp_path / "pid").exists()


def test_no_command_and_a_missing_working_dir_are_start_errors(tmp_path: Path) -> None:
    with pytest.raises(StartError, match="set the container's command"):
        Process([], ENV, None, tmp_path / "log", tmp_path / "pid")
    with pytest.raises(StartError, match="workingDir '/nope/x' does not exist"):
        Process(["true"], ENV, "/nope/x", tmp_path / "log", tmp_path / "pid")


def test_output_is_appended_and_the_exit_code_reported(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("before\n")
    process = Process(
        ["sh", "-c", "echo out; echo err >&2; exit 7"], ENV, str(tmp_path), log, tmp_path / "pid"
    )
    assert wait_for(lambda: process.poll() is not None, 10, what="exit")
    assert process.poll() == 7
    assert log.read_text() == "before\nout\nerr\n"
    assert not (tmp_path / "pid").exists(), "the pid file goes with the process"


def test_stop_ends_the_whole_process_group_and_reports_the_signal(tmp_path: Path) -> None:
    child_file = tmp_path / "child"
    # The shell ignores SIGTERM, so SIGKILL after the grace period; its child sleeps on.
    script = f"trap '' TERM; sleep 60 & echo $! > {child_file}; wait"
    process = Process(["sh", "-c", script], ENV, None, tmp_path / "log", tmp_path / "pid")
    child = int(wait_for(lambda: child_file.read_text().strip(), 10, what="child pid"))
    assert alive(child)

    code = process.stop(grace=0.5)

    assert code == 128 + signal.SIGKILL
    wait_for(lambda: not alive(child), 10, what="the background child gone too")


def test_sigterm_within_the_grace_period_gives_exit_143(tmp_path: Path) -> None:
    process = Process(["sleep", "60"], ENV, None, tmp_path / "log", tmp_path / "pid")
    assert process.stop(grace=10) == 128 + signal.SIGTERM


def test_kill_stale_kills_recorded_live_processes_only(tmp_path: Path) -> None:
    pod = tmp_path / "pods" / "ns" / "pod"
    pod.mkdir(parents=True)
    # A process left by an "earlier agent": its own session, recorded with its start time.
    stale = subprocess.Popen(["sleep", "60"], start_new_session=True)
    start = Path(f"/proc/{stale.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    (pod / "main.pid").write_text(json.dumps({"pid": stale.pid, "start": start}))
    # A recycled pid: same number, other start time; must survive.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (pod / "other.pid").write_text(json.dumps({"pid": bystander.pid, "start": "1"}))
    try:
        assert kill_stale(tmp_path / "pods") == 1
        assert stale.wait(10) == -signal.SIGKILL
        assert bystander.poll() is None
        assert list(pod.glob("*.pid")) == []
    finally:
        for process in (stale, bystander):
            process.kill()
            process.wait()
