"""glibc's heap policy for PyTorch on the CPU (inference/heap.py), predict's --heap and the
benchmark of the heaps (bench/bench_heap.py; never timed here)."""
import json
import platform
import subprocess
import sys

import nibabel as nib
import numpy as np
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


def test_the_heap_benchmark_checks_the_labels_of_every_run_on_exactly_this_runs_cases(tmp_path, weights, monkeypatch):
    from bench import bench_heap

    out = tmp_path / "heap"
    stale = out / "inputs" / "phantom_99x99x99_0000.nii.gz"  # an input an earlier run left
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not a CT")
    monkeypatch.setattr(bench_heap, "JEMALLOC", None)
    assert bench_heap.main(["--weights", str(weights), "--sizes", "32", "48", "--shapes", "64x56x24", "--real",
                            "--backend", "torch", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads((out / "bench_heap.json").read_text())
    assert result["weights"] == weights.name  # the checkpoint asked for, not the benchmark's copy of it
    runs = result["measured"]["runs"]
    assert set(runs) == {"glibc", "kept"}
    for name in runs:
        assert set(runs[name]) == {"phantom_64x56x24_0000.nii.gz", "all cases in one process"}
        assert all(row["labels_as_reference"] for rows in runs[name].values() for row in rows)
        (all_in_one,) = runs[name]["all cases in one process"]
        assert len(all_in_one["coarse_s"]) == 1  # the stale input was not predicted


def test_a_run_whose_labels_differ_from_the_reference_is_found(tmp_path):
    from bench import bench_heap

    case = tmp_path / "ct_0000.nii.gz"
    labels = np.zeros((4, 4, 4), np.uint8)
    for folder, value in (("reference", 1), ("ours", 1), ("other", 2)):
        (tmp_path / folder).mkdir()
        labels[1, 1, 1] = value
        nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / folder / "ct.nii.gz")
    assert bench_heap.labels_as_reference(tmp_path / "ours", [case], tmp_path / "reference", sets=False)
    assert not bench_heap.labels_as_reference(tmp_path / "other", [case], tmp_path / "reference", sets=False)
    with pytest.raises(RuntimeError, match="no glibc run"):
        bench_heap.labels_as_reference(tmp_path / "ours", [case], tmp_path / "missing", sets=False)


@pytest.mark.parametrize("args", [["--sizes", "abc"], ["--sizes", "160", "200"], ["--repeats", "0"],
                                  ["--real", "no-such-ct.nii.gz"]])
def test_the_heap_benchmark_refuses_bad_arguments_in_one_line(args, capsys):
    from bench import bench_heap

    with pytest.raises(SystemExit) as exit_:
        bench_heap.main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and args[-1] in err and "Traceback" not in err
