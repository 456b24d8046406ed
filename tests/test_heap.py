"""glibc's heap policy for PyTorch on the CPU (inference/heap.py) and predict's --heap."""
import platform
import subprocess
import sys

import pytest

from inference.heap import choose_heap

REFAULTS = """
import resource, sys
import numpy as np
from inference.heap import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(2**25)  # 256 MiB, every page touched
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
first, second = faults(), faults()
print(first, second)
"""


def test_auto_keeps_the_heap_only_where_pytorch_runs_the_networks_on_the_cpu():
    assert choose_heap("auto", "cpu", "torch") == "kept"
    assert choose_heap("auto", "cpu", "openvino") == "system"
    assert choose_heap("auto", "cuda", "torch") == "system"
    assert choose_heap("system", "cpu", "torch") == "system" and choose_heap("kept", "cuda", "torch") == "kept"


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("heap", ["kept", "system"])
def test_a_kept_heap_reuses_freed_pages(heap):
    """A 256 MiB block allocated again after being freed: glibc maps and faults in every page
    again; a kept heap hands back the same pages."""
    done = subprocess.run([sys.executable, "-c", REFAULTS, heap], capture_output=True, text=True, check=True)
    first, second = map(int, done.stdout.split())
    assert first > 100  # 65 536 pages of 4 KiB, or 128 huge pages of 2 MiB where NumPy asks for them
    if heap == "kept":
        assert second < first / 10
    else:
        assert second > first / 2
