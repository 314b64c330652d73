"""Checking that no process of a spark-submit's group outlives it."""
from __future__ import annotations

import subprocess
import time


def live_members(pgid: int) -> list[str]:
    """Processes of the group (session) that are not zombies waiting for init to reap them."""
    out = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1:2] != ["Z"]]


def wait_gone(pgid: int, timeout: float = 10) -> list[str]:
    """The group's live members once they are gone or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while (members := live_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return members
