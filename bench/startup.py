"""Where a cold start of the submission goes: each step in a fresh interpreter, wall clock.

    python -m bench.startup [--weights PATH] [--repeats 3]

Steps, each a new process (medians of --repeats): the bare interpreter; `import torch`; the
submission's imports (`import inference.predict`); those plus CUDA initialisation (the first
tensor on the GPU); those plus the weights loaded onto the GPU in FP16. The differences between
steps are what each adds to every case the organisers time (they start the container once per
case). Without CUDA the CUDA steps are skipped. The machine (CPU model and flags), torch and
Python are printed above the table.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.arguments import add_weights
from bench.record import machine_line
from flare_common import cli
from flare_common.cli import at_least

ROOT = Path(__file__).resolve().parents[1]
STEPS = {
    "interpreter": "pass",
    "import torch": "import torch",
    "submission imports": "import inference.predict",
    "+ CUDA initialised": "import inference.predict, torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()",
    "+ weights on the GPU (FP16)": ("import sys, torch; from inference.checkpoint import load; "
                                    "from inference.torch_runtime import TorchNetworks; "
                                    "TorchNetworks(load(sys.argv[1]), 'cuda', 'fp16'); torch.cuda.synchronize()"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n")[0])
    add_weights(parser)
    parser.add_argument("--repeats", type=at_least(1), default=3)
    args = parser.parse_args(argv)
    if not args.weights.is_file():
        parser.error(f"--weights {args.weights}: no such file")
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "no CUDA GPU"
    print(f"{machine_line()}; torch {torch.__version__}; {device}.\n")
    print("| step | seconds (median) | added |")
    print("|---|---|---|")
    previous = 0.0
    for name, code in STEPS.items():
        if "cuda" in code and not cuda:
            continue
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, str(args.weights.resolve())], cwd=ROOT, check=True)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"| {name} | {median:.2f} | {median - previous:+.2f} |")
        previous = median
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
