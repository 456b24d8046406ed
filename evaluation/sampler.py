"""Resource sampling while a submission runs: GPU memory, CPU and RAM, system-wide and per process tree.

One sample every `interval_s` seconds (on a fixed schedule, so the interval does not drift), each
with its real time. Columns (units):

    t_s             seconds since the sampler started (time.perf_counter)
    gpu_used_mb     NVML device-wide used memory, total - free (MB): the organisers' figure
    gpu_tree_mb     NVML memory of the submission's own processes (MB), where NVML reports it
    cpu_used_pct    system CPU utilisation, 100 - idle %, from psutil.cpu_times deltas with the
                    organisers' formula idle / (user + system + idle + 0.1)
    cpu_tree_pct    CPU time of the process tree per wall second (%, 100 = one core; at most
                    cores x 100)
    ram_used_mb     psutil.virtual_memory().used (MB): the organisers' figure
    ram_tree_mb     resident memory of the process tree (MB)

GPU columns are NaN without NVML; tree columns are NaN while no process is attached and once
every process of the tree has ended. A reading that fails (NVML after the GPU is lost, say) is NaN
in that sample and the others go on (`Readings`: one notice per kind of reading). `stop()` takes
one more sample when the last one is half an interval old or more, so that a case shorter than one
interval has a sample too (its figures measured, never "not measured" for being fast).
"""
from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

from flare_common.errors import describe_error
from flare_common.units import MB

T = TypeVar("T")

CPU_CAP_PCT = 100.0 * (psutil.cpu_count() or 1)  # all cores busy
COLUMNS = ("t_s", "gpu_used_mb", "gpu_tree_mb", "cpu_used_pct", "cpu_tree_pct", "ram_used_mb", "ram_tree_mb")


class SystemCpu:
    """System CPU utilisation between successive calls, as the organisers computed it."""

    def __init__(self) -> None:
        self._before = self._times()

    @staticmethod
    def _times() -> tuple[float, float, float]:
        t = psutil.cpu_times()
        return t.user, t.system, t.idle

    def used_pct(self) -> float:
        now = self._times()
        user, system, idle = (a - b for a, b in zip(now, self._before))
        self._before = now
        return 100.0 - 100.0 * idle / (user + system + idle + 0.1)


class Readings:
    """Readings that may fail (NVML after an Xid error, the process table): a failing one gives its
    default (NaN) and the first failure of each kind says so on stderr, once for all the cases
    that share this object. `failed` maps each kind that failed to its first error."""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}
        self._lock = threading.Lock()

    def take(self, what: str, read: Callable[..., T], *args, default: T = math.nan) -> T:
        """read(*args), or `default` when it raises."""
        try:
            return read(*args)
        except Exception as exc:  # any failure of one reading: the others, and later samples, go on
            with self._lock:
                first = what not in self.failed
                self.failed.setdefault(what, describe_error(exc))
            if first:
                print(f"notice: reading {what} failed ({describe_error(exc)}): recorded as not measured (NaN) "
                      "where it fails", file=sys.stderr, flush=True)
            return default


class ProcessTree:
    """Resident memory and CPU use of a process and all its descendants.

    `processes`, where given, lists the processes to measure instead of the root's descendants
    (evaluation.contain.CaseProcesses.processes: the tree plus double-forked orphans). Zombies
    (ended, not yet reaped) are left out: their memory reads as 0.
    """

    def __init__(self, pid: int, processes: Callable[[], list[psutil.Process]] | None = None) -> None:
        self.root = psutil.Process(pid)
        self._processes = processes
        self._last = time.perf_counter()
        self._last_epoch = time.time()
        self._cpu_seconds: dict[int, float] = {}
        try:
            times = self.root.cpu_times()
            self._cpu_seconds[pid] = times.user + times.system
        except psutil.Error:
            pass

    def processes(self) -> list[psutil.Process]:
        if self._processes is not None:
            return self._processes()
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> tuple[list[int], float, float]:
        """(pids, resident MB, CPU % since the last call) of the live processes of the tree; NaN, NaN
        when none is left. CPU is counted in clock ticks (10 ms), so one 0.1 s interval can read a
        tick or two above what the cores allow: it is capped at cores x 100 %. A process born since
        the last call counts all its CPU time; one seen before counts the difference."""
        now, epoch = time.perf_counter(), time.time()
        pids, rss, cpu = [], 0.0, 0.0
        seen = {}
        for proc in self.processes():
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    times = proc.cpu_times()
                    memory = proc.memory_info().rss / MB
                    born = proc.create_time()
            except psutil.Error:
                continue
            rss += memory
            pids.append(proc.pid)
            seen[proc.pid] = times.user + times.system
            before = self._cpu_seconds.get(proc.pid, 0.0 if born >= self._last_epoch else seen[proc.pid])
            cpu += max(0.0, seen[proc.pid] - before)
        elapsed = now - self._last
        self._last, self._last_epoch = now, epoch
        self._cpu_seconds = seen
        if not pids:
            return [], math.nan, math.nan
        cpu_pct = min(100.0 * cpu / elapsed, CPU_CAP_PCT) if elapsed > 0 else math.nan
        return pids, rss, cpu_pct


class Sampler:
    """Samples in a background thread from `start()` to `stop()`; `samples` is a list of dicts.

    gpu: an object with used_mb() and process_used_mb(pids) (evaluation.nvml.GpuMemory), or None;
    tree: returns the ProcessTree to measure (None until the submission's process exists);
    readings: where failed readings are counted (a new Readings by default).
    """

    def __init__(self, gpu=None, tree: Callable[[], ProcessTree | None] = lambda: None, interval_s: float = 0.1,
                 readings: Readings | None = None):
        self.gpu, self.tree, self.interval_s = gpu, tree, interval_s
        self.readings = readings or Readings()
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._cpu: SystemCpu | None = None
        self._t0 = 0.0

    def start(self) -> Sampler:
        self._cpu = SystemCpu()  # the reference of the first sample's CPU figures
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, float]]:
        """Stop sampling; one last sample now when the last one is half an interval old or more
        (or there is none); returns the samples."""
        self._stop.set()
        self._thread.join()
        if needs_final_sample([s["t_s"] for s in self.samples], time.perf_counter() - self._t0, self.interval_s):
            self.samples.append(self.sample())
        return self.samples

    def sample(self) -> dict[str, float]:
        """One sample now; a reading that fails is NaN (see Readings)."""
        take = self.readings.take
        tree = take("the process tree", self.tree, default=None)
        pids, tree_ram, tree_cpu = (take("the process tree", tree.sample, default=([], math.nan, math.nan))
                                    if tree else ([], math.nan, math.nan))
        return {
            "t_s": time.perf_counter() - self._t0,
            "gpu_used_mb": take("GPU memory (NVML)", self.gpu.used_mb) if self.gpu else math.nan,
            "gpu_tree_mb": take("GPU memory of the processes (NVML)", self.gpu.process_used_mb, pids)
                           if self.gpu and pids else math.nan,
            "cpu_used_pct": take("system CPU", self._cpu.used_pct),
            "cpu_tree_pct": tree_cpu,
            "ram_used_mb": take("system RAM", used_ram_mb),
            "ram_tree_mb": tree_ram,
        }

    def _run(self) -> None:
        """A sample at the end of each interval from the start: the first one's CPU figures then
        cover a whole interval (taken at once, the system CPU's few ticks since the reference
        read as 100 % by the organisers' formula)."""
        tick = 1
        while not self._stop.wait(max(0.0, self._t0 + tick * self.interval_s - time.perf_counter())):
            self.samples.append(self.sample())
            tick += 1


def used_ram_mb() -> float:
    """System RAM in use (MB), psutil.virtual_memory().used: the organisers' figure."""
    return psutil.virtual_memory().used / MB


def needs_final_sample(times_s: list[float], now_s: float, interval_s: float) -> bool:
    """Whether stopping at now_s (s since the start) takes one more sample: when there is none, or
    the last is at least half an interval old (a younger one already stands for the end: a sample
    taken a few ms after it would read the organisers' CPU formula over a few clock ticks)."""
    return not times_s or now_s - times_s[-1] >= interval_s / 2
