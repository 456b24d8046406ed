"""Benchmark: one forward pass of each network at the paper's input size on the CPU.

    python -m bench.bench_networks [--repeats 2] [--write-docs]

Variants: fp32, fp32 with channels-last-3d memory format, and bf16 autocast. Each is timed after
one warm-up pass (median of --repeats), under torch.inference_mode, with randomly initialised
weights (fixed seed) on a CT-like input (a phantom CT from training/phantom/ on a 400 mm cube
centred on the abdomen, clipped to [-325, 325] HU and z-scored as the pipeline does). The
difference of each variant to fp32 is the largest absolute logit difference and the fraction of
voxel-organ decisions (sigmoid > 0.5) that change.
With --write-docs the table replaces its section in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from bench.arguments import shape_text
from bench.record import cpu_description, require_docs_sections, write_section
from flare_common import cli
from flare_common.cli import at_least
from inference.networks import CoarseUNet, EfficientSegNet
from inference.preprocessing import Normalisation
from training.phantom import case_seed, centred, generate


def ct_like(size: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """A (1, 1, x, y, z) phantom CT of `size` voxels spanning 400 mm per axis, clipped and z-scored."""
    hu = generate(case_seed(seed, 0), geometry=centred(size, tuple(400 / n for n in size))).image
    return torch.from_numpy(Normalisation()(hu))[None, None]


def run(model: torch.nn.Module, x: torch.Tensor, variant: str, repeats: int) -> tuple[list[float], torch.Tensor]:
    """Seconds per forward (after a warm-up) and the fp32 logits of one variant."""
    if variant == "fp32 channels-last":
        model, x = model.to(memory_format=torch.channels_last_3d), x.to(memory_format=torch.channels_last_3d)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16 autocast")
    times = []
    with torch.inference_mode(), autocast:
        for i in range(repeats + 1):
            start = time.perf_counter()
            out = model(x)
            if i:
                times.append(time.perf_counter() - start)
    model.to(memory_format=torch.contiguous_format)
    return times, out.float().contiguous()


def bench(repeats: int) -> list[dict]:
    rows = []
    for name, model in (("coarse", CoarseUNet()), ("fine", EfficientSegNet())):
        torch.manual_seed(0)
        model = type(model)(model.config).eval()
        x = ct_like(model.config.input_size)
        reference = None
        for variant in ("fp32", "fp32 channels-last", "bf16 autocast"):
            times, out = run(model, x, variant, repeats)
            if reference is None:
                reference = out
            rows.append({
                "network": name, "input": shape_text(model.config.input_size), "variant": variant,
                "seconds": statistics.median(times), "runs": len(times),
                "max_abs_diff": float((out - reference).abs().max()),
                "decisions_changed": float(((out > 0) != (reference > 0)).float().mean()),
            })
            print(rows[-1], file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| network | input | variant | seconds (median) | runs | max abs logit diff to fp32 | decisions changed |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['input']} | {r['variant']} | {r['seconds']:.2f} | {r['runs']} | "
                     f"{r['max_abs_diff']:.3g} | {100 * r['decisions_changed']:.4f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_networks", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=at_least(1), default=2, help="timed passes per variant, after one warm-up")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.write_docs:
        require_docs_sections()
    rows = bench(args.repeats)
    text = (f"Command: `python -m bench.bench_networks --repeats {args.repeats} --write-docs`. "
            f"Machine: {cpu_description()}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}.\n\n{table(rows)}")
    print(text)
    if args.write_docs:
        write_section("networks-cpu", "Network forward pass on the CPU", text)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
