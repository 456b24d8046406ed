"""The yardstick of the submission benchmark: one eager fp32 forward pass of each of the authors'
networks (random weights: the time does not depend on them), after a warm-up, the median of
--repeats, under one C heap per fresh process (mallopt is process-wide: inference/heap.py).

    python -m bench.yardstick HEAP COARSE FINE [--device cpu|cuda] [--repeats 2]

HEAP: system (glibc's own) or kept; COARSE, FINE: the input sizes, XxYxZ. Prints one line of JSON:
the heap that applied (system where glibc's could not be set) and the seconds per network and both.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.arguments import parse_shape, shape_text
from bench.record import exit_description
from flare_common import cli
from flare_common.cli import at_least
from inference.heap import keep_freed_memory
from inference.networks import CoarseUNet, EfficientSegNet

ROOT = Path(__file__).resolve().parents[1]
HEAPS = ("system", "kept")  # predict's --heap values the yardstick is measured under


def yardstick(device: torch.device, repeats: int, sizes: dict[str, tuple[int, int, int]]) -> dict[str, float]:
    """Seconds of one eager fp32 forward pass of each of the authors' networks at `sizes` (median
    of `repeats` after a warm-up), on a random z-scored input, in this process."""
    seconds = {}
    for stage, net in (("coarse", CoarseUNet()), ("fine", EfficientSegNet())):
        net = net.to(device).eval()
        x = torch.randn(1, 1, *sizes[stage], device=device)
        times = []
        with torch.inference_mode():
            for i in range(repeats + 1):
                start = time.perf_counter()
                net(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i:
                    times.append(time.perf_counter() - start)
        seconds[stage] = statistics.median(times)
        del net, x
    seconds["both"] = seconds["coarse"] + seconds["fine"]
    return seconds


def yardsticks(device: torch.device, repeats: int, sizes: dict[str, tuple[int, int, int]]) -> dict[str, dict[str, float]]:
    """The yardstick under each of HEAPS, each in a fresh process; a heap that could not be set is
    left out. RuntimeError, in one line, where a process failed."""
    by_heap: dict[str, dict[str, float]] = {}
    for heap in HEAPS:
        command = [sys.executable, "-m", "bench.yardstick", heap, shape_text(sizes["coarse"]), shape_text(sizes["fine"]),
                   "--device", device.type, "--repeats", str(repeats)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
            raise RuntimeError(f"yardstick under the {heap} heap: {exit_description(done.returncode)}: {last}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        by_heap.setdefault(measured["heap"], measured["seconds"])
        print(f"yardstick, {measured['heap']} heap: {measured['seconds']['both']:.2f} s", file=sys.stderr)
    return by_heap


def faster_heap(by_heap: dict[str, dict[str, float]]) -> str:
    """The heap under which the yardstick took less time: the one a case is compared with."""
    return min(by_heap, key=lambda heap: by_heap[heap]["both"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.yardstick", description=__doc__.split("\n")[0])
    parser.add_argument("heap", choices=HEAPS)
    parser.add_argument("coarse", type=parse_shape, metavar="COARSE")
    parser.add_argument("fine", type=parse_shape, metavar="FINE")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=at_least(1), default=2, help="timed passes after a warm-up (default 2)")
    args = parser.parse_args(argv)
    applied = "kept" if args.heap == "kept" and keep_freed_memory() else "system"  # first, before any allocation
    seconds = yardstick(torch.device(args.device), args.repeats, {"coarse": args.coarse, "fine": args.fine})
    print(json.dumps({"heap": applied, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
