"""Wall time, peak memory and CPU time of a whole process tree (a command and every child it starts)."""

from __future__ import annotations

import bisect
import math
import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


class TreeSampler(threading.Thread):
    """Every ``interval`` seconds, sums the RSS of a process and all its descendants, and adds
    up the CPU time (user + system, every thread) each of them used since it was last seen.

    The CPU timeline is cumulative: what the tree used between two moments is the difference
    of two of its samples. A process's last moments before it exits (under ``interval``), or a
    process living less than ``interval``, are not seen: the exact total of the tree comes from
    the operating system at the end (:attr:`Measured.cpu_seconds`).
    """

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.timeline: list[tuple[float, int]] = []  # (time.time(), summed RSS)
        self.cpu_timeline: list[tuple[float, float]] = []  # (time.time(), CPU seconds used so far)
        self._cpu_seen: dict[int, float] = {}  # pid -> its CPU seconds when last seen
        self._cpu_total = 0.0
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
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    times = proc.cpu_times()
            except psutil.Error:  # exited between listing and reading
                continue
            total += rss
            cpu = times.user + times.system  # the process's own threads, not its waited children
            last = self._cpu_seen.get(proc.pid)
            # less than when last seen: another process under a reused pid (no clock-based
            # start time here: psutil's moves when the wall clock is stepped)
            self._cpu_total += cpu - last if last is not None and cpu >= last else cpu
            self._cpu_seen[proc.pid] = cpu
        return total

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = self.sample()
            now = time.time()
            self.peak = max(self.peak, rss)
            self.samples += 1
            self.timeline.append((now, rss))
            self.cpu_timeline.append((now, self._cpu_total))
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
    cpu_seconds: float = 0.0  # user + system CPU of the process and every descendant it waited for
    cpu_timeline: list[tuple[float, float]] = field(default_factory=list)

    def peak_between(self, start: float, end: float) -> int:
        """Peak summed RSS sampled between two time.time() moments."""
        return max((rss for t, rss in self.timeline if start <= t <= end), default=0)

    def cpu_at(self, moment: float) -> float:
        """CPU seconds the tree had used by a time.time() moment (as last sampled before it)."""
        i = bisect.bisect_right(self.cpu_timeline, (moment, math.inf))
        return self.cpu_timeline[i - 1][1] if i else 0.0

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds (all cores) the tree used between two time.time() moments, as sampled."""
        return max(self.cpu_at(end) - self.cpu_at(start), 0.0)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def run_measured(command: list[str], *, env: dict[str, str], cwd: Path, log_path: Path,
                 interval: float = 0.1) -> Measured:
    """Run ``command`` to completion, its output in ``log_path``; measure wall time, the peak
    summed RSS of its process tree and the CPU time the tree used.

    The CPU time is the operating system's account of this child and every descendant it
    waited for (``RUSAGE_CHILDREN`` before and after: one command runs at a time)."""
    load = os.getloadavg()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started_at = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        returncode = proc.wait()
        wall = time.perf_counter() - t0
        peak = sampler.stop()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(command, returncode, wall, peak, sampler.samples, started_at, load, str(log_path),
                    sampler.timeline, cpu, sampler.cpu_timeline)


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
