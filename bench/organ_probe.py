"""What the networks need to find an organ in a labelled CT: the organ painted over, as a probe.

    python -m bench.organ_probe --ct CT --labels REF [--weights W] [--organ 4] [--hu 45 100]
        [--grow 0 1] [--noise 10] [--clefts R] [--seed 0] [--json FILE]

Segments the CT with the checkpoint (both stages, fp32, eager PyTorch on the CPU) as it is, then
once for every pair of --hu and --grow with the organ's reference voxels, grown by that many voxels
(a 6-connected dilation), replaced by Gaussian noise of --noise HU sd around that value, and prints
each variant's DSC per organ against the reference (a Markdown table; --json writes the rows).
If a lean gland painted at the reference place is found and the real one is not, its look is
what the networks miss; if neither is, what surrounds it, or its shape and size.

--clefts R adds a variant with the organ's clefts filled in: the unlabelled voxels inside its
closing by a disk of R voxels in each axial slice (fissures, the porta, fat between lobes) painted
with the organ's own median and sd. If the organ is found whole only so, the networks end it at
its clefts.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from bench.arguments import add_weights
from bench.record import markdown_table
from evaluation.metrics import dice
from flare_common import cli
from flare_common.errors import InputError
from flare_common.labels import label_names
from inference.checkpoint import load
from inference.imageio import read_ct
from inference.pipeline import Segmenter
from inference.torch_runtime import TorchNetworks

NAMES = label_names("flare21")


def painted(ct: np.ndarray, mask: np.ndarray, hu: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The CT (HU, any axis order) with the voxels of mask replaced by N(hu, noise) HU, float32."""
    out = ct.astype(np.float32, copy=True)
    out[mask] = hu + noise * rng.standard_normal(int(mask.sum()), dtype=np.float32)
    return out


def clefts(reference: np.ndarray, organ: int, radius: int) -> np.ndarray:
    """The unlabelled voxels inside the organ's closing by a disk of radius voxels in each axial slice
    (reference: labels, x y z), bool."""
    r = np.arange(-radius, radius + 1)
    disk = (r[:, None] ** 2 + r[None, :] ** 2 <= radius ** 2)[:, :, None]
    return ndimage.binary_closing(reference == organ, structure=disk) & (reference == 0)


def probe(segmenter: Segmenter, ct: np.ndarray, spacing: tuple[float, float, float], reference: np.ndarray,
          organ: int, hus: list[float], grows: list[int], noise: float, seed: int,
          cleft_radius: int | None = None) -> list[dict]:
    """One row per variant (the CT as it is first; the organ's clefts filled last, with cleft_radius):
    its name, the painted voxels and the DSC of every organ of the reference."""
    rng = np.random.default_rng(seed)
    organs = sorted(int(k) for k in np.unique(reference) if k)
    variants = [("as it is", ct.astype(np.float32), 0)]
    organ_mask = reference == organ
    for grow in grows:
        mask = ndimage.binary_dilation(organ_mask, iterations=grow) if grow else organ_mask
        variants += [(f"{hu:g} HU, grown {grow}", painted(ct, mask, hu, noise, rng), int(mask.sum())) for hu in hus]
    if cleft_radius:
        mask, own = clefts(reference, organ, cleft_radius), ct[organ_mask].astype(np.float32)
        variants.append((f"clefts ({cleft_radius} voxels) filled", painted(ct, mask, float(np.median(own)),
                                                                          float(own.std()), rng), int(mask.sum())))
    rows = []
    for name, image, voxels in variants:
        labels = segmenter(image, spacing).labels
        rows.append({"variant": name, "painted_voxels": voxels,
                     **{NAMES.get(k, str(k)): round(dice(reference == k, labels == k), 4) for k in organs}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.organ_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", type=Path, required=True, help="the CT (NIfTI, HU)")
    parser.add_argument("--labels", type=Path, required=True, help="its reference labels (FLARE21 numbering)")
    add_weights(parser)
    parser.add_argument("--organ", type=int, default=4, help="label to paint over (default %(default)s: pancreas)")
    parser.add_argument("--hu", type=cli.finite_float, nargs="*", default=[45.0, 100.0],
                        help="values to paint (default: 45 lean non-contrast, 100 enhanced; none: no painted variant)")
    parser.add_argument("--grow", type=int, nargs="+", default=[0, 1], help="dilations in voxels (default 0 1)")
    parser.add_argument("--noise", type=cli.finite_float, default=10.0, help="sd of the painted values, HU (default %(default)s)")
    parser.add_argument("--clefts", type=int, metavar="R",
                        help="also fill the organ's clefts: unlabelled voxels in its closing by a disk of R voxels per "
                        "axial slice, painted with its own median and sd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args(argv)
    read = []
    for path in (args.ct, args.labels):
        try:
            read.append(read_ct(path))
        except InputError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
    ct, ref = read
    if ref.data.shape != ct.data.shape:
        print(f"error: {args.labels}: shape {ref.data.shape} differs from the CT's {ct.data.shape}", file=sys.stderr)
        return 2
    reference = np.rint(ref.data).astype(np.uint8)
    if not (reference == args.organ).any():
        print(f"error: {args.labels}: no voxel of label {args.organ}", file=sys.stderr)
        return 2
    torch.set_grad_enabled(False)
    models = load(args.weights)
    segmenter = Segmenter(models.spec(), TorchNetworks(models, "cpu", "fp32"))
    rows = probe(segmenter, ct.data, ct.spacing, reference, args.organ, args.hu, args.grow, args.noise, args.seed,
                 args.clefts)
    print(markdown_table(list(rows[0]), [[str(value) for value in row.values()] for row in rows]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
