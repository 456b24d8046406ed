"""Predictions of known quality for trying and testing the scorer.

The anatomy and the CT images come from the project's one phantom generator, `training.phantom`
(numpy, scipy and nibabel only: the scorer's installation needs no torch). This module makes a
"prediction" from a ground-truth label map by moving and resizing each organ a little, plus an
optional false-positive island (`degraded`), which gives realistic DSC and NSD values. The three
cases of the defaults (scans drawn at up to 128 voxels a side: 2.7-3.3 mm in-plane, 2.9-5 mm
slices) score a mean DSC of 0.91 for the liver, 0.89 for the kidneys, 0.91 for the spleen and 0.78
for the thin pancreas (0.70-0.94 per case and organ), and a mean NSD at 1 mm of 0.62 (0.33-0.78);
stronger settings give lower values.

    python -m evaluation.synthetic -o example [--cases 3] [--seed 0] [--max-side 128 | --shape X Y Z --spacing SX SY SZ]

writes, for cases synthetic_000, synthetic_001, ..., the phantom CT example/images/<case>_0000.nii.gz
(int16 HU), its labels example/gt/<case>.nii.gz (uint8) and degraded labels example/pred/<case>.nii.gz
on exactly the ground truth's grid, header and storage orientation. Case i is case i of
`python -m training.phantom --seed S` (a drawn scan geometry, at most --max-side voxels per axis),
or with --shape and --spacing the same patient on a fixed grid centred on the abdomen.
`degraded` takes a label map in any axis order (the files' stored one here), with the spacing in mm
along its axes; the label maps made here in memory are indexed (x, y, z), RAS+.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from flare_common import cli
from flare_common.nifti import SPACING_RANGE_MM
from training.phantom import Geometry, case_seed, centred, draw_anatomy, generate, other_cases, render, save
from training.phantom.generator import MIN_MAX_SIDE

ISLAND_RADIUS_MM = 10.0  # the false-positive ball
ISLAND_GRID = 64  # cells per axis (at most) of the coarse grid the island's place is chosen on
DEFAULT_MAX_SIDE = 128


def _moved(mask: np.ndarray, corner: np.ndarray, volume: tuple[int, ...], shift: np.ndarray,
           zoom: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """A binary mask (its box starting at voxel `corner` of a volume of shape `volume`) zoomed by
    `zoom` (per axis) about its centroid and shifted by `shift` voxels: the box of the volume it
    lands in and the moved mask there (linear interpolation, threshold 0.5; clipped to the volume)."""
    centre = np.asarray(ndimage.center_of_mass(mask)) + corner
    reach = np.ceil(np.abs(shift) + np.abs(zoom - 1.0) * mask.shape).astype(int) + 1
    lo = np.maximum(corner - reach, 0)
    hi = np.minimum(corner + mask.shape + reach, volume)
    offset = (lo - centre - shift) / zoom + centre - corner
    moved = ndimage.affine_transform(mask.astype(np.float32), 1.0 / zoom, offset, output_shape=tuple(hi - lo),
                                     order=1, mode="constant", cval=0.0)
    return tuple(slice(a, b) for a, b in zip(lo, hi)), moved > 0.5


def _island_centre(labels: np.ndarray, spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A voxel far from every organ and from the volume's border: drawn among the cells of a coarse
    grid whose clearance (mm) is at least half the largest; None where there is no room at all."""
    step = np.maximum(np.ceil(np.array(labels.shape) / ISLAND_GRID), 1).astype(int)
    free = labels[::step[0], ::step[1], ::step[2]] == 0
    clearance = ndimage.distance_transform_edt(np.pad(free, 1), sampling=spacing * step)[1:-1, 1:-1, 1:-1]
    if clearance.max() == 0:
        return None
    cells = np.argwhere(clearance >= clearance.max() / 2)
    return cells[rng.integers(len(cells))] * step


def _ball(centre: np.ndarray, radius_mm: float, spacing: np.ndarray,
          shape: tuple[int, ...]) -> tuple[tuple[slice, ...], np.ndarray]:
    """The voxels within radius_mm of voxel `centre`: their box in a volume of `shape` and the mask there."""
    reach = np.ceil(radius_mm / spacing).astype(int)
    lo, hi = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, shape)
    d2 = sum(((np.arange(a, b) - c) * s).reshape([-1 if k == axis else 1 for k in range(3)]) ** 2
             for axis, (a, b, c, s) in enumerate(zip(lo, hi, centre, spacing)))
    return tuple(slice(a, b) for a, b in zip(lo, hi)), d2 <= radius_mm ** 2


def degraded(labels: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator,
             shift_mm: float = 2.0, scale: float = 0.05, island: bool = True) -> np.ndarray:
    """A uint8 "prediction" of known quality made from an integer label map (3D, any axis order;
    spacing in mm along its axes): every connected part of every label (26-connected) is zoomed
    about its centroid by 1 + N(0, scale) per axis (at least 0.5) and shifted by N(0, shift_mm) mm
    per axis, working inside its bounding box; labels are painted in increasing order (a later one covers an earlier one
    where they meet). With `island`, a ball of ISLAND_RADIUS_MM of one of the present labels is
    added on the background, as far as there is room from the organs and the volume's border.
    shift_mm = scale = 0 and no island give the labels back."""
    spacing = np.asarray(spacing, float)
    pred = np.zeros(labels.shape, np.uint8)
    present = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        present.append(label)
        parts, _ = ndimage.label(labels[box] == label, structure=np.ones((3, 3, 3), bool))
        for k, part in enumerate(ndimage.find_objects(parts), start=1):
            corner = np.array([b.start + p.start for b, p in zip(box, part)])
            shift = rng.normal(0.0, shift_mm, 3) / spacing
            zoom = np.maximum(1.0 + rng.normal(0.0, scale, 3), 0.5)
            where, moved = _moved(parts[part] == k, corner, labels.shape, shift, zoom)
            pred[where][moved] = label
    centre = _island_centre(labels, spacing, rng) if island and present else None
    if centre is not None:
        where, ball = _ball(centre, ISLAND_RADIUS_MM, spacing, labels.shape)
        pred[where][ball & (labels[where] == 0)] = rng.choice(present)
    return pred


def phantom_labels(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                   rng: np.random.Generator) -> np.ndarray:
    """The uint8 label map (x, y, z, RAS+) of a phantom patient drawn from rng, on a grid of `shape`
    voxels and `spacing` mm centred on the abdomen (no CT image is made)."""
    return render(draw_anatomy(np.random.default_rng(int(rng.integers(2**63)))), centred(shape, spacing))[1]


def case_pair(shape: tuple[int, int, int], spacing: tuple[float, float, float], rng: np.random.Generator,
              island: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A (ground truth, prediction) pair of uint8 label maps (x, y, z): `phantom_labels` and
    `degraded` labels of them with the default strengths."""
    gt = phantom_labels(shape, spacing, rng)
    return gt, degraded(gt, spacing, rng, island=island)


def save_labels(labels: np.ndarray, spacing: tuple[float, float, float], path: Path) -> None:
    """Write a uint8 label map as NIfTI with a RAS affine of the given spacing (mm)."""
    img = nib.Nifti1Image(labels.astype(np.uint8), np.diag([*spacing, 1.0]))
    img.header.set_zooms(spacing)
    nib.save(img, str(path))


FOLDERS = ("images", "gt", "pred")  # under -o: CTs, ground truth, degraded predictions


def case_name(index: int) -> str:
    return f"synthetic_{index:03d}"


def write_case(out: Path, seed: int, index: int, geometry: Geometry | None = None,
               max_side: int | None = DEFAULT_MAX_SIDE) -> None:
    """Write case synthetic_<index> of `seed` (its phantom on `geometry`, or on a drawn scan geometry
    capped to max_side voxels per axis) to out/images, out/gt and out/pred."""
    case = case_name(index)
    seed_sequence = case_seed(seed, index)
    phantom = generate(seed_sequence, geometry=geometry, max_side=None if geometry else max_side)
    _, gt_path = save(phantom, out / "images", out / "gt", case)
    gt = nib.load(gt_path)
    pred = degraded(np.asarray(gt.dataobj), gt.header.get_zooms()[:3], np.random.default_rng(seed_sequence))
    (out / "pred").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(pred, None, gt.header), str(out / "pred" / f"{case}.nii.gz"))


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("python -m evaluation.synthetic",
                        "Write phantom CTs, their labels and degraded labels (predictions of known quality).", [
                            "flare-synthetic -o try --cases 5 && flare-score --gt try/gt --pred try/pred --out try/scores",
                            "flare-synthetic -o small --shape 96 96 40 --spacing 4 4 8"])
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="DIR",
                        help="folder to write images/, gt/ and pred/ into (required)")
    parser.add_argument("--cases", type=cli.at_least(1), default=3, help="number of cases (default %(default)s)")
    parser.add_argument("--seed", type=cli.at_least(0), default=0, help="seed of the set (default %(default)s)")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--max-side", type=cli.at_least(MIN_MAX_SIDE), default=DEFAULT_MAX_SIDE, metavar="N",
                      help="at most this many voxels per axis of a drawn scan geometry (default %(default)s)")
    grid.add_argument("--shape", type=cli.at_least(1), nargs=3, metavar=("X", "Y", "Z"),
                      help="a fixed grid of this many voxels centred on the abdomen instead (with --spacing)")
    parser.add_argument("--spacing", type=cli.finite_float, nargs=3, metavar=("SX", "SY", "SZ"),
                        help="voxel size in mm of the --shape grid")
    args = parser.parse_args(argv)
    if (args.shape is None) != (args.spacing is None):
        parser.error("--shape and --spacing go together")
    low, high = SPACING_RANGE_MM
    if args.shape is not None and not all(low <= s <= high for s in args.spacing):
        parser.error(f"--spacing must lie within {low:g}-{high:g} mm (what the scorer reads)")
    for folder in (args.out, *(args.out / sub for sub in FOLDERS)):
        cli.refuse_unwritable(parser, "-o", folder, folder=True)
    if others := other_cases(args.out, {case_name(i) for i in range(args.cases)}, FOLDERS[1:]):
        parser.error(f"-o {args.out}: {others}: choose an empty folder")
    geometry = centred(tuple(args.shape), tuple(args.spacing)) if args.shape else None
    began = time.perf_counter()
    for i in range(args.cases):
        write_case(args.out, args.seed, i, geometry, args.max_side)
    print(f"wrote {args.cases} synthetic case(s) to {args.out}/images (CT), {args.out}/gt (labels) and "
          f"{args.out}/pred (degraded labels) in {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
