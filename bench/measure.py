"""Wall time and peak memory of a whole process tree (a command and every child it starts)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


class TreeSampler(threading.Thread):
    """Sums the RSS of a process and all its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.timeline: list[tuple[float, int]] = []  # (time.time(), summed RSS)
        self._stop_event = threading.Event()

    def sample(self) -> int:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                pass
        return total

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = self.sample()
            self.peak = max(self.peak, rss)
            self.samples += 1
            self.timeline.append((time.time(), rss))
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


@dataclass
class Measured:
    command: list[str]
    returncode: int
    wall_seconds: float
    peak_rss: int
    samples: int
    started_at: float  # time.time() just before the process was started
    load_average: tuple[float, float, float]
    log_path: str
    timeline: list[tuple[float, int]]

    def peak_between(self, start: float, end: float) -> int:
        """Peak summed RSS sampled between two time.time() moments."""
        return max((rss for t, rss in self.timeline if start <= t <= end), default=0)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def run_measured(command: list[str], *, env: dict[str, str], cwd: Path, log_path: Path,
                 interval: float = 0.1) -> Measured:
    """Run ``command`` to completion, its output in ``log_path``; measure wall time and the
    peak summed RSS of its process tree."""
    load = os.getloadavg()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        started_at = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        returncode = proc.wait()
        wall = time.perf_counter() - t0
        peak = sampler.stop()
    return Measured(command, returncode, wall, peak, sampler.samples, started_at, load, str(log_path),
                    sampler.timeline)


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
