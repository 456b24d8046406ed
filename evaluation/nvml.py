"""GPU memory as the organisers read it: NVML's device-wide used memory (total - free), in MB.

Uses the maintained NVML binding (`nvidia-ml-py`, imported as `pynvml`). Where there is no NVML
(no driver, no GPU, package missing), `GpuMemory.open` returns None and says why once: callers
then record NaN, never a zero that looks measured.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

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
        """Device-wide used memory in MB: total - free (includes every process and the CUDA contexts)."""
        import pynvml

        info = pynvml.nvmlDeviceGetMemoryInfo(self.handle)
        return (info.total - info.free) / MB

    def process_used_mb(self, pids: list[int]) -> float:
        """GPU memory (MB) NVML attributes to the given processes; NaN when NVML cannot say
        (query failed, or memory not reported, as inside some containers)."""
        import pynvml

        try:
            running = pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception:
            return float("nan")
        wanted = set(pids)
        used = [p.usedGpuMemory for p in running if p.pid in wanted]
        if any(u is None for u in used):
            return float("nan")
        return sum(used) / MB

    def process_count(self) -> int | None:
        """How many processes NVML lists as computing on this GPU; None when NVML cannot say."""
        import pynvml

        try:
            return len(pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle))
        except Exception:
            return None


def _text(value: bytes | str) -> str:
    """NVML's strings: bytes in older bindings, str in newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)
