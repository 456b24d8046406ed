"""Segment every CT in a folder: the submission's entry point (predict.sh runs this).

    python -m inference.predict -i INPUTS -o OUTPUTS [--weights PATH] [--device auto|cpu|cuda]
                                [--precision auto|fp16|bf16|fp32] [--report FILE.json]

Each <case>_0000.nii.gz (or any other .nii/.nii.gz) becomes OUTPUTS/<case>.nii.gz: uint8 labels
on exactly the input's grid and header. One line per case on stdout, a progress bar and every
problem (one line each) on stderr. Exit code: 0 every case written, 1 some cases failed (the
others are still written), 2 usage error (folders, weights, device).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from evaluation.imageio import InputError, describe_error, is_nifti, output_name
from evaluation.report import write_atomic
from inference.checkpoint import CheckpointError, load
from inference.imageio import read_ct, write_labels
from inference.pipeline import PRECISIONS, Segmenter, choose_precision

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "flare21_c2f.pt"


def _device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available")
    if requested == "auto" and not torch.cuda.is_available():
        print("notice: no CUDA GPU found, running on the CPU (slow)", file=sys.stderr)
        return torch.device("cpu")
    return torch.device("cuda" if requested in ("auto", "cuda") else "cpu")


def segment_case(path: Path, out_dir: Path, segmenter: Segmenter) -> dict:
    """Segment one file and write its output; returns the case's report entry (raises on failure)."""
    start = time.perf_counter()
    ct = read_ct(path)
    read_s = time.perf_counter() - start
    labels, result = segmenter.segment_ct(ct)
    write_start = time.perf_counter()
    write_labels(labels, ct, out_dir / output_name(path))
    seconds = {"read": read_s, **result.seconds, "write": time.perf_counter() - write_start}
    seconds["total"] = time.perf_counter() - start
    return {
        "input": path.name, "output": output_name(path), "status": "ok",
        "shape": list(ct.image.shape), "spacing_mm": [round(s, 4) for s in ct.spacing],
        "organs_found": [name for label, name in segmenter.models.labels.items() if (result.labels == label).any()],
        "crop": [[s.start, s.stop] for s in result.box] if result.box else None,
        "seconds": seconds, "warnings": result.warnings, **result.cuda_memory(),
    }


def _summary_line(case: dict) -> str:
    stages = ", ".join(f"{k} {v:.1f}" for k, v in case["seconds"].items() if k != "total")
    organs = ", ".join(case["organs_found"]) or "no organs"
    return (f"{case['input']} -> {case['output']}: {'x'.join(map(str, case['shape']))}, {organs}; "
            f"{case['seconds']['total']:.1f} s ({stages})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference.predict",
                                     description="Segment abdominal CTs (FLARE21 labels) with the coarse-to-fine pipeline.")
    parser.add_argument("-i", "--input", type=Path, default=Path("/workspace/inputs"),
                        help="folder of CTs, <case>_0000.nii.gz (default %(default)s)")
    parser.add_argument("-o", "--output", type=Path, default=Path("/workspace/outputs"),
                        help="folder for the label maps <case>.nii.gz (default %(default)s)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="checkpoint (default %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                        help="auto: fp16 on CUDA, fp32 on the CPU")
    parser.add_argument("--report", type=Path, help="write per-case and per-stage times as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.input.is_dir():
        parser.error(f"--input {args.input}: not a folder")
    try:
        device = _device(args.device)
        precision = choose_precision(args.precision, device)
        models = load(args.weights)
    except (ValueError, CheckpointError) as exc:
        parser.error(str(exc))
    if models.trained_on.startswith("untrained"):
        print(f"notice: {args.weights.name} holds untrained weights: the segmentations are meaningless",
              file=sys.stderr)
    else:
        print(f"notice: weights {args.weights.name}: {models.trained_on}", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in args.input.iterdir() if p.is_file())
    inputs = [p for p in files if is_nifti(p)]
    ignored = [p.name for p in files if not is_nifti(p)]
    if ignored:
        print(f"notice: ignoring {len(ignored)} non-NIfTI file(s): {', '.join(ignored)}", file=sys.stderr)
    if not inputs:
        print(f"notice: no .nii.gz or .nii files in {args.input}: nothing to do", file=sys.stderr)

    segmenter = Segmenter(models, device, precision)
    cases, seen = [], set()
    for path in tqdm(inputs, desc="segmenting", unit="case", file=sys.stderr, disable=None):
        name = output_name(path)
        try:
            if name in seen:
                raise InputError(f"another input already writes {name}")
            seen.add(name)
            case = segment_case(path, args.output, segmenter)
            print(_summary_line(case), flush=True)
            for warning in case["warnings"]:
                print(f"warning: {path.name}: {warning}", file=sys.stderr)
        except Exception as exc:  # one case never stops the others
            reason = str(exc) if isinstance(exc, InputError) else describe_error(exc)
            print(f"error: {path.name}: {reason}", file=sys.stderr, flush=True)
            case = {"input": path.name, "output": None, "status": "failed", "error": reason}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        cases.append(case)

    failed = sum(c["status"] != "ok" for c in cases)
    if args.report:
        report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                  "device_type": device.type, "precision": precision, "torch": torch.__version__,
                  "weights": str(args.weights), "trained_on": models.trained_on,
                  "cases": cases, "failed": failed}
        args.report.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.report, json.dumps(report, indent=2) + "\n")
    if inputs:
        print(f"{len(cases) - failed} of {len(cases)} case(s) written to {args.output}"
              + (f"; {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
