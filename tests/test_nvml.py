"""GPU memory through NVML, with a fake NVML at the boundary (no GPU here)."""
import math
import sys
import types

from evaluation.nvml import GpuMemory, tree_used_mb
from flare_common.units import MB


def fake_pynvml(total_mb: float, free_mb: float, fail: Exception | None = None) -> types.ModuleType:
    module = types.ModuleType("pynvml")

    def init():
        if fail:
            raise fail

    module.nvmlInit = init
    module.nvmlDeviceGetHandleByIndex = lambda index: ("gpu", index)
    module.nvmlDeviceGetHandleByUUID = lambda uuid: ("gpu", int(uuid.removeprefix("GPU-fake-")))
    module.nvmlDeviceGetIndex = lambda handle: handle[1]
    module.nvmlDeviceGetUUID = lambda handle: f"GPU-fake-{handle[1]}".encode()
    module.nvmlDeviceGetName = lambda handle: b"Fake GPU"
    module.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(total=total_mb * MB, free=free_mb * MB)
    module.nvmlDeviceGetComputeRunningProcesses = lambda handle: [
        types.SimpleNamespace(pid=10, usedGpuMemory=500 * MB), types.SimpleNamespace(pid=11, usedGpuMemory=250 * MB),
        types.SimpleNamespace(pid=99, usedGpuMemory=4000 * MB)]
    return module


def test_used_memory_is_total_minus_free(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(16384, 15000))
    monkeypatch.setattr("evaluation.nvml.psutil.pid_exists", lambda pid: True)  # NVML's PIDs are processes here
    gpu = GpuMemory.open(1)
    assert gpu.name == "Fake GPU" and gpu.index == 1 and gpu.total_mb == 16384 and gpu.uuid == "GPU-fake-1"
    assert gpu.used_mb() == 1384
    assert gpu.process_used_mb([10, 11, 12]) == 750  # only the submission's own processes
    assert gpu.process_used_mb([12]) == 0


def test_no_nvml_gives_none_and_one_notice(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(0, 0, fail=RuntimeError("driver not loaded")))
    assert GpuMemory.open(0) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "driver not loaded" in err and "not measured" in err


def test_a_gpu_found_by_uuid_has_nvmls_index(monkeypatch):
    """CUDA and NVML may number the GPUs differently: the UUID names the same card in both."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(16384, 15000))
    gpu = GpuMemory.open(uuid="GPU-fake-3")
    assert gpu.index == 3 and gpu.uuid == "GPU-fake-3"


def test_gpu_memory_of_the_tree_is_not_measured_when_nvmls_pids_are_not_this_machines(monkeypatch):
    """Inside a PID namespace (a container) NVML lists the host's PIDs: none matches the tree's, and
    0 MB would look measured."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(16384, 15000))
    monkeypatch.setattr("evaluation.nvml.psutil.pid_exists", lambda pid: False)
    assert math.isnan(GpuMemory.open(0).process_used_mb([12]))
    assert GpuMemory.open(0).process_used_mb([10]) == 500  # a PID that matches is the submission's
    seen_here = {10, 11}.__contains__
    assert tree_used_mb([(10, 500 * MB), (11, 250 * MB)], [12], seen_here) == 0.0  # others' processes, all seen
    assert math.isnan(tree_used_mb([(10, 500 * MB), (4242424, 9 * 2**30)], [12], seen_here))
    assert tree_used_mb([], [12], seen_here) == 0.0  # nobody computes on the GPU
    assert math.isnan(tree_used_mb([(12, None)], [12], seen_here))  # memory not reported
