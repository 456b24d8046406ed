"""Peak GPU memory and time of one forward pass of each network at the paper's sizes, FP16.

    python -m bench.bench_gpu_memory [--repeats 5]

Each variant runs in a fresh process (cuDNN settings are read once per process):
  - stock: the networks as they are;
  - in-place norm: instance norm without autograd normalising the convolution output in place
    (float32 statistics), which removes one full-size transient map per convolution;
  - workspace cap: cuDNN's convolution workspace capped at 64 MB (CUDNN_CONV_WSCAP_DBG);
  - both.
Reports torch's peak allocated and reserved memory during the forward pass (MB, above the
weights), the median time of --repeats passes after a warm-up, and the largest difference of the
logits to the stock variant's. Needs CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

VARIANTS = {"stock": (False, None), "in-place norm": (True, None), "workspace cap": (False, "64"),
            "both": (True, "64")}


def inplace_instance_norm(self: nn.InstanceNorm3d, x: torch.Tensor) -> torch.Tensor:
    """Instance norm (no affine, no running statistics) computed in place on x."""
    spatial = (2, 3, 4)
    x = x.sub_(x.mean(dim=spatial, keepdim=True, dtype=torch.float32).to(x.dtype))
    norm = torch.linalg.vector_norm(x, dim=spatial, keepdim=True, dtype=torch.float32)
    return x.mul_(torch.rsqrt(norm.square_().div_(x.shape[2:].numel()).add_(self.eps)).to(x.dtype))


def measure(inplace: bool, repeats: int) -> dict:
    """Runs in the child process: both networks, FP16, one input each."""
    from inference.networks import CoarseUNet, EfficientSegNet

    if inplace:
        nn.InstanceNorm3d.forward = inplace_instance_norm
    device = torch.device("cuda")
    out = {}
    for network in (CoarseUNet, EfficientSegNet):
        torch.manual_seed(0)  # the same weights in every variant
        net = network().to(device).half().eval()
        generator = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(1, 1, *net.config.input_size, device=device, generator=generator).half()
        with torch.inference_mode():
            net(x)  # warm-up
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                y = net(x)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        out[network.__name__] = {
            "peak_allocated_mb": (torch.cuda.max_memory_allocated() - base) / 2**20,
            "peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
            "seconds": statistics.median(times), "logits": y.float().cpu()}
        del net, x, y
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_gpu_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        inplace, path = args.child.split(":", 1)
        torch.save(measure(inplace == "1", args.repeats), path)
        return 0
    if not torch.cuda.is_available():
        print("error: no CUDA GPU: this benchmark needs one", file=sys.stderr)
        return 2
    results = {}
    for name, (inplace, cap) in VARIANTS.items():
        path = f"/tmp/bench_gpu_memory_{os.getpid()}_{len(results)}.pt"
        env = {**os.environ, **({"CUDNN_CONV_WSCAP_DBG": cap} if cap else {})}
        subprocess.run([sys.executable, "-m", "bench.bench_gpu_memory", "--repeats", str(args.repeats),
                        "--child", f"{int(inplace)}:{path}"], env=env, check=True)
        results[name] = torch.load(path)
        os.remove(path)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, FP16, batch 1\n")
    print("| network | variant | peak allocated MB (above weights) | peak reserved MB | seconds (median) | "
          "max abs logit diff to stock |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for network in ("CoarseUNet", "EfficientSegNet"):
        stock = results["stock"][network]["logits"]
        for name, result in results.items():
            r = result[network]
            diff = float((r["logits"] - stock).abs().max())
            summary[f"{network} {name}"] = {k: v for k, v in r.items() if k != "logits"} | {"max_abs_diff": diff}
            print(f"| {network} | {name} | {r['peak_allocated_mb']:.0f} | {r['peak_reserved_mb']:.0f} | "
                  f"{r['seconds']:.3f} | {diff:.3g} |")
    print("\n" + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
