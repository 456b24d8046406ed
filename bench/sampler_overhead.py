"""How far the organisers' "count x 0.1 s" is from the real sampling time.

    python -m bench.sampler_overhead [--seconds 20] [--gpu 0]

The organisers' sampler took a sample (NVML memory, psutil CPU and RAM) and then slept 0.1 s, so
its real interval was 0.1 s plus the time to take a sample plus the sleep's overshoot. This runs
that loop for --seconds and reports the real mean interval and by how much count x 0.1 s
understates an area (the maxima are unaffected). Without NVML it measures the psutil part only.
The result (JSON) records the machine (CPU model and flags) and the date.
It takes only the NVML memory query: the organisers' full device query (`pynvml.smi`) asked for
more fields, so their overhead was at least this.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import psutil

from bench.record import machine_line
from evaluation.nvml import GpuMemory
from flare_common import cli

NOMINAL_S = 0.1


def organisers_loop(seconds: float, gpu: GpuMemory | None) -> dict:
    """Sample, then sleep NOMINAL_S, for `seconds`; real mean interval and sample cost in s."""
    psutil.cpu_percent()
    costs, start, count = [], time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        before = time.perf_counter()
        if gpu is not None:
            gpu.used_mb()
        psutil.cpu_percent()
        psutil.virtual_memory()
        costs.append(time.perf_counter() - before)
        count += 1
        time.sleep(NOMINAL_S)
    elapsed = time.perf_counter() - start
    interval = elapsed / count
    return {"samples": count, "elapsed_s": elapsed, "mean_interval_s": interval,
            "mean_sample_cost_s": sum(costs) / count, "max_sample_cost_s": max(costs),
            "area_understated_pct": 100 * (1 - NOMINAL_S / interval), "nvml": gpu is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sampler_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=cli.finite_float, default=20.0)
    parser.add_argument("--gpu", type=int, default=0)
    args = parser.parse_args(argv)
    result = {"machine": machine_line(), **organisers_loop(args.seconds, GpuMemory.open(args.gpu))}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
