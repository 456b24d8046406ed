"""Training speed and memory per stage, input size and precision: seconds per optimiser step
and peak resident memory, each configuration in a fresh process.

    python -m bench.bench_training [--sides 32 64 96] [--precisions fp32 bf16] [--steps 4] [--write-docs]

A step is what training.train runs for a batch of one: forward (autocast for bf16), Dice +
focal loss, backward, Adam update, with the paper's network widths on a random input. The
median of the steps after the first (warm-up) is reported. --write-docs replaces the table in
docs/benchmarks.md between its training-cpu markers, with the CPU model and its flags.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import date

import torch

from bench.peak_memory import own_peak_rss_mb
from bench.record import cpu_description, exit_description, require_docs_sections, write_section
from flare_common import cli
from flare_common.cli import at_least


def one(stage: str, side: int, precision: str, steps: int) -> dict:
    """Time `steps` training steps of one configuration in this process."""
    from inference.networks import CoarseConfig, CoarseUNet, EfficientSegNet, FineConfig
    from training.loss import dice_focal_loss

    torch.manual_seed(0)
    size = (side, side, side)
    net = CoarseUNet(CoarseConfig(input_size=size)) if stage == "coarse" else EfficientSegNet(FineConfig(input_size=size))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-5)
    x = torch.randn(1, 1, *size)
    labels = torch.randint(0, 5, (1, *size))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = net(x)
        dice_focal_loss(logits, labels).backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak_mb = own_peak_rss_mb()
    return {"stage": stage, "side": side, "precision": precision, "s_per_step": statistics.median(times[1:]),
            "peak_rss_mb": peak_mb}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_training", description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", default=["coarse", "fine"], choices=["coarse", "fine"])
    parser.add_argument("--sides", type=at_least(16), nargs="+", default=[32, 64, 96])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=at_least(2), default=4,
                        help="steps per configuration, at least 2 (the first is a warm-up)")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--one", nargs=3, metavar=("STAGE", "SIDE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2], args.steps)))
        return 0
    if args.write_docs:
        require_docs_sections()
    rows = []
    for stage in args.stages:
        for side in args.sides:
            for precision in args.precisions:
                done = subprocess.run([sys.executable, "-m", "bench.bench_training", "--one", stage, str(side), precision,
                                       "--steps", str(args.steps)], capture_output=True, text=True)
                if done.returncode:
                    last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
                    print(f"error: {stage} {side} {precision}: {exit_description(done.returncode)}: {last}",
                          file=sys.stderr)
                    return 1
                rows.append(json.loads(done.stdout))
                print(f"{stage} {side}^3 {precision}: {rows[-1]['s_per_step']:.2f} s/step", file=sys.stderr)
    table = [f"Command: `python -m bench.bench_training {' '.join(argv or sys.argv[1:])}`. Machine: {cpu_description()}; "
             f"{torch.get_num_threads()} threads; "
             f"torch {torch.__version__}, Python {platform.python_version()}; {date.today().isoformat()}.", "",
             "| stage | input side | precision | s per step (batch 1) | steps per hour | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['stage']} | {r['side']} | {r['precision']} | {r['s_per_step']:.2f} | "
                     f"{3600 / r['s_per_step']:.0f} | {r['peak_rss_mb']:.0f} |")
    text = "\n".join(table)
    print(text)
    if args.write_docs:
        write_section("training-cpu", "Training steps on the CPU", text)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
