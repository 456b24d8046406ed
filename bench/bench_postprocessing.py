"""Time the pipeline's connected-component clean-up on a whole-volume label map.

    python -m bench.bench_postprocessing [--shape 512 512 200] [--repeats 3]

Label maps: a synthetic prediction (evaluation.synthetic.case_pair: the phantom's organs moved
and resized a little, plus a far false-positive island; "clean") and the same with 1 % of the
voxels set to random labels (noisy: ~100,000 small components per organ, as an untrained or poor
network gives). Compared in one run with the previous implementation, which counted component
sizes over the whole volume (`np.bincount(components.ravel())`) and selected the kept components
by a lookup table indexed with the whole component image; both give the same labels under the same
rules (checked). The last column times the default rules, which add `not_above` (components
wholly above the liver's top dropped) to what the previous implementation did. Median seconds of
`--repeats` runs; the machine (CPU model and flags) and NumPy's version are printed above the table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from bench.arguments import shape_text
from bench.record import machine_line
from evaluation.synthetic import case_pair
from flare_common import cli
from flare_common.cli import at_least
from flare_common.labels import label_names
from inference.postprocessing import Postprocessing, components_kept, keep_largest_components, organ_components

SPACING = (0.8, 0.8, 2.5)
NAMES = label_names("flare21")
SAME_RULES = Postprocessing(not_above={})  # the rules the previous implementation had


def whole_volume_lookup(labels: np.ndarray, spacing: tuple[float, float, float], names: dict[int, str]) -> np.ndarray:
    """The previous implementation (the baseline): sizes counted over the whole component image,
    the kept components selected through a lookup table indexed with it."""
    post = SAME_RULES
    min_voxels = post.min_component_mm3 / float(np.prod(spacing))
    out = np.zeros_like(labels, dtype=np.uint8)
    for label, _, components, _ in organ_components(labels, names):
        sizes = np.bincount(components.ravel())
        keep = np.zeros(sizes.size, dtype=bool)
        keep[components_kept(sizes, post.kept(label), min_voxels)] = True
        out[keep[components]] = label
    return out


def median_seconds(function, labels: np.ndarray, repeats: int, *post: Postprocessing) -> tuple[float, np.ndarray]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = function(labels, SPACING, NAMES, *post)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_postprocessing", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=at_least(16), nargs=3, default=(512, 512, 200))
    parser.add_argument("--repeats", type=at_least(1), default=3)
    args = parser.parse_args(argv)
    print(f"Command: `python -m bench.bench_postprocessing {' '.join(argv if argv is not None else sys.argv[1:])}`. "
          f"{machine_line()}, NumPy {np.__version__}.\n")
    rng = np.random.default_rng(0)
    _, clean = case_pair(tuple(args.shape), SPACING, rng, island=True)
    noisy = clean.copy()
    flip = rng.random(clean.shape) < 0.01
    noisy[flip] = rng.integers(0, 5, int(flip.sum()), dtype=np.uint8)
    print(f"| label map ({shape_text(args.shape)}) | previous s | now s | speed-up | now, default rules s |")
    print("|---|---|---|---|---|")
    for name, labels in (("clean", clean), ("noisy", noisy)):
        before, expected = median_seconds(whole_volume_lookup, labels, args.repeats)
        now, got = median_seconds(keep_largest_components, labels, args.repeats, SAME_RULES)
        default, _ = median_seconds(keep_largest_components, labels, args.repeats)
        if not np.array_equal(expected, got):
            print(f"error: {name}: the two implementations disagree", file=sys.stderr)
            return 1
        print(f"| {name} | {before:.2f} | {now:.2f} | {before / now:.1f}x | {default:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
