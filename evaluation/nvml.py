"""GPU memory as the organisers read it: NVML's device-wide used memory (total - free), in MB.

Uses the maintained NVML binding (`nvidia-ml-py`, imported as `pynvml`). Where there is no NVML
(no driver, no GPU, package missing), `GpuMemory.open` returns None and says why once: callers
then record NaN, never a zero that looks measured.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from flare_common.units import MB


@dataclass
class GpuMemory:
    """Reads one GPU's memory through NVML; `used_mb()` is total - free, as the organisers' sampler."""

    index: int  # NVML's index (nvidia-smi's, and Docker's --gpus device=N), not necessarily CUDA's
    handle: object
    name: str
    total_mb: float
    uuid: str = ""  # "GPU-..." (CUDA_VISIBLE_DEVICES takes it: the same card whatever CUDA's order)

    @classmethod
    def open(cls, index: int = 0, quiet: bool = False, uuid: str | None = None) -> GpuMemory | None:
        """NVML handle of GPU `index` (or of the GPU with this UUID), or None (with a one-line
        notice on stderr) when unavailable."""
        try:
            import pynvml

            pynvml.nvmlInit()
            if uuid:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
                index = pynvml.nvmlDeviceGetIndex(handle)
            else:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            total = pynvml.nvmlDeviceGetMemoryInfo(handle).total / MB
            found = pynvml.nvmlDeviceGetUUID(handle)
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, invalid index, ...
            if not quiet:
                print(f"notice: no NVML for GPU {uuid or index} ({type(exc).__name__}: {exc}); GPU memory is not measured",
                      file=sys.stderr)
            return None
        return cls(index, handle, _text(name), total, _text(found))

    def used_mb(self) -> float:
        """Device-wide used memory in MB: total - free (includes every process and the CUDA contexts).
        Raises NVML's error when the query fails (the GPU lost): the sampler records NaN then."""
        import pynvml

        info = pynvml.nvmlDeviceGetMemoryInfo(self.handle)
        return (info.total - info.free) / MB

    def process_used_mb(self, pids: list[int]) -> float:
        """GPU memory (MB) NVML attributes to the given processes; NaN when NVML cannot say
        (query failed, memory not reported, or the PIDs it lists are not this machine's: see
        tree_used_mb)."""
        import pynvml

        try:
            running = pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception:
            return float("nan")
        return tree_used_mb([(p.pid, p.usedGpuMemory) for p in running], pids, psutil.pid_exists)

    def process_count(self) -> int | None:
        """How many processes NVML lists as computing on this GPU; None when NVML cannot say."""
        import pynvml

        try:
            return len(pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle))
        except Exception:
            return None


def tree_used_mb(running: list[tuple[int, int | None]], pids: list[int], pid_exists: Callable[[int], bool]) -> float:
    """GPU memory (MB) of the processes `pids` from NVML's (pid, bytes used) list. NaN when that
    cannot be said: memory not reported (None), or none of `pids` listed while some listed PID is
    not a process here (NVML gives the host's PIDs; inside a PID namespace, a container, they are
    not this machine's, so the submission's use may hide behind them). 0.0 when every listed
    process is another one seen here (the submission uses no GPU memory)."""
    wanted = set(pids)
    used = [u for pid, u in running if pid in wanted]
    if any(u is None for u in used):
        return math.nan
    if not used and not all(pid_exists(pid) for pid, _ in running):
        return math.nan
    return sum(used) / MB


def _text(value: bytes | str) -> str:
    """NVML's strings: bytes in older bindings, str in newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)
