"""Processes below a benchmark, sampled from /proc (bench.bulk, bench.throughput)."""
from __future__ import annotations

import os
import threading
from pathlib import Path


def proc_stats() -> list[tuple[int, int, int, int]]:
    """(pid, parent pid, session id, CPU clock ticks used) of every process in /proc."""
    stats = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            stats.append((int(entry), int(fields[1]), int(fields[3]), int(fields[11]) + int(fields[12])))
    return stats


class Sampler(threading.Thread):
    """Calls ``sample`` five times a second until ``stop``, which returns the CPU seconds in ``cpu``
    (pid -> the most seen: a process's CPU is read before it exits)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.cpu: dict[int, float] = {}
        self.stopped = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.sample()

    def stop(self) -> float:
        self.stopped.set()
        self.join()
        self.sample()
        return sum(self.cpu.values())
