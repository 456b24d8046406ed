"""Run a command and write the kernel's accounting of it to a JSON file.

    python bench/child_usage.py USAGE.json -- COMMAND [ARG ...]

Linux carries a process's high-water mark of resident memory through fork and exec: a child's
ru_maxrss is at least the resident memory of the process that started it. A benchmark holding
gigabytes (an exported model, a loaded checkpoint) would see every command it starts peak at least
that high. Started from this small process, the command's figures are its own (within this
process's ~15 MB). USAGE.json: wall_s (spawn to reap), user_s and system_s (CPU seconds),
minor_faults, peak_rss_mb (MiB), exit_code. Standalone: it imports nothing of the project.
Exit code: the command's (128 + N where a signal N ended it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def measure(command: list[str]) -> dict:
    """Run `command` to its end (stdin, stdout and stderr are this process's); its accounting."""
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    return {"wall_s": time.perf_counter() - start, "user_s": usage.ru_utime, "system_s": usage.ru_stime,
            "minor_faults": usage.ru_minflt, "peak_rss_mb": usage.ru_maxrss / 1024,
            "exit_code": os.waitstatus_to_exitcode(status)}


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python bench/child_usage.py USAGE.json -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    usage = measure(argv[2:])
    Path(argv[0]).write_text(json.dumps(usage) + "\n")
    code = usage["exit_code"]
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
