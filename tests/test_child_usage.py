"""bench/child_usage.py: a command's accounting, its peak memory its own however large the
process that starts it."""
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
