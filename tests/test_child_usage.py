"""bench/child_usage.py and bench/peak_memory.py: a command's or a process's peak memory its own,
however large the process that started it."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "child_usage.py"


def test_a_commands_peak_memory_is_its_own_not_its_starters(tmp_path):
    held = np.ones(2**26)  # 512 MiB touched in this process, which starts the command
    usage_file = tmp_path / "usage.json"
    small = subprocess.run([sys.executable, str(SCRIPT), str(usage_file), "--", sys.executable, "-c", "pass"])
    assert small.returncode == 0
    usage = json.loads(usage_file.read_text())
    assert usage["peak_rss_mb"] < 200 < held.nbytes / 2**20  # the interpreter alone: about 10-20 MB
    assert usage["exit_code"] == 0 and usage["wall_s"] > 0 and usage["minor_faults"] > 0

    large = subprocess.run([sys.executable, str(SCRIPT), str(usage_file), "--", sys.executable, "-c",
                            "import numpy as np; a = np.ones(2**25); raise SystemExit(3)"])  # 256 MiB
    usage = json.loads(usage_file.read_text())
    assert large.returncode == 3 and usage["exit_code"] == 3
    assert 256 <= usage["peak_rss_mb"] < 450


def test_a_signal_that_ends_the_command_is_its_exit_code(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "u.json"), "--", "sh", "-c", "kill -TERM $$"])
    assert done.returncode == 143 and json.loads((tmp_path / "u.json").read_text())["exit_code"] == -15


def test_a_call_without_a_command_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "u.json")], capture_output=True, text=True)
    assert done.returncode == 2 and "usage:" in done.stderr and not (tmp_path / "u.json").exists()


def test_a_process_reads_its_own_peak_memory_not_its_parents():
    """bench.peak_memory in a child of this process, which holds 512 MiB: the child's peak is its own."""
    held = np.ones(2**26)
    code = ("import resource, numpy as np; from bench.peak_memory import own_peak_rss_mb; "
            "before = own_peak_rss_mb(); a = np.ones(2**25); "  # 256 MiB
            "print(before, own_peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=SCRIPT.parents[1])
    before, after, inherited = map(float, done.stdout.split())
    assert before < 200 and 256 <= after < 450
    assert inherited >= held.nbytes / 2**20  # what ru_maxrss would have said: this process's peak


def test_without_proc_the_peak_is_the_kernels_other_count(tmp_path):
    from bench.peak_memory import own_peak_rss_mb

    assert own_peak_rss_mb(tmp_path / "absent") > 0
    (tmp_path / "status").write_text("Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t 1024 kB\n")
    assert own_peak_rss_mb(tmp_path / "status") == 200
