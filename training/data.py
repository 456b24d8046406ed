"""Training data on disk: the layouts teams download, image/label pairs, and their checks.

Three layouts are read, each as an images folder and a labels folder under the data root:
FLARE21 (`TrainingImg/`, `TrainingMask/`), FLARE22 and the phantom generator (`images/`,
`labels/`) and nnU-Net (`imagesTr/`, `labelsTr/`, with its dataset.json's label numbering
checked). An image `<case>_0000.nii.gz` (or `<case>.nii.gz`) pairs with the label map
`<case>.nii.gz`, or with a label map of its own name. Every problem of every case is found
before training starts, each on one line naming the file; one problem refuses the whole run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

from evaluation.imageio import read_labels
from flare_common.errors import InputError, describe_error, first_few
from flare_common.nifti import (
    AFFINE_TOLERANCE_MM,
    CHANNEL_SUFFIX,
    MISCASED,
    NIFTI_SUFFIXES,
    image_name,
    miscased_nifti,
    nibabel_messages,
    nifti_files,
    nifti_image,
    volume_shape,
)
from inference.imageio import CT, read_ct

LAYOUTS = (("TrainingImg", "TrainingMask"), ("images", "labels"), ("imagesTr", "labelsTr"))
PATHOLOGICAL_LIST = "pathological.txt"  # the cases with lesions, in a data root (training samples them more often)


class DataError(Exception):
    """Training data that cannot be used: one line per problem, each naming its file."""

    def __init__(self, problems: list[str], resumable: bool = True):
        super().__init__("\n".join(problems))
        self.problems = problems
        self.resumable = resumable  # False: the run's resume.pt itself cannot be used


@dataclass(frozen=True)
class Case:
    """One training case: its name (the label file's name without .nii.gz) and both files."""

    name: str
    image: Path
    label: Path


def case_name(file_name: str, image: bool = False) -> str:
    """A case's name from a file name: without .nii.gz / .nii, and for an image (`image`)
    without its channel suffix _0000."""
    for suffix in NIFTI_SUFFIXES:
        if file_name.endswith(suffix):
            file_name = file_name[: -len(suffix)]
            break
    return file_name[: -len(CHANNEL_SUFFIX)] if image and file_name.endswith(CHANNEL_SUFFIX) else file_name


def find_layout(root: Path) -> tuple[Path, Path]:
    """The images and labels folders of a data root; DataError when none or several layouts match."""
    if not root.is_dir():
        raise DataError([f"{root}: not a folder"])
    found = [(root / im, root / lb) for im, lb in LAYOUTS if (root / im).is_dir() and (root / lb).is_dir()]
    if not found:
        names = ", ".join(f"{im}/ + {lb}/" for im, lb in LAYOUTS)
        raise DataError([f"{root}: no training layout found (expected one of {names})"])
    if len(found) > 1:
        raise DataError([f"{root}: several layouts ({', '.join(str(i.name) for i, _ in found)}): keep one"])
    return found[0]


def find_cases(root: Path) -> list[Case]:
    """The image/label pairs of a data root, sorted by name; DataError listing every missing
    pair and name clash, or an empty folder."""
    images_dir, labels_dir = find_layout(root)
    labels: dict[str, Path] = {}
    problems = []
    for path in nifti_files(labels_dir):
        name = case_name(path.name)
        if name in labels:
            problems.append(f"{path}: same case as {labels[name].name}")
        labels[name] = path
    images: dict[str, Path] = {}
    for path in nifti_files(images_dir):
        stripped, own = case_name(path.name, image=True), case_name(path.name)  # without _0000, else its own name
        name = own if stripped not in labels and own in labels else stripped
        if name in images:
            problems.append(f"{path}: same case as {images[name].name}")
        images[name] = path
    problems += [f"{path}: {MISCASED}" for folder in (images_dir, labels_dir) for path in miscased_nifti(folder)]
    problems += [f"{images[n]}: no label map {labels_dir / (n + '.nii.gz')}" for n in sorted(set(images) - set(labels))]
    problems += [f"{labels[n]}: no image {images_dir / image_name(n)}" for n in sorted(set(labels) - set(images))]
    if not images and not labels:
        problems.append(f"{root}: no .nii.gz or .nii files in {images_dir.name}/ and {labels_dir.name}/")
    if problems:
        raise DataError(problems)
    return [Case(name, images[name], labels[name]) for name in sorted(images)]


def file_sizes(cases: list[Case]) -> dict[str, list[int]]:
    """Each case's image and label file sizes (bytes): what tells two data sets whose cases share
    their names apart (every phantom set names its cases alike), and survives moving the folder."""
    return {case.name: [case.image.stat().st_size, case.label.stat().st_size] for case in cases}


def dataset_json_problems(root: Path, labels: dict[int, str]) -> list[str]:
    """Where a data root has nnU-Net's dataset.json, its label numbering must be the networks'
    (`labels`, e.g. 1 liver, 2 kidney, 3 spleen, 4 pancreas): another numbering would train one
    organ as another without any other sign. nnU-Net v2 writes {"liver": 1, ...}, v1 {"1": "liver",
    ...}; names compare without case and a plural's s ("kidneys")."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        return []
    try:
        listed = json.loads(path.read_text(encoding="utf-8-sig")).get("labels")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        return [f"{path}: unreadable ({describe_error(exc)})"]
    if not isinstance(listed, dict):
        return []  # no label table to compare
    pairs = ([(key, name) for key, name in listed.items()] if all(_whole(key) is not None for key in listed)
             else [(value, name) for name, value in listed.items()])  # v1: value -> name; v2: name -> value
    if any(isinstance(value, list) for value, _ in pairs):
        return [f"{path}: labels given as regions (lists of values): the recipe trains one value per organ"]
    numbering = {_whole(value): str(name) for value, name in pairs}
    if None in numbering or len(numbering) < len(pairs):
        return [f"{path}: its \"labels\" are not one whole number per name: not understood"]

    def same(a: str, b: str) -> bool:
        return a.strip().lower().removesuffix("s") == b.strip().lower().removesuffix("s")

    wanted = {0: "background", **labels}
    wrong = [f"{value} {name}" for value, name in sorted(numbering.items())
             if value not in wanted or (value != 0 and not same(name, wanted[value]))]
    if not wrong:
        return []
    return [f"{path}: labels {', '.join(wrong)} are not the networks' numbering "
            f"({', '.join(f'{k} {v}' for k, v in labels.items())}): relabel the maps to it"]


def _whole(value: object) -> int | None:
    """A label value written as a whole number (1, 1.0 or "1"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """A file's shape and affine from its header: nibabel's reading of the header alone, or where
    that fails on a file whose name misstates its compression (gzip data named .nii, or the
    reverse), the project's reading (flare_common.nifti.nifti_image, which inflates the file)."""
    try:
        with nibabel_messages():  # nibabel's own lines (a pixdim of 0, say): reading the pair names the file
            image = nib.load(path)
            return image.shape, image.affine
    except (nib.filebasedimages.ImageFileError, OSError):
        with nifti_image(path) as (image, _):
            return image.shape, image.affine


def check_headers(case: Case) -> list[str]:
    """Problems found from the two headers alone: unreadable files, not 3D, shapes or affines
    that differ (the label map must lie on the image's grid)."""
    geometry = {}
    for path in (case.image, case.label):
        try:
            geometry[path] = _geometry(path)
        except Exception as exc:  # named alone: the other file may be fine
            return [f"{path}: {'an empty file' if _empty(path) else f'unreadable ({describe_error(exc)})'}"]
    image, label = geometry[case.image], geometry[case.label]
    problems, shapes = [], []
    for path, (shape, _) in ((case.image, image), (case.label, label)):
        try:
            shapes.append(volume_shape(shape))
        except InputError as exc:  # named alone: the other file may be fine
            return [f"{path}: {exc}"]
    if shapes[0] != shapes[1]:
        problems.append(f"{case.label}: shape {shapes[1]} differs from its image's {shapes[0]}")
    elif not np.allclose(image[1], label[1], rtol=0, atol=AFFINE_TOLERANCE_MM):
        worst = float(np.abs(image[1] - label[1]).max())
        problems.append(f"{case.label}: affine differs from its image's by up to {worst:.3g} mm")
    return problems


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def read_case(case: Case, labels: dict[int, str]) -> tuple[CT, np.ndarray]:
    """The image in canonical orientation and its label map (uint8, same orientation and grid);
    InputError naming the file for an unusable pair or labels outside `labels`."""
    problems = check_headers(case)
    if problems:
        raise InputError(problems[0])
    try:
        ct = read_ct(case.image)
    except InputError as exc:
        raise InputError(f"{case.image}: {exc}") from None
    try:
        volume = read_labels(case.label)
    except InputError as exc:
        raise InputError(f"{case.label}: {exc}") from None
    unknown = sorted(set(np.unique(volume.data).tolist()) - {0, *labels})
    if unknown:
        raise InputError(f"{case.label}: unknown label value(s) {unknown[:10]} (expected 0 and "
                         f"{', '.join(f'{k} {v}' for k, v in labels.items())})")
    canonical = apply_orientation(volume.data.astype(np.uint8, copy=False), io_orientation(volume.affine))
    return ct, np.ascontiguousarray(canonical)


def read_case_list(path: Path, cases: list[Case]) -> set[str]:
    """Names listed in a text file, one per line ('#' starts a comment; a name may carry its
    .nii.gz suffix and folders, or be its image's name); DataError for names that are not
    training cases."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is no part of a name
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError([f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})"]) from None
    known = {c.name for c in cases}
    names = set()
    for line in lines:
        name = case_name(Path(line.split("#")[0].strip()).name)  # a path's file name
        if name:  # a case's name, or its image's
            names.add(name if name in known else case_name(name, image=True))
    unknown = sorted(names - known)
    if unknown:  # ascii(): a name's invisible characters shown
        raise DataError([f"{path}: not training cases: {first_few(map(ascii, unknown), 10)}"])
    return names


def split(cases: list[Case], folds: int, fold: int | None, seed: int) -> tuple[list[Case], list[Case]]:
    """(training, validation) cases of a k-fold split: the cases, sorted by name, shuffled with
    the seed and dealt round-robin into `folds` folds; `fold` is held out (None: none is)."""
    if fold is None:
        return list(cases), []
    order = np.random.default_rng(seed).permutation(len(cases))
    held_out = {int(i) for position, i in enumerate(order) if position % folds == fold}
    return ([c for i, c in enumerate(cases) if i not in held_out], [c for i, c in enumerate(cases) if i in held_out])
