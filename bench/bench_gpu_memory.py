"""Peak GPU memory and time of one forward pass of each network at the paper's sizes, FP16.

    python -m bench.bench_gpu_memory [--repeats 5]

Each variant runs in a fresh process:
  - stock: the networks as they are;
  - in-place norm: instance norm without autograd normalising the convolution output in place
    (float32 statistics), which removes one full-size transient map per convolution;
  - workspace cap: cuDNN's convolution workspace capped at 64 MB (CUDNN_CONV_WSCAP_DBG);
  - cudnn.benchmark: cuDNN's autotuner chooses the convolution algorithms;
  - channels-last: weights and input in the channels-last 3D memory format.
Reports torch's peak allocated and reserved memory during the forward pass (MB, above the
weights), the median time of --repeats passes after a warm-up, the largest difference of the
logits to the stock variant's, and, per variant, the leaf modules whose call needed the most
memory beyond what they return (a convolution's workspace, say) and the module running at the
peak (measured in one more pass with hooks on every leaf module). Needs CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.record import exit_description, machine_line
from flare_common import cli
from flare_common.cli import at_least

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = ("stock", "in-place norm", "workspace cap", "cudnn.benchmark", "channels-last")


def inplace_instance_norm(self: nn.InstanceNorm3d, x: torch.Tensor) -> torch.Tensor:
    """Instance norm (no affine, no running statistics) computed in place on x."""
    spatial = (2, 3, 4)
    x = x.sub_(x.mean(dim=spatial, keepdim=True, dtype=torch.float32).to(x.dtype))
    norm = torch.linalg.vector_norm(x, dim=spatial, keepdim=True, dtype=torch.float32)
    return x.mul_(torch.rsqrt(norm.square_().div_(x.shape[2:].numel()).add_(self.eps)).to(x.dtype))


def hook_leaves(net: nn.Module) -> tuple[dict[str, tuple[float, float]], list]:
    """Hooks on every leaf module recording, per module, the memory its call needed beyond its
    inputs and output (a workspace, an intermediate) and the absolute peak during it, in MB."""
    found: dict[str, tuple[float, float]] = {}

    def before(module, args):
        torch.cuda.reset_peak_memory_stats()

    def after(module, args, output):
        peak = torch.cuda.max_memory_allocated()
        transient, absolute = found.get(module.bench_name, (0.0, 0.0))
        found[module.bench_name] = (max(transient, (peak - torch.cuda.memory_allocated()) / 2**20),
                                    max(absolute, peak / 2**20))

    handles = []
    for name, module in net.named_modules():
        if not list(module.children()):
            module.bench_name = f"{name} ({type(module).__name__})"
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    return found, handles


def measure(variant: str, repeats: int) -> dict:
    """Runs in the child process: both networks, FP16, one input each."""
    from inference.networks import CoarseUNet, EfficientSegNet

    if variant == "in-place norm":
        nn.InstanceNorm3d.forward = inplace_instance_norm
    torch.backends.cudnn.benchmark = variant == "cudnn.benchmark"
    memory_format = torch.channels_last_3d if variant == "channels-last" else torch.contiguous_format
    device = torch.device("cuda")
    out = {}
    for network in (CoarseUNet, EfficientSegNet):
        torch.manual_seed(0)  # the same weights in every variant
        net = network().to(device, memory_format=memory_format).half().eval()
        generator = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(1, 1, *net.config.input_size, device=device, generator=generator).half()
        x = x.contiguous(memory_format=memory_format)
        with torch.inference_mode():
            net(x)  # warm-up
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(repeats):
                y = None  # the previous pass's logits let go: a pass's peak holds its own output only
                start = time.perf_counter()
                y = net(x)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            peaks = (torch.cuda.max_memory_allocated() - base, torch.cuda.max_memory_reserved())
            logits = y.float().cpu()
            del y  # nor does the hooked pass's
            found, handles = hook_leaves(net)
            net(x)
            for handle in handles:
                handle.remove()
        by_transient = sorted(found.items(), key=lambda kv: -kv[1][0])[:3]
        at_peak = max(found.items(), key=lambda kv: kv[1][1])
        out[network.__name__] = {
            "peak_allocated_mb": peaks[0] / 2**20, "peak_reserved_mb": peaks[1] / 2**20,
            "seconds": statistics.median(times), "logits": logits,
            "largest_transients_mb": [(name, t) for name, (t, _) in by_transient],
            "peak_module": (at_peak[0], at_peak[1][1] - base / 2**20)}
        del net, x
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_gpu_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=at_least(1), default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        variant, path = args.child.split(":", 1)
        torch.save(measure(variant, args.repeats), path)
        return 0
    if not torch.cuda.is_available():
        print("error: no CUDA GPU: this benchmark needs one", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            path = Path(tmp) / f"{len(results)}.pt"
            env = {**os.environ, **({"CUDNN_CONV_WSCAP_DBG": "64"} if variant == "workspace cap" else {})}
            done = subprocess.run([sys.executable, "-m", "bench.bench_gpu_memory", "--repeats", str(args.repeats),
                                   "--child", f"{variant}:{path}"], env=env, cwd=ROOT)
            if done.returncode != 0:
                print(f"error: variant {variant}: {exit_description(done.returncode)}", file=sys.stderr)
                return 1
            results[variant] = torch.load(path)
    print(f"{machine_line()}; GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, FP16, batch 1\n")
    print("| network | variant | peak allocated MB (above weights) | peak reserved MB | seconds (median) | "
          "max abs logit diff to stock | module at the peak, MB | largest transients MB |")
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for network in ("CoarseUNet", "EfficientSegNet"):
        stock = results["stock"][network]["logits"]
        for name, result in results.items():
            r = result[network]
            diff = float((r["logits"] - stock).abs().max())
            summary[f"{network} {name}"] = {k: v for k, v in r.items() if k != "logits"} | {"max_abs_diff": diff}
            largest = ", ".join(f"{module} {mb:.0f}" for module, mb in r["largest_transients_mb"])
            module, mb = r["peak_module"]
            print(f"| {network} | {name} | {r['peak_allocated_mb']:.0f} | {r['peak_reserved_mb']:.0f} | "
                  f"{r['seconds']:.3f} | {diff:.3g} | {module} {mb:.0f} | {largest} |")
    print("\n" + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
