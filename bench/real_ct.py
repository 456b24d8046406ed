"""Real CT the weights never saw, fetched from a package registry, and how a checkpoint does on it.

    python -m bench.real_ct [--weights W] [--work DIR] [--sdist FILE] [--json FILE]

The source distribution of TotalSegmentator 2.18.0 on PyPI (Apache License 2.0) carries real CTs
among its test fixtures (tests/reference_files), with label maps made by TotalSegmentator's own
models (not drawn by hand; its "total" task, mapped to FLARE21's 1 liver, 2 kidneys, 3 spleen,
4 pancreas):
- slab: example_ct_sm, 122 x 101 x 30 voxels at 3 mm, non-contrast (the project's phase fixture
  says "native"); the CT of ../shared/data/real-ct; labels example_seg (the full-resolution model);
- full: example_ct, the same patient over 336 mm (122 x 101 x 112), labels
  example_seg_fast_force_split (the 3 mm model; within the slab it agrees with example_seg at DSC
  0.98 / 0.97 / 0.98 / 0.81);
- dicom: example_ct_dicom, 20 DICOM slices of another patient (512 x 512 x 20 at 0.98 x 0.98 x 2 mm,
  contrast-enhanced, arms beside the body), labels example_seg_dicom (the 3 mm model): liver,
  spleen and a sliver of pancreas, no kidney (any kidney label scores DSC 0, as FLARE's rules say);
- chest: aorta_report/example_ct, a chest CT of a third patient reaching the upper abdomen
  (233 x 167 x 191 at 1.5 mm) without organ labels.
The wheel of platipy 0.5.0.dev1 on PyPI (Apache License 2.0 for the package; the scan's own source
is not stated) carries one more:
- platipy: backend/sample/testcase.nii.gz, a fourth patient from the shoulders to the middle of
  the kidneys (512 x 512 x 130 at 0.98 x 0.98 x 3 mm), without contrast, its stomach full of
  food as dense as the spleen; no organ labels.
Unlabelled cases are reported as the organ volumes more than 30 mm above the liver's top (where
none belongs) and each organ's connected components of 1 ml or more (one liver, one spleen, one
pancreas and at most two kidneys belong in a scan). For the labelled cases a second table says
where each organ's errors lie, from the reference's whole label map (TotalSegmentator labels 117
structures, named in its totalsegmentator/map_to_binary.py): the organ's false labels by the
structure they cover (the inferior vena cava, the duodenum, another organ), its missed voxels by
what they were labelled instead.
Fetches both packages with pip into WORK/download unless they are there (or --sdist names the
first), writes the cases as FLARE-layout pairs under WORK, runs `sh predict.sh` on them with the
weights (one process) and scores the labelled ones with the project's scorer (FLARE21 rules).
Prints a Markdown table; --json writes the rows. A package that cannot be fetched leaves its
cases out, with a note. Reading the DICOM slices needs pydicom and a JPEG 2000 decoder
(requirements-dev.txt: pydicom, pylibjpeg, pylibjpeg-openjpeg); without them that case is left out,
with a note.
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

from bench.arguments import add_weights
from bench.record import markdown_table
from evaluation.rules import get_rules
from evaluation.score import score_files
from flare_common import cli
from flare_common.labels import label_names
from flare_common.nifti import image_name

ROOT = Path(__file__).resolve().parents[1]
RULES = "flare21"
FLARE21 = {name: label for label, name in label_names(RULES).items()}
# TotalSegmentator's "total" task (v2) -> FLARE21: liver, kidneys (right, left), spleen, pancreas.
TOTAL_TO_FLARE21 = {5: FLARE21["liver"], 2: FLARE21["kidney"], 3: FLARE21["kidney"], 1: FLARE21["spleen"],
                    7: FLARE21["pancreas"]}
ABOVE_LIVER_MM = 30.0
COMPONENT_MIN_ML = 1.0


@dataclass(frozen=True)
class Source:
    """A package on PyPI whose files hold real CTs: fetched as a source distribution or a wheel;
    folder: the folder of the archive its cases' files are named from."""

    package: str
    version: str
    sdist: bool
    folder: str
    files: tuple[str, ...] = ()  # single files of the archive extracted besides the folder

    @property
    def archive(self) -> str:
        name = f"{self.package}-{self.version}"
        return f"{name}.tar.gz" if self.sdist else f"{name}-py3-none-any.whl"


STRUCTURE_NAMES = "totalsegmentator-2.18.0/totalsegmentator/map_to_binary.py"  # class_map["total"]: its names
TOTALSEGMENTATOR = Source("totalsegmentator", "2.18.0", True, "totalsegmentator-2.18.0/tests/reference_files",
                          (STRUCTURE_NAMES,))
PLATIPY = Source("platipy", "0.5.0.dev1", False, "platipy/backend/sample")


@dataclass(frozen=True)
class Case:
    """One real scan: its name, the file of its CT in its source (a NIfTI file or a folder of DICOM
    slices) and of its labels (None: unlabelled, checked for organs above the liver and for
    components instead)."""

    name: str
    image: str
    labels: str | None
    source: Source = TOTALSEGMENTATOR


CASES = (
    Case("slab", "example_ct_sm.nii.gz", "example_seg.nii.gz"),
    Case("full", "example_ct.nii.gz", "example_seg_fast_force_split.nii.gz"),
    Case("dicom", "example_ct_dicom", "example_seg_dicom.nii.gz"),
    Case("chest", "aorta_report/example_ct.nii.gz", None),
    Case("platipy", "testcase.nii.gz", None, PLATIPY),
)


def fetch(source: Source, work: Path) -> Path:
    """The source's archive, downloaded with pip into work/download unless already there."""
    folder = work / "download"
    archive = folder / source.archive
    if not archive.is_file():
        kind = ["--no-binary", ":all:"] if source.sdist else ["--only-binary", ":all:"]
        subprocess.run([sys.executable, "-m", "pip", "download", f"{source.package}=={source.version}", "--no-deps",
                        *kind, "--quiet", "-d", str(folder)], check=True)
    return archive


def extract(archive: Path, source: Source, work: Path) -> Path:
    """The source's folder (and its single files), extracted from its archive under work/fixtures."""
    target = work / "fixtures"
    prefix = source.folder + "/"

    def wanted(name: str) -> bool:
        return name.startswith(prefix) or name in source.files

    if source.sdist:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if wanted(m.name)]
            tar.extractall(target, members=members, filter="data")
    else:
        with zipfile.ZipFile(archive) as wheel:
            members = [name for name in wheel.namelist() if wanted(name)]
            wheel.extractall(target, members=members)
    if not members:
        raise SystemExit(f"error: {archive}: no {source.folder} in it")
    return target / source.folder


def to_flare21(total: np.ndarray) -> np.ndarray:
    """TotalSegmentator "total" labels -> FLARE21 labels (uint8; every other structure 0)."""
    lut = np.zeros(max(256, int(total.max()) + 1), np.uint8)
    for source, target in TOTAL_TO_FLARE21.items():
        lut[source] = target
    return lut[total.astype(np.int64)]


def structure_names(path: Path) -> dict[int, str]:
    """TotalSegmentator's "total" structures (label -> name), read without importing the package
    from the `class_map = {...}` dictionary literal of its map_to_binary.py."""
    for node in ast.parse(path.read_text()).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "class_map" for t in node.targets)):
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and key.value == "total":
                    return {int(k): str(v) for k, v in ast.literal_eval(value).items()}
    raise SystemExit(f"error: {path}: no class_map['total'] in it")


def ml_by_value(values: np.ndarray, names: dict[int, str], voxel_ml: float) -> dict[str, float]:
    """The volume (ml) of each integer value among `values`, named by `names` (the value itself
    where unnamed), largest first; volumes under 0.1 ml left out."""
    counts = np.bincount(values.astype(np.int64, copy=False).ravel())
    volumes = sorted(((round(float(n) * voxel_ml, 1), names.get(v, str(v))) for v, n in enumerate(counts) if n),
                     key=lambda pair: -pair[0])
    return {name: ml for ml, name in volumes if ml >= 0.1}


def errors_ml(structures: np.ndarray, labels: np.ndarray, voxel_ml: float, names: dict[int, str]) -> dict[str, dict]:
    """Where each organ's errors lie (ml). structures: the reference's TotalSegmentator "total"
    label map; labels: FLARE21 labels on the same grid; names: the structures' names. Per organ,
    "false": its labels outside the reference organ, by the reference structure they cover
    ("unlabelled" where the reference has none); "missed": the reference organ's voxels labelled
    otherwise, by what the labels say there ("background" or another organ)."""
    reference = to_flare21(structures)
    covered = {0: "unlabelled", **names}
    labelled = {0: "background", **{label: name for name, label in FLARE21.items()}}
    errors = {}
    for name, label in FLARE21.items():
        false = (labels == label) & (reference != label)
        missed = (reference == label) & (labels != label)
        errors[name] = {"false": ml_by_value(structures[false], covered, voxel_ml),
                        "missed": ml_by_value(labels[missed], labelled, voxel_ml)}
    return errors


def read_dicom_series(folder: Path) -> nib.Nifti1Image:
    """One DICOM series (a folder of single-slice files) as a NIfTI image in HU (float32): voxel
    (i, j, k) = column i, row j of the k-th slice along the slices' normal; the affine maps to RAS
    mm (DICOM's patient frame is LPS). Raises ValueError for unevenly spaced or tilted slices."""
    import pydicom

    slices = [pydicom.dcmread(path) for path in sorted(folder.iterdir()) if path.is_file()]
    orientation = np.asarray(slices[0].ImageOrientationPatient, float)
    along_row, along_column = orientation[:3], orientation[3:]
    normal = np.cross(along_row, along_column)
    slices.sort(key=lambda s: float(normal @ np.asarray(s.ImagePositionPatient, float)))
    positions = np.array([s.ImagePositionPatient for s in slices], float)
    steps = np.diff(positions, axis=0)
    if len(slices) < 2 or not np.allclose(steps, steps[0], atol=1e-3) or not np.allclose(
            np.cross(steps[0], normal), 0.0, atol=1e-3):
        raise ValueError(f"{folder}: slices not evenly spaced along their normal")
    row_spacing, column_spacing = (float(v) for v in slices[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = along_row * column_spacing
    lps[:3, 1] = along_column * row_spacing
    lps[:3, 2] = steps[0]
    lps[:3, 3] = positions[0]
    data = np.stack([s.pixel_array.T.astype(np.float32) * float(getattr(s, "RescaleSlope", 1.0))
                     + float(getattr(s, "RescaleIntercept", 0.0)) for s in slices], axis=-1)
    return nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)


def on_grid(labels: nib.Nifti1Image, image: nib.Nifti1Image) -> np.ndarray | None:
    """The label map's voxels stored in the image's axis order (the same grid, its axes perhaps
    flipped or swapped: DICOM and NIfTI writers order rows differently); None when the grids differ."""
    transform = ornt_transform(io_orientation(labels.affine), io_orientation(image.affine))
    data = apply_orientation(np.asarray(labels.dataobj), transform)
    affine = labels.affine @ inv_ornt_aff(transform, labels.shape)
    return data if data.shape == image.shape and np.allclose(affine, image.affine, atol=1e-3) else None


def prepare(folders: dict[Source, Path], work: Path) -> tuple[list[str], list[str]]:
    """Write work/images/<case>_0000.nii.gz and, for labelled cases, work/labels/<case>.nii.gz (FLARE21
    labels) and work/structures/<case>.nii.gz (the reference's whole label map), from the sources'
    extracted folders; the names of the cases written and notes on those left out."""
    images, labels, structures = work / "images", work / "labels", work / "structures"
    for folder in (images, labels, structures):
        folder.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    for case in CASES:
        if case.source not in folders:
            notes.append(f"{case.name}: left out: {case.source.package} {case.source.version} not fetched")
            continue
        fixtures = folders[case.source]
        source = fixtures / case.image
        if source.is_dir():
            try:
                image = read_dicom_series(source)
            except ImportError as exc:
                notes.append(f"{case.name}: left out: reading DICOM needs pydicom, pylibjpeg and "
                             f"pylibjpeg-openjpeg ({exc})")
                continue
            image = nib.Nifti1Image(np.rint(image.get_fdata()).astype(np.int16), image.affine)
        else:
            image = nib.load(source)
        nib.save(image, images / image_name(case.name))
        if case.labels is not None:
            reference = on_grid(nib.load(fixtures / case.labels), image)
            if reference is None:
                raise SystemExit(f"error: {case.labels}: its grid is not {case.image}'s")
            nib.save(nib.Nifti1Image(to_flare21(reference), image.affine), labels / f"{case.name}.nii.gz")
            nib.save(nib.Nifti1Image(reference.astype(np.uint8), image.affine), structures / f"{case.name}.nii.gz")
        written.append(case.name)
    return written, notes


def ml_per_voxel(image: nib.spatialimages.SpatialImage) -> float:
    """The volume of one of an image's voxels in ml."""
    return float(np.prod(image.header.get_zooms()[:3])) / 1000.0


def above_liver_ml(path: Path) -> dict[str, float]:
    """Organ volumes (ml) more than ABOVE_LIVER_MM above the top of the liver in a label file."""
    image = nib.as_closest_canonical(nib.load(path))
    labels = np.asarray(image.dataobj)
    liver_z = np.nonzero((labels == FLARE21["liver"]).any(axis=(0, 1)))[0]
    top = liver_z.max() + int(ABOVE_LIVER_MM / image.header.get_zooms()[2]) + 1 if len(liver_z) else 0
    ml = ml_per_voxel(image)
    return {name: round(float((labels[..., top:] == label).sum()) * ml, 1) for name, label in FLARE21.items()}


def components_ml(path: Path) -> dict[str, list[float]]:
    """Each organ's connected components (26-connected) of COMPONENT_MIN_ML or more in a label file,
    their volumes in ml, largest first."""
    image = nib.load(path)
    labels = np.asarray(image.dataobj)
    ml = ml_per_voxel(image)
    volumes = {}
    for name, label in FLARE21.items():
        components, count = ndimage.label(labels == label, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(components.ravel(), minlength=count + 1)[1:] * ml
        volumes[name] = [round(float(v), 1) for v in sorted(sizes[sizes >= COMPONENT_MIN_ML], reverse=True)]
    return volumes


def evaluate(work: Path, weights: Path, cases: list[str], names: dict[int, str] | None = None) -> list[dict]:
    """predict.sh on work/images with the weights, then one row per case: DSC and NSD per organ
    and, given the structures' names, where the errors lie (errors_ml) for labelled cases; the organ
    volumes above the liver and each organ's components for unlabelled ones."""
    pred = work / "pred"
    subprocess.run(["sh", str(ROOT / "predict.sh"), str(work / "images"), str(pred), "--weights", str(weights)],
                   check=True, stdout=subprocess.DEVNULL)
    rules = get_rules(RULES)
    rows = []
    for name in cases:
        gt = work / "labels" / f"{name}.nii.gz"
        if not gt.exists():
            rows.append({"case": name, "ml_above_liver": above_liver_ml(pred / f"{name}.nii.gz"),
                         "components_ml": components_ml(pred / f"{name}.nii.gz")})
            continue
        result = score_files(gt, pred / f"{name}.nii.gz", RULES)
        dsc = {o.name: round(result.values[rules.dsc_column(o)], 4) for o in rules.organs}
        nsd = {o.name: round(result.values[rules.nsd_column(o)], 4) for o in rules.organs}
        row = {"case": name, "dsc": dsc, "nsd": nsd, "mean_dsc": round(float(np.mean(list(dsc.values()))), 4),
               "problems": result.problems}
        structures = work / "structures" / f"{name}.nii.gz"
        if names is not None and structures.exists():
            image = nib.load(pred / f"{name}.nii.gz")
            row["errors_ml"] = errors_ml(np.asarray(nib.load(structures).dataobj), np.asarray(image.dataobj),
                                         ml_per_voxel(image), names)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table: DSC and NSD per organ, or the organ volumes above the liver and
    the components."""
    organs = [o.name for o in get_rules(RULES).organs]
    cells = []
    for row in rows:
        if "dsc" in row:
            cells.append([row["case"], " / ".join(f"{row['dsc'][o]:.3f}" for o in organs) + f" ({row['mean_dsc']:.3f})",
                          " / ".join(f"{row['nsd'][o]:.3f}" for o in organs)])
        else:
            above = ", ".join(f"{o} {ml} ml" for o, ml in row["ml_above_liver"].items() if ml) or "none"
            parts = "; ".join(f"{o} " + (" + ".join(f"{v:g}" for v in row["components_ml"][o]) or "0")
                              for o in organs)
            cells.append([row["case"], f"organ labels more than {ABOVE_LIVER_MM:.0f} mm above the liver: {above}; "
                          f"components (ml): {parts}", ""])
    return markdown_table(["case", "DSC " + " / ".join(organs) + " (mean)", "NSD (1 mm)"], cells)


def errors_markdown(rows: list[dict], top: int = 3) -> str:
    """The labelled rows' errors_ml as a Markdown table: per case and organ, its false labels by the
    reference structure they cover and its missed voxels by what they were labelled, `top` of each
    (the rest summed)."""
    def cell(volumes: dict[str, float]) -> str:
        items = list(volumes.items())
        parts = [f"{name} {ml:g}" for name, ml in items[:top]]
        if len(items) > top:
            parts.append(f"others {sum(ml for _, ml in items[top:]):.1f}")
        return ", ".join(parts) or "none"

    cells = [[row["case"], organ, cell(errors["false"]), cell(errors["missed"])]
             for row in rows if "errors_ml" in row for organ, errors in row["errors_ml"].items()]
    return markdown_table(["case", "organ", "labelled where the reference has another structure (ml)",
                           "reference missed, labelled instead (ml)"], cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_ct", description=__doc__.split("\n\n")[0])
    add_weights(parser)
    parser.add_argument("--work", type=Path, help="folder for the download, the cases and the predictions "
                        "(default: a temporary one, removed afterwards)")
    parser.add_argument("--sdist", type=Path, help=f"the {TOTALSEGMENTATOR.archive} already downloaded")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        folders, notes = {}, []
        for source in (TOTALSEGMENTATOR, PLATIPY):
            try:
                archive = args.sdist if args.sdist and source is TOTALSEGMENTATOR else fetch(source, work)
            except subprocess.CalledProcessError as exc:
                notes.append(f"{source.package} {source.version}: not fetched ({exc})")
                continue
            folders[source] = extract(archive, source, work)
        cases, left_out = prepare(folders, work)
        notes += left_out
        names = structure_names(work / "fixtures" / STRUCTURE_NAMES) if TOTALSEGMENTATOR in folders else None
        rows = evaluate(work, args.weights.resolve(), cases, names)
    print(markdown(rows))
    if any("errors_ml" in row for row in rows):
        print("\nWhere the errors lie: the reference's TotalSegmentator structures under each organ's false labels, "
              "and what its missed voxels were labelled\n")
        print(errors_markdown(rows))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
