"""The one command line: dispatch, and a reader that goes away (`... | head -1`)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pinster_images.cli", "--help"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell reports it


def test_unknown_commands_say_so_with_the_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pinster_images.cli", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown command 'nope'" in done.stderr and "devcluster" in done.stderr
