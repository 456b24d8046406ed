"""FLARE-layout pairs cropped round one organ: its box plus a margin on each side.

    python -m bench.organ_crop -i DATA -o OUT [--organ 4] [--margin 20 50] [--seed 0] [--box-from DIR]

For probes and ablations that look at one organ at finer voxels than the whole scan allows: every
pair of DATA (any layout training reads) is cut to the box of the organ's voxels widened on each
side by its own margin, drawn uniformly in --margin (mm; equal bounds give a fixed margin), and
clipped to the scan. The crop keeps the file's storage order, data type and world coordinates (the
affine moves with the box), so a crop's voxels lie where they lay. --box-from takes the box from
another labelling of the same cases (a prediction, say: the crop a pipeline would make round its
own output) while the labels written stay the reference's. OUT gets images/<case>_0000.nii.gz,
labels/<case>.nii.gz and the lesion case list, if DATA has one, for the cases written. The label
maps make the cases: images without one, and cases without the organ, are left out and named; a
label map without its image, or an unreadable or mismatched pair, is named on one line and the
others go on (exit 1).
"""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from flare_common import cli
from flare_common.nifti import AFFINE_TOLERANCE_MM, image_name, nifti_files
from training.data import (
    PATHOLOGICAL_LIST,
    Case,
    DataError,
    case_name,
    check_headers,
    find_layout,
    read_case_list,
)

Box = tuple[slice, slice, slice]


def crop_box(mask: np.ndarray, spacing: tuple[float, float, float], margin_mm: tuple[float, float],
             rng: np.random.Generator) -> Box | None:
    """The box of mask's voxels (3D, any axis order; spacing in mm along the same axes) widened on
    each side by its own margin drawn uniformly in margin_mm (mm), clipped to the volume; None
    when mask is empty."""
    found = np.nonzero(mask)
    if found[0].size == 0:
        return None
    box = []
    for axis, n in enumerate(mask.shape):
        before, after = rng.uniform(*margin_mm, size=2) / spacing[axis]
        start = max(0, int(np.floor(found[axis].min() - before)))
        stop = min(n, int(np.ceil(found[axis].max() + 1 + after)))
        box.append(slice(start, stop))
    return tuple(box)


def labelled_cases(root: Path) -> tuple[list[Case], list[str]]:
    """The cases of a data root that have a label map, sorted by name (an image path that may
    not exist where the image is missing), and the names of the images without one."""
    images_dir, labels_dir = find_layout(root)
    images = {case_name(p.name, image=True): p for p in nifti_files(images_dir)}
    cases = []
    for label in nifti_files(labels_dir):
        name = case_name(label.name)
        cases.append(Case(name, images.get(name, images_dir / image_name(name)), label))
    return cases, sorted(set(images) - {c.name for c in cases})


def crop_case(case: Case, box_labels: Path, organ: int, margin_mm: tuple[float, float], out: Path,
              rng: np.random.Generator) -> bool:
    """Write the case's image and labels cropped round the organ of box_labels; False (nothing
    written) when box_labels has none of it. ValueError naming the file for a mismatched pair."""
    problems = check_headers(case)
    if problems:
        raise ValueError(problems[0])
    image, labels = nib.load(case.image), nib.load(case.label)
    source = labels if box_labels == case.label else nib.load(box_labels)
    if source.shape[:3] != labels.shape[:3] or not np.allclose(source.affine, labels.affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        raise ValueError(f"{box_labels}: not on the grid of {case.label}")
    spacing = tuple(float(z) for z in labels.header.get_zooms()[:3])
    box = crop_box(np.asarray(source.dataobj) == organ, spacing, margin_mm, rng)
    if box is None:
        return False
    nib.save(image.slicer[box], out / "images" / image_name(case.name))
    nib.save(labels.slicer[box], out / "labels" / f"{case.name}.nii.gz")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("python -m bench.organ_crop", __doc__.split("\n\n")[0], [
        "python -m bench.organ_crop -i phantoms/ -o pancreas-crops/ --margin 20 50 --seed 7",
        "python -m bench.organ_crop -i real/ -o real-crops/ --margin 35 35 --box-from real/predictions"])
    parser.add_argument("-i", "--input", type=Path, required=True, metavar="DATA",
                        help="data root (images/ + labels/, TrainingImg/ + TrainingMask/ or imagesTr/ + labelsTr/)")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUT", help="folder for the crops")
    parser.add_argument("--organ", type=int, default=4, help="label to crop round (default %(default)s: pancreas)")
    parser.add_argument("--margin", type=cli.finite_float, nargs=2, default=[20.0, 50.0], metavar=("LOW", "HIGH"),
                        help="margin per side, mm, drawn uniformly (default 20 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the margins (default %(default)s)")
    parser.add_argument("--box-from", type=Path, metavar="DIR",
                        help="take the box from <case>.nii.gz in this folder instead of the reference labels")
    args = parser.parse_args(argv)
    if not 0 <= args.margin[0] <= args.margin[1]:
        parser.error(f"--margin {args.margin[0]:g} {args.margin[1]:g}: 0 <= LOW <= HIGH")
    try:
        cases, unlabelled = labelled_cases(args.input)
        lesions = read_case_list(args.input / PATHOLOGICAL_LIST, cases) if (args.input / PATHOLOGICAL_LIST).is_file() else None
    except DataError as exc:
        print("\n".join(f"error: {p}" for p in exc.problems), file=sys.stderr)
        return 2
    for folder in ("images", "labels"):
        (args.out / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    written, without, failed = [], [], 0
    for case in tqdm(cases, desc="cropping", unit="case", file=sys.stderr):
        box_labels = args.box_from / f"{case.name}.nii.gz" if args.box_from else case.label
        try:
            for path in (case.image, box_labels):
                if not path.is_file():
                    raise ValueError(f"{path}: missing")
            (written if crop_case(case, box_labels, args.organ, tuple(args.margin), args.out, rng) else without).append(case.name)
        except (ValueError, OSError, nib.filebasedimages.ImageFileError) as exc:
            tqdm.write(f"error: {exc}", file=sys.stderr)
            failed += 1
    if lesions is not None:
        (args.out / PATHOLOGICAL_LIST).write_text("".join(f"{name}\n" for name in written if name in lesions))
    if unlabelled:
        print(f"left out, no label map: {', '.join(unlabelled)}", file=sys.stderr)
    if without:
        print(f"left out, no voxel of label {args.organ}: {', '.join(without)}", file=sys.stderr)
    print(f"{len(written)} of {len(cases)} case(s) cropped round label {args.organ} into {args.out}"
          + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
